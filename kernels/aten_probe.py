"""The code of PyTorch's own kernels, read from the counters: warp instructions per element.

Eager PyTorch attention runs ATen's softmax and its backward, and launchers and backward passes run ATen's elementwise kernels
(fills, copies and casts, a transpose made contiguous, K and V repeated for each query head, group sums, random
numbers drawn for a bias or mask); their
compiled code ships inside libtorch, where iosim cannot read it. Under Nsight Compute this probe runs
``torch.softmax(x, dim=-1)`` on fp16 ``x`` of ``ROWS_ELEMS`` elements for each row length in ``LENGTHS``
and its backward (``torch._softmax_backward_data``, what autograd runs)
(none of them a length of the committed data sets), and each operation of ``ELEMENTWISE`` on as many
elements, and records each launch's kernel name, executed warp instructions per pipe, duration and DRAM
bytes, so that iosim prices those kernels from what they execute, as it prices a Triton kernel from its SASS.

    python -m iosim.kernels.aten_probe --out DIR     # runs ncu on itself; writes DIR/aten_probe.json
    python -m iosim.kernels.aten_probe --table DIR/aten_probe.json [MORE.json ...] --out iosim/costs/mixes/aten-sm_90.json
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from iosim.costs.code import GENERATED  # kinds that read nothing: their elements are made, not copied
from iosim.kernels.device import HarnessError, cuda_torch, one_line
from iosim.kernels.harness import provenance
from iosim.kernels.ncu import kernel_counters, parse_ncu_raw_csv
from iosim.kernels.profiler import metrics_for, ncu_version, profiled_launch, require_ncu, run_probe

LENGTHS = (768, 1536, 3072, 6144, 12288)  # row lengths N (the data sets use 512-16384 in powers of two)
ROWS_ELEMS = 2**27  # elements per launch: 256 MiB of fp16, far beyond the L2
TAG = "softmax-{}"  # NVTX range per row length
BACKWARD_TAG = "softmax_bwd-{}"  # NVTX range per row length: the softmax's backward (dS' from dP and P)
ELEMENTWISE_TAG = "elementwise-{}"  # NVTX range per elementwise operation
# label -> (what iosim.schedule calls the pass, input dtype, output dtype, the operation on its input's shape):
# every output holds ROWS_ELEMS elements (a sum: its inputs do). Shapes (batch, N, heads, d) of 2^27 elements,
# a transposed one as launchers that pack tokens [B, N, H, D] into [B, H, N, D] copy it, and K of 4 heads
# repeated 4 times (repeat_kv: a broadcast view reshaped, which copies it), and sums over groups of 1 to 16 heads
# (the group sums of dK and dV; a launcher sums over a group of one too).
ELEMENTWISE = {
    "fill_fp32": ("fill", "float32", "float32", ((ROWS_ELEMS,), lambda t, x: t.zeros_like(x))),
    "fill_fp16": ("fill", "float16", "float16", ((ROWS_ELEMS,), lambda t, x: t.zeros_like(x))),
    "copy_fp16": ("copy", "float16", "float16", ((ROWS_ELEMS,), lambda t, x: x.clone())),
    "cast_fp32_fp16": ("copy", "float32", "float16", ((ROWS_ELEMS,), lambda t, x: x.to(t.float16))),
    "cast_fp16_fp32": ("copy", "float16", "float32", ((ROWS_ELEMS,), lambda t, x: x.to(t.float32))),
    "scale_fp16": ("other", "float16", "float16", ((ROWS_ELEMS,), lambda t, x: x * 0.125)),
    "transpose_fp16_d128": ("strided", "float16", "float16",
                            ((8, 8192, 16, 128), lambda t, x: x.transpose(1, 2).contiguous())),
    "transpose_fp16_d64": ("strided", "float16", "float16",
                           ((16, 8192, 16, 64), lambda t, x: x.transpose(1, 2).contiguous())),
    "repeat_fp16_g4_d128": ("strided", "float16", "float16",
                            ((8, 4, 8192, 128), lambda t, x: x[:, :, None].expand(8, 4, 4, 8192, 128).reshape(8, 16, 8192, 128))),
    **{f"sum_{dt}_g{g}_d128": ("sum", dtype, dtype, ((8 * 16 // g, g, 8192, 128), lambda t, x: x.sum(1)))
       for dt, dtype in (("fp32", "float32"), ("fp16", "float16")) for g in (1, 2, 4, 8, 16)},
    # random numbers a launcher draws (a bias, a mask, dropout): Philox and, for normal ones, Box-Muller per element
    "normal_fp16": ("normal", "float16", "float16", ((ROWS_ELEMS,), lambda t, x: t.randn_like(x))),
    "normal_fp32": ("normal", "float32", "float32", ((ROWS_ELEMS,), lambda t, x: t.randn_like(x))),
    "uniform_fp16": ("uniform", "float16", "float16", ((ROWS_ELEMS,), lambda t, x: t.rand_like(x))),
}
FIELDS = ("name", "inst_executed", "inst_pipes", "duration_s", "dram_read_bytes", "dram_write_bytes", "registers",
          "block", "grid", "xbar_read_bytes", "xbar_write_bytes", "l2_lookup_read_sectors", "l2_lookup_write_sectors")


def child() -> int:
    """Runs under ncu: per row length one warm-up launch outside the profiled range, then one profiled and tagged."""
    torch = cuda_torch()
    gen = torch.Generator(device="cuda").manual_seed(0)
    for n in LENGTHS:
        x = torch.randn(ROWS_ELEMS // n, n, device="cuda", dtype=torch.float16, generator=gen)
        profiled_launch(torch, TAG.format(n), lambda x=x: torch.softmax(x, dim=-1))
        y, g = torch.softmax(x, dim=-1), torch.randn_like(x)  # autograd's softmax backward: dS' from dP and P
        profiled_launch(torch, BACKWARD_TAG.format(n),
                        lambda y=y, g=g: torch._softmax_backward_data(g, y, -1, torch.float16))
        del y, g
    for label, (_, src, _, (shape, op)) in ELEMENTWISE.items():
        x = torch.randn(shape, device="cuda", dtype=getattr(torch, src), generator=gen)
        profiled_launch(torch, ELEMENTWISE_TAG.format(label), lambda x=x, op=op: op(torch, x))
        del x
    return 0


def results(rows: list[dict], tag: str = TAG) -> dict:
    """``{N: {field: value, "elements": ..., "inst_per_element": warp instructions per element}}`` of the
    softmax (``tag``: :data:`BACKWARD_TAG` for its backward)."""
    out: dict = {}
    for row in rows:
        n = next((n for n in LENGTHS if tag.format(n) in row["nvtx"].split(":")), None)
        if n is None:
            continue
        k = kernel_counters(row)
        entry = {f: getattr(k, f) for f in FIELDS}
        elems = (ROWS_ELEMS // n) * n
        entry.update(elements=elems, inst_per_element=k.inst_executed / elems if k.inst_executed else None)
        out[n] = entry
    return out


def elementwise_results(rows: list[dict]) -> dict:
    """``{label: {field: value, "kind", "dtypes", "in_elements", "out_elements", "inst_per_element"}}`` of the
    elementwise operations (per element written; a sum per element read)."""
    import math

    out: dict = {}
    for row in rows:
        label = next((x for x in ELEMENTWISE if ELEMENTWISE_TAG.format(x) in row["nvtx"].split(":")), None)
        if label is None:
            continue
        kind, src, dst, (shape, _) = ELEMENTWISE[label]
        k = kernel_counters(row)
        entry = {f: getattr(k, f) for f in FIELDS}
        n_in = math.prod(shape)
        n_out = n_in // shape[1] if kind == "sum" else ROWS_ELEMS  # a sum over its second dimension
        per = n_in if kind == "sum" else n_out
        entry.update(kind=kind, dtypes=[src, dst], in_elements=n_in if kind not in GENERATED else 0, out_elements=n_out,
                     inst_per_element=k.inst_executed / per if k.inst_executed else None)
        out[label] = entry
    return out


def probe(out_dir: Path, timeout_s: float = 300) -> dict:
    """Run the probe under ncu, write ``out_dir/aten_probe.json`` (and ncu's log and CSV), return it."""
    ncu = require_ncu("ATen probe")
    metrics, missing = metrics_for(ncu)
    csv = run_probe("iosim.kernels.aten_probe", "aten_probe", out_dir, metrics, "ATen probe", timeout_s)
    data = {"provenance": asdict(provenance(ncu_version(ncu), True, list(missing))), "lengths": list(LENGTHS),
            "rows_elements": ROWS_ELEMS}
    rows = parse_ncu_raw_csv(csv)
    data.update(results=results(rows), backward=results(rows, BACKWARD_TAG), elementwise=elementwise_results(rows))
    (out_dir / "aten_probe.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


def code_table(files: list[tuple[dict, str]]) -> dict:
    """The committed form of probe results (what :func:`iosim.costs.code.aten_softmax_code` and
    :func:`iosim.costs.code.aten_code` read), from ``(probe data, its path)`` pairs: per probed softmax row
    length the kernel ATen ran and its warp instructions per element, in all and per pipe; per elementwise
    operation the same per element written (a sum's ``group``: elements read per element written; a strided
    copy that reads fewer elements than it writes is ``broadcast``). Each section comes from the first file
    that has it."""
    softmax = next(((d, src) for d, src in files if d.get("results")), None)
    elementwise = next(((d, src) for d, src in files if d.get("elementwise")), None)
    # operations a later file probed and the first did not (random numbers): each from the first file that has it
    extra = [(d, src, [x for x in d["elementwise"] if x not in elementwise[0]["elementwise"]])
             for d, src in files if d.get("elementwise") and elementwise is not None and d is not elementwise[0]]
    first = (softmax or elementwise or files[0])[0]["provenance"]
    major, minor = _capability(first.get("gpu_name", ""))
    table = {"schema": "iosim-aten-code", "arch": f"sm_{major}{minor}", "torch": first.get("torch"), "source": ""}
    sources = []
    # the softmax and its backward, per row length: each from the first file that probed it
    for key, section, what in (("results", "softmax_forward", "torch.softmax(x, dim=-1)"),
                               ("backward", "softmax_backward", "torch._softmax_backward_data")):
        found = next(((d, src) for d, src in files if d.get(key)), None)
        if found is not None:
            data, source = found
            prov = data["provenance"]
            table[section] = _per_element(data[key])
            sources.append(f"{source} (python -m iosim.kernels.aten_probe, ncu {prov.get('ncu')}, "
                           f"{prov.get('gpu_name')}, {prov.get('date')}): {what} on fp16 rows")
    if elementwise is not None:
        data, source = elementwise
        prov = data["provenance"]
        ops, rows, added = {}, dict(data["elementwise"]), []
        for later, later_source, labels in extra:
            labels = [x for x in labels if x not in rows]
            rows.update({x: later["elementwise"][x] for x in labels})
            if labels:
                p = later["provenance"]
                added.append(f"{later_source} (python -m iosim.kernels.aten_probe, ncu {p.get('ncu')}, "
                             f"{p.get('gpu_name')}, {p.get('date')}): {', '.join(labels)}, 2^27 elements each")
        for label, r in rows.items():
            e = r["out_elements"]
            # a copy that reads fewer elements than it writes (a broadcast view) is a kind of its own
            kind = "broadcast" if r["kind"] == "strided" and 0 < r["in_elements"] < e else r["kind"]
            ops[label] = {"kernel": r["name"], "kind": kind, "dtypes": r["dtypes"],
                          "group": r["in_elements"] / e if r["kind"] == "sum" else 1,
                          "inst_per_element": r["inst_executed"] / e,
                          "pipes_per_element": {p: v / e for p, v in sorted(r["inst_pipes"].items())
                                                if p != "tensor_op_gmma"}}
        table["elementwise"] = ops
        sources.append(f"{source} (python -m iosim.kernels.aten_probe, ncu {prov.get('ncu')}, {prov.get('gpu_name')}, "
                       f"{prov.get('date')}): fills, copies, casts, a transpose and a repeat made contiguous, group "
                       f"sums, 2^27 elements each")
        sources += added
    stores = next(((d, src) for d, src in files
                   if any(r.get("xbar_write_bytes") is not None for r in (d.get("elementwise") or {}).values())), None)
    if stores is not None:  # what the stores moved over the crossbar per byte of output, where counted
        data, source = stores
        table["elementwise_stores"] = {
            label: {"kind": r["kind"], "dtypes": r["dtypes"], "group": r["in_elements"] / r["out_elements"]
                    if r["kind"] == "sum" else 1,
                    "store_bytes": r["xbar_write_bytes"] / (r["out_elements"] * _BYTES[r["dtypes"][1]])}
            for label, r in data["elementwise"].items()}
        sources.append(f"{source}: the elementwise operations' crossbar writes per byte written")
    table["source"] = "; ".join(sources)
    return table


_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def _per_element(results: dict) -> dict:
    """Per probed row length: the kernel ATen ran and its warp instructions per element, in all and per pipe."""
    rows = {}
    for n, r in sorted(results.items(), key=lambda kv: int(kv[0])):
        e = r["elements"]
        rows[str(n)] = {"kernel": r["name"], "inst_per_element": r["inst_executed"] / e,
                        "pipes_per_element": {p: v / e for p, v in sorted(r["inst_pipes"].items())
                                              if p != "tensor_op_gmma"}}
    return rows


def _capability(gpu_name: str) -> tuple[int, int]:
    """Compute capability of the GPUs this probe has run on, by name."""
    if any(g in gpu_name for g in ("H100", "H200", "GH200")):
        return 9, 0
    raise ValueError(f"gpu_name: no known compute capability for {gpu_name!r} (known: H100, H200)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iosim.kernels.aten_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for aten_probe.json, ncu's log and CSV (with --table: the table file)")
    parser.add_argument("--table", type=Path, nargs="+",
                        help="aten_probe.json files to turn into iosim's committed code table (each section from the first that has it)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the process ncu profiles
    args = parser.parse_args(argv)
    if args.child:
        return child()
    if args.table is not None:  # --out names the table file (iosim/costs/mixes/aten-sm_<arch>.json)
        if args.out is None:
            parser.error("--table needs --out FILE")
        table = code_table([(json.loads(path.read_text()), path.as_posix()) for path in args.table])
        args.out.write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {args.out}")
        return 0
    if args.out is None:
        parser.error("--out is required")
    try:
        data = probe(args.out)
    except (HarnessError, ValueError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    for n, r in sorted(data["results"].items()):
        print(f"N={n:>6}: {r['name']}, {r['inst_per_element']:.3f} warp instructions per element, "
              f"{r['duration_s'] * 1e6:.0f} us for {r['elements']} elements")
    for n, r in sorted(data["backward"].items()):
        print(f"N={n:>6} backward: {r['name']}, {r['inst_per_element']:.3f} warp instructions per element, "
              f"{r['duration_s'] * 1e6:.0f} us for {r['elements']} elements")
    for label, r in data["elementwise"].items():
        moved = (r["dram_read_bytes"] + r["dram_write_bytes"]) / r["duration_s"] / 1e12
        print(f"{label:>20}: {r['name'][:60]}, {r['inst_per_element']:.3f} warp instructions per element, "
              f"{r['duration_s'] * 1e6:.0f} us, DRAM {moved:.2f} TB/s")
    print(f"wrote {args.out / 'aten_probe.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
