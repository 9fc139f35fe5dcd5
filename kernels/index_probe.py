"""Does the calibration's tile loop pay for its own tile index? A probe of ``iosim calibrate``'s forward tile loop.

The calibrated loop (:func:`iosim.kernels.microbench.tile_loop`) reads K/V tile ``(pid + i) mod N_KV`` with
``N_KV`` a runtime argument: every pass computes an integer division (``I2F``, ``MUFU.RCP``, ``F2I``) and
loads ``N_KV`` from constant memory, a chain of some 250 cycles ahead of the next tile's load that attention
kernels do not have (they step a pointer). This probe runs the same loop with ``N_KV`` a compile-time
power of two (the modulo is a bitwise and) beside the calibrated one, at the same tiles, warps, stages and
CTAs per SM, so that the difference says how much of a calibrated rate is the index and not the products.

    python -m iosim.kernels.index_probe --out DIR      # on a GPU: DIR/index_probe.json
    python -m iosim.kernels.index_probe --series h200 --out DIR   # every point of a profile's calibrated tile series
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import re
from pathlib import Path

from iosim.costs.issue import CALIBRATION_STAGES
from iosim.kernels import microbench as mb

# (block_m, block_n, head_dim, warps, stages, CTAs per SM): the occupancy points whose foreign kernels run
# faster than predicted (64 x 64 at one to four CTAs an SM) and the default forward tiles
POINTS = ((64, 64, 64, 4, 2, (1, 2, 4)), (64, 64, 64, 4, 3, (4,)), (128, 64, 64, 4, 2, (1, 2)),
          (128, 64, 128, 4, 3, (1, 2)), (64, 64, 128, 4, 2, (1, 2)))


_SERIES = re.compile(r"^tile_(?:occ|softmax)_fp16_(\d+)x(\d+)x(\d+)w(\d+)(?:s(\d+))?_c(\d+)$")


def series_points(profile) -> tuple:
    """:data:`POINTS` for every point of ``profile``'s calibrated fp16 tile series (``tile_occ_fp16_*`` and
    ``tile_softmax_fp16_*``, :data:`~iosim.costs.issue.CALIBRATION_STAGES` where a key names none): what the probe measures with ``--series``."""
    raw = (profile.calibration or {}).get("raw") or {}
    found: dict = {}
    for key, value in raw.items():
        m = _SERIES.match(key)
        if m and value:
            bm, bn, d, w, st, c = (int(g) if g else CALIBRATION_STAGES for g in m.groups())
            found.setdefault((bm, bn, d, w, st), set()).add(c)
    return tuple(k + (tuple(sorted(c)),) for k, c in sorted(found.items()))


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def tile_mma_fixed(Q, K, V, O, N_KV: tl.constexpr, qk_scale, ITERS: tl.constexpr, BM: tl.constexpr,
                       BN: tl.constexpr, D: tl.constexpr, SOFTMAX: tl.constexpr = False):
        """``tile_mma`` (microbench) with ``N_KV`` a compile-time power of two: the same loads, products
        and softmax, its tile index ``(pid + i) & (N_KV - 1)`` without a division."""
        pid = tl.program_id(0)
        rm, rn, rd = tl.arange(0, BM), tl.arange(0, BN), tl.arange(0, D)
        q = tl.load(Q + rm[:, None] * D + rd[None, :])
        acc = tl.zeros([BM, D], tl.float32)
        m_i = tl.full([BM], float("-inf"), tl.float32)
        l_i = tl.zeros([BM], tl.float32)
        for i in range(ITERS):
            j = (pid + i) % N_KV
            k = tl.load(K + j * BN * D + rn[:, None] * D + rd[None, :])
            v = tl.load(V + j * BN * D + rn[:, None] * D + rd[None, :])
            s = tl.dot(q, tl.trans(k))
            if SOFTMAX:
                s = s * qk_scale
                m_new = tl.maximum(m_i, tl.max(s, axis=1))
                p = tl.exp2(s - m_new[:, None])
                alpha = tl.exp2(m_i - m_new)
                l_i = l_i * alpha + tl.sum(p, axis=1)
                acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
                m_i = m_new
            else:
                acc = tl.dot(s.to(v.dtype), v, acc)
        if SOFTMAX:
            acc = acc / l_i[:, None]
        tl.store(O + pid * BM * D + rm[:, None] * D + rd[None, :], acc)

    return tile_mma_fixed


def __getattr__(name: str):
    """The probe's kernel by name, built on first use (PEP 562), as :class:`iosim.kernels.sass.Launch` finds it."""
    if name == "tile_mma_fixed":
        return _kernel()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fixed_loop(q, k, v, o, *, bn: int, ctas: int, iters: int, warps: int, stages: int, softmax: bool = False,
               qk_scale: float = 1.0):
    """Launch the probe's loop (``N_KV`` = k's rows / bn, a power of two) on ``ctas`` CTAs."""
    bm, d = q.shape
    n_kv = k.shape[0] // bn
    if n_kv & (n_kv - 1):
        raise ValueError(f"K/V tiles: must be a power of two, got {n_kv}")
    return _kernel()[(ctas,)](q, k, v, o, n_kv, qk_scale, ITERS=iters, BM=bm, BN=bn, D=d, SOFTMAX=softmax,
                            num_warps=warps, num_stages=stages)


def rates(torch, bm: int, bn: int, d: int, warps: int, stages: int, ctas_per_sm: int, softmax: bool,
          iters: int = 4096, pool: int = 16) -> dict:
    """FLOP/s (4·bm·bn·d a pass) of the calibrated loop and of the probe's, one after the other, at ``ctas_per_sm``
    CTAs on every SM (grid = that × SM count, on an idle GPU), CTA pid reading K/V tile (pid + i) mod ``pool`` (16,
    as calibrate's loop: every SM's CTAs read the same 16 tiles)."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    ctas = ctas_per_sm * sms
    q, k, v = mb._tile_inputs(torch, torch.float16, bm, bn, d, pool)
    o = torch.empty(ctas * bm, d, dtype=torch.float32, device="cuda")
    ids = torch.full((ctas,), -1, dtype=torch.int32, device="cuda")
    scale = mb.LOG2E / math.sqrt(d)
    runs = {
        "runtime": lambda: mb.tile_loop(q, k, v, o, ids, bn=bn, ctas=ctas, iters=iters, warps=warps, stages=stages,
                                        softmax=softmax, qk_scale=scale),
        "constexpr": lambda: fixed_loop(q, k, v, o, bn=bn, ctas=ctas, iters=iters, warps=warps, stages=stages,
                                        softmax=softmax, qk_scale=scale),
    }
    out = {}
    for name, fn in runs.items():
        fn()
        out[name] = ctas * iters * 4.0 * bm * bn * d / mb.time_fn(fn).median_s
    return out


def compiled_loops(arch: int = 90, points: tuple = POINTS) -> list:
    """Both loops' compiled loop bodies at every point's tiles (this machine's Triton, for sm_``arch``):
    instructions, stall cycles and the waits of each, so the rates can be read against the code."""
    import torch

    from iosim.kernels.sass import capture_launches, compile_sass

    out = []
    for bm, bn, d, warps, stages, _ in points:
        for softmax in (False, True):
            q, k = torch.zeros(bm, d, dtype=torch.float16), torch.zeros(16 * bn, d, dtype=torch.float16)
            o, ids = torch.zeros(1, dtype=torch.float32), torch.zeros(1, dtype=torch.int32)
            for name, fn, extra in (("runtime", mb.tile_loop, (ids,)), ("constexpr", fixed_loop, ())):
                kw = {"record_sm": True} if name == "runtime" else {}
                _, launches = capture_launches(fn, q, k, k, o, *extra, bn=bn, ctas=1, iters=4096, warps=warps,
                                               stages=stages, softmax=softmax, arch=arch, **kw)
                body = compile_sass(launches[0], arch).loop_bodies()[0]
                out.append({"block_m": bm, "block_n": bn, "head_dim": d, "warps": warps, "stages": stages,
                            "softmax": softmax, "index": name, "instructions": body.instructions,
                            "stall_cycles": body.stall_cycles, "waits": body.waits, "opcodes": dict(body.opcodes)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for index_probe.json")
    ap.add_argument("--series", default=None, metavar="NAME|FILE",
                    help="every point of this profile's calibrated tile series instead of the probe's own ten")
    ap.add_argument("--pool", type=int, default=16, metavar="TILES",
                    help="K/V tiles the loops cycle through (a power of two; default 16, as calibrate's loop)")
    args = ap.parse_args(argv)
    from dataclasses import asdict

    import torch

    from iosim.hardware.profile import load_profile
    from iosim.kernels.harness import provenance

    points = POINTS if args.series is None else series_points(load_profile(args.series))
    rows = []
    for bm, bn, d, warps, stages, counts in points:
        for c in counts:
            for softmax in (False, True):
                got = rates(torch, bm, bn, d, warps, stages, c, softmax, pool=args.pool)
                rows.append({"block_m": bm, "block_n": bn, "head_dim": d, "warps": warps, "stages": stages,
                             "ctas_per_sm": c, "softmax": softmax, "flops_runtime_index": got["runtime"],
                             "flops_constexpr_index": got["constexpr"],
                             "ratio": got["constexpr"] / got["runtime"]})
                print(f"{bm}x{bn}x{d} w{warps} s{stages} c{c} softmax={softmax}: runtime index "
                      f"{got['runtime'] / 1e12:.0f} TFLOP/s, constexpr {got['constexpr'] / 1e12:.0f} "
                      f"({got['constexpr'] / got['runtime']:.3f}x)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": "iosim-index-probe", "schema_version": 1, "provenance": asdict(provenance(None, counters=False)),
           "series": args.series, "pool": args.pool, "rows": rows, "loops": compiled_loops(points=points)}
    (args.out / "index_probe.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
