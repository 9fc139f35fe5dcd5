"""How long each command the README and docs/ show takes on this machine, against issue 9's goal (under 60 s).

Runs every ``iosim`` line of the bash blocks of the README and of ``docs/*.md`` (the pages moved out of it) that
needs no GPU and no cluster, one at a time
in a scratch folder (the README's sweep spec written there as ``study.yaml``, ``my-gpu.yaml`` made with
``iosim profiles new``), and prints each command's wall time beside the goal and the ratio to it.

    python experiments/bench_readme.py [--timeout S] [--only TEXT]
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 60.0  # issue 9: every README command under 60 s (most under 10)
NEEDS = {  # what a command needs that this script does not have: it is listed, not run
    "measure": "a GPU", "calibrate": "a GPU", "--live": "a GPU", "--scheduler": "a Dask cluster",
}


def readme_commands(text: str) -> list[str]:
    """The ``iosim`` lines of the README's bash blocks, in order, without their comments."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside and "iosim " in line:  # a command of its own, or the quickstart's after its install
            line = line.rsplit("&& ", 1)[-1]
            if line.startswith("iosim "):
                out.append(" ".join(shlex.split(line, comments=True)))
    return out


def sweep_spec(text: str) -> str:
    """The README's example sweep spec (its yaml block)."""
    found = re.search(r"```yaml\n(.*?)```", text, re.S)
    return found.group(1) if found else ""


OUTPUTS = {"-o", "--out", "--plots", "--save"}  # what follows these is written: it stays in the scratch folder


def absolute(command: str) -> list[str]:
    """The command's words, input paths into the checkout made absolute (it runs in a scratch folder)."""
    words = shlex.split(command)
    return [str(REPO / w) if "/" in w and (REPO / w).exists() and (n == 0 or words[n - 1] not in OUTPUTS) else w
            for n, w in enumerate(words)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a command may run (default 120)")
    ap.add_argument("--only", default=None, help="only commands containing this text")
    args = ap.parse_args()
    text = (REPO / "README.md").read_text()
    pages = "\n".join(p.read_text() for p in sorted((REPO / "docs").glob("*.md")))
    commands = [c for c in dict.fromkeys(readme_commands(text) + readme_commands(pages))  # each once, README first
                if args.only is None or args.only in c]
    print(f"{'s':>7s} {'goal':>5s} {'ratio':>6s}  command")
    over_goal = over_10 = ran = 0
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "study.yaml").write_text(sweep_spec(text))
        subprocess.run(["iosim", "profiles", "new", "--base", "h100-sxm", "-o", "my-gpu.yaml"], cwd=tmp,
                       capture_output=True, check=False)
        for command in commands:
            need = next((why for word, why in NEEDS.items() if word in command.split()), None)
            if need:
                print(f"{'':>7s} {'':>5s} {'':>6s}  {command}   (needs {need}: not run)")
                continue
            words = absolute(command)
            if words[1:3] == ["profiles", "new"] and "-o" in words:  # it refuses to overwrite: the setup's copy goes
                (Path(tmp) / words[words.index("-o") + 1]).unlink(missing_ok=True)
            t0 = time.perf_counter()
            # its own process group, so that a command past the limit goes with its worker processes (-j 2)
            proc = subprocess.Popen(words, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=args.timeout)
                seconds, note = time.perf_counter() - t0, "" if code == 0 else f"   (exit {code})"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                seconds, note = args.timeout, f"   (over {args.timeout:.0f} s)"
            ran += 1
            over_goal += seconds > GOAL_S
            over_10 += seconds > 10.0
            print(f"{seconds:7.1f} {GOAL_S:5.0f} {seconds / GOAL_S:6.2f}  {command}{note}", flush=True)
    print(f"\n{ran} commands run: {over_goal} over {GOAL_S:.0f} s, {over_10} over 10 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
