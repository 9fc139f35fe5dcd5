"""The convoy probe's softmax rows as a calibration run: what ``iosim calibrate --add-from`` folds into a profile.

``python -m iosim.kernels.convoy_probe --softmax both`` measures what ``microbench.convoy_costs`` (the calibration's
``convoy cost series`` step) measures, the same loop, groups and occupancies. This writes its softmax rows under
the step's keys (``convoy_miss_softmax_<bm>x<bn>x<d>w<warps>_c<per SM>_g<group>_s``, groups of two or more) in a
profile file with the probe's provenance, every number as the probe wrote it.

    python experiments/probes/convoy_run.py PROBE.json --base PROFILE.yaml --out RUN.yaml
    iosim calibrate --base PROFILE.yaml --add-from RUN.yaml --out PROFILE.yaml
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from iosim.hardware.profile import read_profile_dict, write_profile
from iosim.kernels.microbench import CONVOY_GROUPS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe", type=Path, help="convoy_probe.json with softmax rows")
    ap.add_argument("--base", type=Path, required=True, help="the profile whose fields the run file carries")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    doc = json.loads(args.probe.read_text())
    raw = {f"convoy_miss_softmax_{r['block_m']}x{r['block_n']}x{r['head_dim']}w{r['warps']}_c{r['ctas_per_sm']}"
           f"_g{r['group']}_s": r["miss_s"] for r in doc["rows"] if r.get("softmax") and r["group"] in CONVOY_GROUPS}
    if not raw:
        raise SystemExit(f"{args.probe}: no softmax rows")
    p = doc["provenance"]
    profile = {k: v for k, v in read_profile_dict(args.base).items() if k != "calibration"}
    profile["calibration"] = {"gpu": p["gpu_name"], "driver": p["driver"], "cuda": p["cuda"], "torch": p["torch"],
                              "triton": p["triton"], "date": p["date"], "command": p["command"], "raw": raw}
    write_profile(profile, args.out, comment=f"The convoy probe's softmax rows ({args.probe}) as a calibration run.")
    print(f"wrote {args.out}: {len(raw)} raw numbers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
