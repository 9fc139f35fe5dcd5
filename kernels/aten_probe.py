"""The code of PyTorch's own softmax kernel, read from the counters: warp instructions per element, by row length.

Eager PyTorch attention runs ATen's softmax, whose compiled code iosim cannot read (it ships inside
libtorch). Under Nsight Compute this probe runs ``torch.softmax(x, dim=-1)`` on fp16 ``x`` of
``ROWS_ELEMS`` elements for each row length in ``LENGTHS`` (none of them a length of the committed
data sets) and records each launch's kernel name, executed warp instructions per pipe, duration and
DRAM bytes, so that iosim prices that kernel from what it executes, as it prices a Triton kernel from
its SASS.

    python -m iosim.kernels.aten_probe --out DIR     # runs ncu on itself; writes DIR/aten_probe.json
    python -m iosim.kernels.aten_probe --table DIR/aten_probe.json --out iosim/costs/mixes/aten-sm_90.json
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from iosim.kernels.device import HarnessError, cuda_torch, one_line
from iosim.kernels.harness import provenance
from iosim.kernels.ncu import kernel_counters, parse_ncu_raw_csv
from iosim.kernels.profiler import metrics_for, ncu_version, profiled_launch, require_ncu, run_probe

LENGTHS = (768, 1536, 3072, 6144, 12288)  # row lengths N (the data sets use 512-16384 in powers of two)
ROWS_ELEMS = 2**27  # elements per launch: 256 MiB of fp16, far beyond the L2
TAG = "softmax-{}"  # NVTX range per row length
FIELDS = ("name", "inst_executed", "inst_pipes", "duration_s", "dram_read_bytes", "dram_write_bytes", "registers",
          "block", "grid")


def child() -> int:
    """Runs under ncu: per row length one warm-up launch outside the profiled range, then one profiled and tagged."""
    torch = cuda_torch()
    gen = torch.Generator(device="cuda").manual_seed(0)
    for n in LENGTHS:
        x = torch.randn(ROWS_ELEMS // n, n, device="cuda", dtype=torch.float16, generator=gen)
        profiled_launch(torch, TAG.format(n), lambda x=x: torch.softmax(x, dim=-1))
    return 0


def results(rows: list[dict]) -> dict:
    """``{N: {field: value, "elements": ..., "inst_per_element": warp instructions per element}}``."""
    out: dict = {}
    for row in rows:
        n = next((n for n in LENGTHS if TAG.format(n) in row["nvtx"].split(":")), None)
        if n is None:
            continue
        k = kernel_counters(row)
        entry = {f: getattr(k, f) for f in FIELDS}
        elems = (ROWS_ELEMS // n) * n
        entry.update(elements=elems, inst_per_element=k.inst_executed / elems if k.inst_executed else None)
        out[n] = entry
    return out


def probe(out_dir: Path, timeout_s: float = 300) -> dict:
    """Run the probe under ncu, write ``out_dir/aten_probe.json`` (and ncu's log and CSV), return it."""
    ncu = require_ncu("ATen probe")
    metrics, missing = metrics_for(ncu)
    csv = run_probe("iosim.kernels.aten_probe", "aten_probe", out_dir, metrics, "ATen probe", timeout_s)
    data = {"provenance": asdict(provenance(ncu_version(ncu), True, list(missing))), "lengths": list(LENGTHS),
            "rows_elements": ROWS_ELEMS, "results": results(parse_ncu_raw_csv(csv))}
    (out_dir / "aten_probe.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


def code_table(data: dict, source: str) -> dict:
    """The committed form of a probe's results (what :func:`iosim.costs.code.aten_softmax_code` reads): per
    probed row length the kernel ATen ran and its warp instructions per element, in all and per pipe."""
    prov = data["provenance"]
    rows = {}
    for n, r in sorted(data["results"].items(), key=lambda kv: int(kv[0])):
        e = r["elements"]
        rows[str(n)] = {"kernel": r["name"], "inst_per_element": r["inst_executed"] / e,
                        "pipes_per_element": {p: v / e for p, v in sorted(r["inst_pipes"].items())
                                              if p != "tensor_op_gmma"}}
    major, minor = _capability(prov.get("gpu_name", ""))
    return {"schema": "iosim-aten-code", "arch": f"sm_{major}{minor}", "torch": prov.get("torch"),
            "source": f"{source} (python -m iosim.kernels.aten_probe, ncu {prov.get('ncu')}, {prov.get('gpu_name')}, "
                      f"{prov.get('date')}): torch.softmax(x, dim=-1) on fp16 rows", "softmax_forward": rows}


def _capability(gpu_name: str) -> tuple[int, int]:
    """Compute capability of the GPUs this probe has run on, by name."""
    if any(g in gpu_name for g in ("H100", "H200", "GH200")):
        return 9, 0
    raise ValueError(f"gpu_name: no known compute capability for {gpu_name!r} (known: H100, H200)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iosim.kernels.aten_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for aten_probe.json, ncu's log and CSV (with --table: the table file)")
    parser.add_argument("--table", type=Path, help="an aten_probe.json to turn into iosim's committed code table")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the process ncu profiles
    args = parser.parse_args(argv)
    if args.child:
        return child()
    if args.table is not None:  # --out names the table file (iosim/costs/mixes/aten-sm_<arch>.json)
        if args.out is None:
            parser.error("--table needs --out FILE")
        table = code_table(json.loads(args.table.read_text()), args.table.as_posix())
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
    print(f"wrote {args.out / 'aten_probe.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
