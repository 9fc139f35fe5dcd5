"""Shared-memory bank conflicts from SASS against the hardware's count: every committed ncu source page.

Each source page (``ncu --page source --print-source sass``, section SourceCounters) lists, per SASS line,
the warp instructions it executed and the shared-memory wavefronts they took. For every kernel this script
runs the lane-by-lane evaluation of :mod:`iosim.costs.banks` on the page's own SASS text, multiplies each
shared access's wavefronts per execution by the executions the page counted, and sets the sum beside the
measured wavefronts of those lines and beside the conflict-free count (128 bytes a wavefront) iosim used
before. Shuffles and wgmma lines are left out of both sides (the page credits them no wavefronts). Nothing
here is fitted: the rule is the CUDA guide's 32 banks of 4 bytes.

    python experiments/bank_conflicts.py            # a table, then the median error of each rule
    python experiments/bank_conflicts.py --csv out.csv
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import statistics
import sys
from pathlib import Path

from iosim.costs import banks
from iosim.costs.executed import read_source_page
from iosim.costs.sass import Instruction, opcode_of, shared_bytes

ROOT = Path(__file__).resolve().parents[1]
MEASUREMENTS = ROOT / "experiments" / "measurements"
SKIPPED = ("SHFL", "HGMMA")  # no wavefronts on the page's lines (wgmma's operand reads are not an instruction's)


def block_warps(folder: Path) -> dict[str, list[int]]:
    """Warps per CTA of each profiled kernel, by name in profiling order, from the folder's ncu CSV exports
    that carry a ``Block Size`` column (launch statistics, details pages)."""
    out: dict[str, list[int]] = {}
    for path in sorted(folder.glob("*.csv*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as raw:
            rows = csv.reader(io.TextIOWrapper(raw, encoding="utf-8"))
            header = next(rows, [])
            if "Block Size" not in header or "Kernel Name" not in header:
                continue
            seen = set()
            for row in rows:
                fields = dict(zip(header, row))
                if fields.get("ID") in seen:
                    continue
                seen.add(fields.get("ID"))
                x, y, z = (int(v) for v in fields["Block Size"].strip("()").split(","))
                out.setdefault(fields["Kernel Name"], []).append(max(1, x * y * z // banks.WARP))
    return out


def compare(kernel, warps: int) -> dict:
    """Measured, lane-evaluated and conflict-free wavefronts of one profiled kernel's shared accesses."""
    insns = [Instruction(n, opcode_of(text), text) for n, (text, _) in enumerate(kernel.lines)]
    per_access = banks.access_wavefronts(insns, warps)
    measured = predicted = ideal = 0.0
    accesses = unknown = 0
    for insn, (_, executed), waves in zip(insns, kernel.lines, kernel.wavefronts):
        if not executed or not shared_bytes(insn) or insn.opcode in SKIPPED:
            continue
        accesses += 1
        known = per_access.get(insn.address)
        unknown += known is None
        measured += waves
        ideal += executed * banks.ideal_wavefronts(insn)
        predicted += executed * (banks.ideal_wavefronts(insn) if known is None else known)
    return {"measured": measured, "predicted": predicted, "conflict_free": ideal, "accesses": accesses,
            "unknown": unknown}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, help="also write the table here")
    parser.add_argument("--root", type=Path, default=MEASUREMENTS, help="folder searched for source pages")
    args = parser.parse_args(argv)
    rows = []
    for page in sorted(args.root.rglob("*.csv.gz")):
        try:
            kernels = read_source_page(page)
        except (ValueError, KeyError):
            continue
        if not any(k.wavefronts for k in kernels):
            continue
        warps_by_name = block_warps(page.parent)
        taken: dict[str, int] = {}
        seen = set()
        for kernel in kernels:
            n = taken.get(kernel.name, 0)
            taken[kernel.name] = n + 1
            if (kernel.name, kernel.lines, kernel.wavefronts) in seen:  # a launch repeated, counts and all
                continue
            seen.add((kernel.name, kernel.lines, kernel.wavefronts))
            listed = warps_by_name.get(kernel.name, [])
            warps = listed[n] if n < len(listed) else 4  # 4 warps where the folder has no launch statistics
            row = {"page": str(page.relative_to(args.root)), "kernel": kernel.name[:60], "warps": warps,
                   **compare(kernel, warps)}
            if row["measured"]:
                rows.append(row)
    print(f"{'page':58s} {'kernel':34s} {'w':>2s} {'measured':>11s} {'banks':>8s} {'conflict-free':>13s} {'unknown':>9s}")
    for r in rows:
        err = r["predicted"] / r["measured"] - 1
        free = r["conflict_free"] / r["measured"] - 1
        print(f"{r['page'][-58:]:58s} {r['kernel'][:34]:34s} {r['warps']:2d} {r['measured']:11.0f} {err:+8.1%} "
              f"{free:+13.1%} {r['unknown']:4d}/{r['accesses']:<4d}")
    if not rows:
        print("no source page with shared-memory wavefronts found", file=sys.stderr)
        return 1
    med = statistics.median(abs(r["predicted"] / r["measured"] - 1) for r in rows)
    med_free = statistics.median(abs(r["conflict_free"] / r["measured"] - 1) for r in rows)
    worst = max(abs(r["predicted"] / r["measured"] - 1) for r in rows)
    worst_free = max(abs(r["conflict_free"] / r["measured"] - 1) for r in rows)
    print(f"\n{len(rows)} kernels: median |error| lane-evaluated {med:.1%} (max {worst:.1%}), "
          f"conflict-free {med_free:.1%} (max {worst_free:.1%})")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
