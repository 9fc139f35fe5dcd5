"""A synthetic ``ncu --csv --page raw --print-units base`` export for the probes' tests: a header, a units
row and one row per kernel, tagged with an NVTX range as the probes tag their launches."""
from __future__ import annotations


def ncu_csv(columns, units, kernels, block: int = 128) -> str:
    """``kernels``: (name, NVTX tag or "", grid, values in ``columns`` order), CTAs of ``block`` threads."""
    head = ["ID", "Process ID", "Kernel Name",
            "thread Domain:Push/Pop_Range:PL_Type:PL_Value:CLR_Type:Color:Msg_Type:Msg", "Block Size", "Grid Size",
            *columns]
    lines = [",".join(f'"{h}"' for h in head), ",".join(['""'] * 6 + [f'"{u}"' for u in units])]
    for i, (name, tag, grid, values) in enumerate(kernels):
        nvtx = f'900  ""<default domain>:{tag}:none:none:none:none:none:none"" ' if tag else ""
        cells = [str(i), "900", name, nvtx, f"({block}, 1, 1)", f"({grid}, 1, 1)", *(f"{v:,}" for v in values)]
        lines.append(",".join(f'"{c}"' for c in cells))
    return "==PROF== Disconnected from process 900\n" + "\n".join(lines) + "\n"
