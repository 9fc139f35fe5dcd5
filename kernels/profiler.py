"""Nsight Compute, run: one ncu start per batch of cases, its child process, and the cleanup when we are cut short.

Counters come from ONE more call of each case in a child process under ``ncu --profile-from-start
off --nvtx``: the child (``python -m iosim.kernels.profiler CASES RESULT``, the installed package,
whatever the working directory) warms each case up outside the profiled range, then wraps one call
in ``cudaProfilerStart``/``Stop`` and an NVTX range ``iosim-case-<i>``. A whole batch of cases
shares one ncu start (slow: Python, torch and ncu itself). ncu runs in its own process group, so a
hung profiler is killed after ``NCU_TIMEOUT_S`` and a SIGTERM to us (``timeout``) ends it too.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from iosim.kernels.cases import CaseSpec
from iosim.kernels.device import HarnessError, cuda_torch, one_line
from iosim.kernels.inputs import make_call, make_inputs
from iosim.kernels.ncu import (
    BASE_METRICS,
    CASE_TAG,
    base_name,
    counters_by_case,
    ncu_failure,
    parse_ncu_raw_csv,
    parse_query_metrics,
    select_metrics,
)
from iosim.measure.measurement import Counters

NCU_TIMEOUT_S = 240  # per batch; a hung profiler costs one batch, not the session
_CHILD_GROUPS: set[int] = set()  # process groups of running ncu children, killed if we are terminated


def find_ncu() -> str | None:
    """``ncu`` on the PATH, else the newest one in the usual install folders; None if there is none."""
    found = shutil.which("ncu")
    if found:
        return found
    for pattern in ("/opt/nvidia/nsight-compute/*/ncu", "/usr/local/cuda/bin/ncu"):
        hits = sorted(Path("/").glob(pattern.lstrip("/")))
        if hits:
            return str(hits[-1])
    return None


def require_ncu(what: str) -> str:
    """:func:`find_ncu`'s answer, or a one-line refusal naming what needs it."""
    ncu = find_ncu()
    if ncu is None:
        raise HarnessError(f"the {what} needs ncu (Nsight Compute)")
    return ncu


def ncu_version(ncu: str) -> str | None:
    try:
        out = subprocess.run([ncu, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"Version\s+([\w.]+)", out)
    return m.group(1) if m else (out.strip().splitlines() or [None])[-1]


def query_metrics(ncu: str, chip: str = "gh100") -> set[str]:
    """Base names of the metrics ncu can collect on GPU 0 (else on ``chip``); empty if it will not say.

    ``ncu --query-metrics --devices 0`` lists them for the GPU present; ``--chip`` names a chip
    without asking the device (gh100 is the H100's and H200's die).
    """
    for args in (["--devices", "0"], ["--chip", chip]):
        try:
            out = subprocess.run([ncu, "--query-metrics", *args], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            continue
        names = parse_query_metrics(out.stdout) if out.returncode == 0 else set()
        if names:
            return names
    return set()


def metrics_for(ncu: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(metrics to collect, requested ones this ncu lacks)``: asked of ncu once per run."""
    return select_metrics(query_metrics(ncu))


def _run_group(cmd: list[str], log_path: Path, cwd: Path, timeout: float) -> int | None:
    """Run ``cmd`` in its own process group, output to ``log_path``; ``None`` if it timed out (then killed)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        _CHILD_GROUPS.add(proc.pid)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
        finally:
            _CHILD_GROUPS.discard(proc.pid)


def run_probe(module: str, stem: str, out_dir: Path, metrics, what: str, timeout_s: float = 300) -> str:
    """Profile ``python -m <module> --child`` under ncu as the harness does (the child's profiler ranges
    only, clocks as they run, caches flushed before each kernel); keep ncu's log and raw CSV export as
    ``out_dir/<stem>-ncu.log`` and ``<stem>-raw.csv`` and return the export. Probes share this."""
    ncu = require_ncu(what)
    out_dir.mkdir(parents=True, exist_ok=True)
    report, log = out_dir / stem, out_dir / f"{stem}-ncu.log"
    cmd = [ncu, "--profile-from-start", "off", "--nvtx", "--clock-control", "none", "--cache-control", "all",
           "--metrics", ",".join(metrics), "-f", "-o", str(report), sys.executable, "-m", module, "--child"]
    rc = _run_group(cmd, log, out_dir, timeout_s)
    if rc != 0:
        reason = (f"timed out after {timeout_s:.0f} s" if rc is None
                  else ncu_failure(log.read_text(errors="replace"), rc)[0])
        raise HarnessError(f"ncu on the {what}: {reason} (see {log})")
    export = subprocess.run([ncu, "--import", str(report.with_suffix(".ncu-rep")), "--csv", "--page", "raw",
                             "--print-units", "base"], capture_output=True, text=True, timeout=300)
    (out_dir / f"{stem}-raw.csv").write_text(export.stdout)
    if export.returncode != 0:
        raise HarnessError(f"ncu --import: {ncu_failure(export.stdout + export.stderr, export.returncode)[0]}")
    return export.stdout


def run_counter_probe(module: str, stem: str, out_dir: Path, probe_metrics, what: str,
                      timeout_s: float = 300) -> tuple[list, list, dict, list[dict]]:
    """A counter probe's ncu run (:func:`run_probe`) asking the base metrics and those of ``probe_metrics`` this ncu
    knows, the harness's or not: ``(metrics asked, probe metrics it lacks, provenance as a dict, the export's parsed
    rows)``."""
    from dataclasses import asdict

    from iosim.kernels.harness import provenance  # the harness imports this module
    ncu = require_ncu(what)
    available = query_metrics(ncu)
    metrics, _ = select_metrics(available)
    keep = [m for m in metrics if m in BASE_METRICS or m in probe_metrics]
    keep += [m for m in probe_metrics if m not in keep and available and base_name(m) in available]
    missing = [m for m in probe_metrics if m not in keep]
    prov = asdict(provenance(ncu_version(ncu), counters=True, metrics_missing=missing))
    return keep, missing, prov, parse_ncu_raw_csv(run_probe(module, stem, out_dir, keep, what, timeout_s))


def profiled_launch(torch, tag: str, launch) -> None:
    """A probe child's unit of work under :func:`run_probe`: ``launch()`` once to warm up, outside the
    profiled range, then once inside the profiler range and the NVTX range ``tag`` that names it."""
    launch()
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    torch.cuda.nvtx.range_push(tag)
    launch()
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()
    torch.cuda.profiler.stop()


def on_terminate(signum, frame):
    """SIGTERM (a ``timeout`` running out): end our ncu child's group too, then exit; written batches stay."""
    for pgid in list(_CHILD_GROUPS):
        with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
            os.killpg(pgid, signal.SIGKILL)
    raise SystemExit(128 + signum)


def profile_batch(specs: list[CaseSpec], ncu: str, workdir: Path, tag: str, metrics=BASE_METRICS,
                  pins: list | None = None) -> tuple[dict[str, Counters], dict[str, str], tuple[str, bool] | None]:
    """Counters for each case of a batch from one ncu run, of ``metrics`` (:func:`metrics_for`).

    ``pins``: per case, the launches the timed run recorded (``kernel``, ``constexprs``, ``num_warps``,
    ``num_stages``): an autotuned kernel runs at the config it ran there (:func:`pinned_autotune`), not at
    whatever its autotuner picks again in the profiled process.
    Returns ``(counters by case name, per-case errors from the child, batch failure or None)``;
    a batch failure is ``(one-line reason, fatal)`` where fatal means ncu cannot work on this machine.
    """
    spec_path, result_path = workdir / f"{tag}-cases.json", workdir / f"{tag}-child.json"
    pins_path = workdir / f"{tag}-pins.json"
    report, log_path = workdir / f"{tag}", workdir / f"{tag}-ncu.log"
    spec_path.write_text(json.dumps([s.to_json() for s in specs]))
    pins_path.write_text(json.dumps(pins or [[] for _ in specs]))
    cmd = [ncu, "--profile-from-start", "off", "--nvtx", "--clock-control", "none", "--cache-control", "all",
           "--metrics", ",".join(metrics), "-f", "-o", str(report),
           sys.executable, "-m", "iosim.kernels.profiler", str(spec_path), str(result_path), str(pins_path)]
    rc = _run_group(cmd, log_path, workdir, NCU_TIMEOUT_S)
    log = log_path.read_text(errors="replace")
    rep = report.with_suffix(".ncu-rep")
    if rc is None:
        return {}, {}, (f"ncu timed out after {NCU_TIMEOUT_S} s", False)
    if rc != 0 or not rep.exists():
        return {}, {}, ncu_failure(log, rc)
    out = subprocess.run([ncu, "--import", str(rep), "--csv", "--page", "raw", "--print-units", "base"],
                         capture_output=True, text=True, timeout=300)
    (workdir / f"{tag}-raw.csv").write_text(out.stdout)
    if out.returncode != 0:
        return {}, {}, ncu_failure(out.stdout + out.stderr, out.returncode)
    try:
        by_index = counters_by_case(parse_ncu_raw_csv(out.stdout))
    except ValueError as e:
        return {}, {}, (f"ncu output not understood: {one_line(e)}", False)
    child = json.loads(result_path.read_text()) if result_path.exists() else {}
    errors = {specs[int(i)].name: err for i, err in child.get("errors", {}).items()}
    return {specs[i].name: c for i, c in by_index.items() if i < len(specs)}, errors, None


@contextlib.contextmanager
def pinned_autotune(launches: list):
    """Autotuned kernels keep only the config of the recorded launch of the same kernel (its tile constexprs,
    warps and stages), so nothing is timed again and the profiled call runs what the timed one ran; a kernel
    with no matching config keeps its own choice."""
    from triton.runtime import autotuner

    prune = autotuner.Autotuner.prune_configs

    def matches(config, launch) -> bool:
        named = launch.get("constexprs") or {}
        return (all(named.get(k) == v for k, v in config.kwargs.items())
                and config.num_warps == launch.get("num_warps") and config.num_stages == launch.get("num_stages"))

    def pinned(self, kwargs, *args, **kw):
        configs = prune(self, kwargs, *args, **kw)
        mine = [x for x in launches if x.get("kernel") == self.base_fn.__name__]
        kept = [c for c in configs if any(matches(c, x) for x in mine)]
        return kept[:1] or configs

    autotuner.Autotuner.prune_configs = pinned
    try:
        yield
    finally:
        autotuner.Autotuner.prune_configs = prune


def ncu_child(spec_path: str, result_path: str, pins_path: str | None = None) -> int:
    """Runs under ncu: each case warmed up, then one call inside the profiled range and its NVTX tag."""
    torch = cuda_torch()
    specs = [CaseSpec.from_json(d) for d in json.loads(Path(spec_path).read_text())]
    pins = json.loads(Path(pins_path).read_text()) if pins_path else [[] for _ in specs]
    errors = {}
    for i, spec in enumerate(specs):
        torch.cuda.empty_cache()
        try:
            fn = make_call(torch, spec, make_inputs(torch, spec))
            if pins[i]:
                call = fn

                def fn(call=call, launches=pins[i]):
                    with pinned_autotune(launches):
                        call()
            fn()  # warm-up, outside the profiled range
            torch.cuda.synchronize()
            torch.cuda.profiler.start()
            # push/pop tags this thread's kernels; start/end is process-wide (autograd's thread too)
            range_id = torch.cuda.nvtx.range_start(CASE_TAG.format(i))
            torch.cuda.nvtx.range_push(CASE_TAG.format(i))
            try:
                fn()
                torch.cuda.synchronize()
            finally:
                torch.cuda.nvtx.range_pop()
                torch.cuda.nvtx.range_end(range_id)
                torch.cuda.profiler.stop()
        except Exception as e:
            errors[i] = "out of memory" if isinstance(e, torch.cuda.OutOfMemoryError) else one_line(e)
        fn = None
        Path(result_path).write_text(json.dumps({"errors": errors, "done": i + 1}))
    return 0


if __name__ == "__main__":
    sys.exit(ncu_child(*sys.argv[1:4]))


def probe_cli(argv, prog: str, doc: str, stem: str, child, probe, report) -> int:
    """A probe's command line: ``--out DIR`` runs ``probe(DIR)`` (which profiles ``--child`` under ncu)
    and prints ``report(data)``'s lines; ``--child`` is the profiled process. A failure is one line on
    stderr and exit 2, and a ``timeout`` ending us ends ncu's process group too."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, help=f"folder for {stem}.json, ncu's log and CSV")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the process ncu profiles
    args = parser.parse_args(argv)
    if args.child:
        return child()
    if args.out is None:
        parser.error("--out is required")
    signal.signal(signal.SIGTERM, on_terminate)
    try:
        data = probe(args.out)
    except (HarnessError, ValueError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    for line in report(data):
        print(line)
    print(f"wrote {args.out / (stem + '.json')}")
    return 0
