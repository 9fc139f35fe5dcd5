"""Readable tables of simulation results (text for people, CSV for spreadsheets)."""
from __future__ import annotations

import csv
import io

from iosim.results.caveats import regimes
from iosim.results.result import RunResult, Skipped
from iosim.sizes import lengths_text

COLUMNS = ("gpu", "algo", "N", "Nk", "lengths", "window", "d", "B×H", "causal", "pass", "HBM read", "HBM write",
           "L2 traffic", "L2 hit", "time", "bound", "peak mem")
OPTIONAL = {"lengths": "-", "window": "-"}  # columns shown only where some run has them


def human_bytes(n: float) -> str:
    if abs(n) >= 1e21:  # beyond any memory: scientific, not a thousand-digit count of exabytes
        return f"{n:.3g} B"
    for unit, k in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= k:
            return f"{n / k:.3g} {unit}" if n / k < 100 else f"{n / k:.0f} {unit}"
    return f"{n:.0f} B"


def human_time(s: float) -> str:
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def causal_text(p: dict) -> str:
    """A problem's causal mask: yes or no, or where its diagonal sits when the query and key lengths differ."""
    if not p["causal"]:
        return "no"
    if (p.get("seq_k") or p["seq_q"]) == p["seq_q"]:
        return "yes"
    return p.get("causal_align", "top-left")


def row(r: RunResult | Skipped) -> dict:
    """One table line; a skipped run shows its configuration and its reason where the bound goes."""
    p = r.config["problem"]
    heads = f"{p['batch']}×{p['heads']}" + (f"/{p['kv_heads']}" if p["kv_heads"] != p["heads"] else "")
    out = {"gpu": r.gpu, "algo": algo_label(r.config), "N": p["seq_q"], "Nk": p.get("seq_k") or p["seq_q"],
           "lengths": lengths_text(p["seq_lens"]) if p.get("seq_lens") else "-", "window": p.get("window") or "-",
           "d": p["head_dim"], "B×H": heads,
           "causal": causal_text(p), "pass": "fwd+bwd" if p["backward"] else "fwd",
           "peak mem": human_bytes(r.peak_hbm_bytes) + (" (OOM)" if r.out_of_memory else "")}
    if isinstance(r, Skipped):
        return out | {c: "-" for c in ("HBM read", "HBM write", "L2 traffic", "L2 hit", "time")} | {"bound": r.reason}
    lv = r.levels
    return out | {
        "HBM read": human_bytes(lv["hbm"].read_bytes), "HBM write": human_bytes(lv["hbm"].write_bytes),
        "L2 traffic": human_bytes(lv["l2"].total), "L2 hit": f"{100 * r.l2_hit_rate:.1f}%",
        "time": human_time(r.time_s), "bound": r.bound,
    }


def table(results: list) -> str:
    """Aligned text table, one line per run; constant columns are hoisted into a header line, and the
    KV length is left out where it is N for every run (self-attention)."""
    rows = [row(r) for r in results]
    columns = [c for c in COLUMNS if (c != "Nk" or any(x["Nk"] != x["N"] for x in rows))
               and (c not in OPTIONAL or any(x[c] != OPTIONAL[c] for x in rows))]
    constant = [c for c in columns if len({x[c] for x in rows}) == 1 and len(rows) > 1]
    if len(constant) == len(columns):  # identical rows: show them, not a header over nothing
        constant = []
    shown = [c for c in columns if c not in constant]
    widths = {c: max(len(c), *(len(str(x[c])) for x in rows)) for c in shown}
    lines = []
    if constant:
        lines.append("  ".join(f"{c}={rows[0][c]}" for c in constant))
    lines.append("  ".join(c.rjust(widths[c]) for c in shown))
    lines.extend("  ".join(str(x[c]).rjust(widths[c]) for c in shown) for x in rows)
    return "\n".join(lines)


CONFIG_COLUMNS = ("gpu", "algo", "seq_q", "seq_k", "head_dim", "batch", "heads", "kv_heads", "dtype", "causal",
                  "backward", "block_m", "block_n", "warps", "stages", "grid_order", "splits", "persistent", "mode",
                  "host_tensors",
                  "page_size", "seq_lens", "window", "causal_align")
LEVEL_COLUMNS = tuple(f"{lv}_{k}_bytes" for lv in ("sram", "l2", "hbm", "host") for k in ("read", "write"))
FIELDS = [*CONFIG_COLUMNS, *LEVEL_COLUMNS, "l2_hit_rate", "time_s", "bound", "peak_hbm_bytes", "hbm_capacity_bytes",
          "caveats", "skipped"]


def records(results: list) -> list[dict]:
    """One flat dict per run in base units (bytes, seconds; ``l2_hit_rate`` a fraction) with every
    configuration column, so that rows of a tiling sweep can be told apart; a skipped run has its
    reason in ``skipped`` and no counts; ``caveats`` names the regimes where the prediction is least
    certain (:mod:`iosim.results.caveats`), separated by ``;``. The rows of :func:`csv_text` and of ``to_dataframe``."""
    out = []
    for r in results:
        c = r.config
        d = dict.fromkeys(FIELDS)
        d |= {k: c["problem"][k] for k in ("seq_q", "seq_k", "head_dim", "batch", "heads", "kv_heads", "dtype",
                                           "causal", "backward")}
        d |= {k: c["tiling"].get(k) for k in ("block_m", "block_n", "warps", "stages", "grid_order", "splits",
                                             "persistent")}
        lens = c["problem"].get("seq_lens")
        d |= {k: c["problem"].get(k) for k in ("page_size", "window")} | {"seq_lens": lengths_text(lens) if lens else None}
        if c["problem"]["causal"]:  # where the diagonal sits (the same either way at equal lengths)
            d["causal_align"] = c["problem"].get("causal_align", "top-left")
        d |= {"gpu": r.gpu, "algo": algo_label(c), "mode": r.mode, "host_tensors": "+".join(c.get("host_tensors", [])),
              "peak_hbm_bytes": r.peak_hbm_bytes, "hbm_capacity_bytes": r.hbm_capacity_bytes}
        if isinstance(r, Skipped):
            d["skipped"] = r.reason
        else:
            d |= {"l2_hit_rate": r.l2_hit_rate, "time_s": r.time_s, "bound": r.bound,
                  "caveats": ";".join(regimes(r)) or None}
            for lv, t in r.levels.items():
                d[f"{lv}_read_bytes"], d[f"{lv}_write_bytes"] = t.read_bytes, t.write_bytes
        out.append(d)
    return out


def csv_text(results: list) -> str:
    """Flat CSV of :func:`records`: one row per run, in base units."""
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(records(results))
    return out.getvalue()


def to_dataframe(results: list):
    """:func:`records` as a pandas DataFrame, for notebooks (pandas is not a dependency of iosim)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_dataframe needs pandas: pip install pandas") from None
    return pd.DataFrame(records(results), columns=FIELDS)


def algo_label(config: dict) -> str:
    """The algorithm, and whose kernels run it where they are not iosim's (``flash2/sdpa_cudnn``)."""
    return config["algo"] + (f"/{config['impl']}" if config.get("impl") else "")
