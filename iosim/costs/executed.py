"""Instruction mixes of kernels iosim cannot compile, from what Nsight Compute saw them execute.

cuDNN generates its attention kernels at run time and FlashAttention-2's CUDA kernels ship compiled
inside libtorch: no file holds their code. Nsight Compute's source page does: every SASS line with
the warp instructions it executed (``ncu --import R --page source --print-source sass --csv``, the
``SourceCounters`` section). Summed per opcode and pipe (:func:`iosim.costs.sass.pipe_of`) and divided
by the loop iterations and warps of the profiled launch, that is the kernel's mix per warp and
iteration, the form :class:`iosim.costs.issue.LoopCode` prices. Pure: reads a (gzipped) CSV.
"""
from __future__ import annotations

import csv
import gzip
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from iosim.costs.sass import opcode_of, pipe_of

EXECUTED = "Instructions Executed"  # the column of warp instructions executed per SASS line
WAVEFRONTS = "L1 Wavefronts Shared"  # the column of shared-memory wavefronts per SASS line (bank conflicts in it)


@dataclass(frozen=True)
class ExecutedKernel:
    """One profiled kernel: its name and, per SASS line, the text and the warp instructions it executed."""

    name: str
    lines: tuple[tuple[str, float], ...]
    # per line, the shared-memory wavefronts its executions took (empty where the export has no such column)
    wavefronts: tuple[float, ...] = ()

    def opcodes(self) -> Counter:
        """Warp instructions executed per opcode (mnemonic without modifiers or predicate)."""
        out: Counter = Counter()
        for text, n in self.lines:
            if n:
                out[opcode_of(text)] += n
        return out

    def pipes(self) -> Counter:
        """Warp instructions executed per Nsight Compute pipe."""
        out: Counter = Counter()
        for opcode, n in self.opcodes().items():
            out[pipe_of(opcode)] += n
        return out

    @property
    def instructions(self) -> float:
        return sum(n for _, n in self.lines)


def read_source_page(path: str | Path) -> list[ExecutedKernel]:
    """Every kernel of an exported source page, in profiling order (``.csv`` or ``.csv.gz``)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    kernels: list[ExecutedKernel] = []
    name, header, lines, waves = None, None, [], []
    with opener(path, "rb") as raw:
        for row in csv.reader(io.TextIOWrapper(raw, encoding="utf-8")):
            if not row:
                continue
            if row[0] == "Kernel Name":
                if name is not None:
                    kernels.append(ExecutedKernel(name, tuple(lines), tuple(waves)))
                name, header, lines, waves = row[1], None, [], []
            elif row[0] == "Address":
                header = row
            elif header is not None:
                fields = dict(zip(header, row))
                lines.append((fields["Source"].strip(), float(fields.get(EXECUTED) or 0)))
                if WAVEFRONTS in fields:
                    waves.append(float(fields[WAVEFRONTS] or 0))
    if name is not None:
        kernels.append(ExecutedKernel(name, tuple(lines), tuple(waves)))
    if not kernels:
        raise ValueError(f"{path}: no 'Kernel Name' rows: not an ncu source-page export")
    return kernels


__all__ = ["EXECUTED", "WAVEFRONTS", "ExecutedKernel", "read_source_page"]
