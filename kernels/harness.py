"""Measure attention calls on a GPU: do_bench timings and Nsight Compute counters, into a measurement file.

Every case (:mod:`iosim.kernels.cases`) is one attention call (forward, or forward + backward) of
one implementation: ours (``flash2``, ``flash1``, ``standard`` in Triton), PyTorch eager
(``standard_eager``: matmul, scale, softmax, matmul), PyTorch's SDPA backends (``sdpa_flash``,
``sdpa_cudnn``) as references, or a user's Triton kernel file (``kernel``: ``path.py:fn``, its
launches recorded during the first call, :mod:`iosim.kernels.user_kernel`). Timing runs in this process (:func:`iosim.kernels.timing.time_fn`)
after one untimed call that compiles; counters come from one more call of each case under ncu
(:mod:`iosim.kernels.profiler`), a batch of cases per ncu start.

No ncu, or ncu that may not read counters (``ERR_NVGPUCTRPERM``), gives a timing-only file whose
cases carry ``counters: null`` and the reason in ``counters_error``; no CUDA GPU raises
:class:`HarnessError`. Results are rewritten atomically after every batch, so a run killed at a time
limit leaves every finished batch on disk.

    python3 -m iosim.kernels.harness --out DIR [--grid default|smoke|h200|foreign] [--no-ncu]
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from iosim.kernels.cases import GRIDS, OURS, CaseSpec, kernel_case, manifest_cases
from iosim.kernels.device import HarnessError, cuda_torch, one_line
from iosim.kernels.inputs import kernel_module, make_call, make_inputs, run_config_of
from iosim.kernels.profiler import find_ncu, metrics_for, ncu_version, on_terminate, profile_batch
from iosim.kernels.timing import time_fn
from iosim.kernels.user_kernel import recording_launches
from iosim.measure.measurement import Case, Measurement, Provenance, dump_measurement
from iosim.schedule.tiling import launched_tilings

__all__ = ["BATCH_SIZE", "GRIDS", "HarnessError", "kernel_case", "manifest_cases", "measure", "main", "provenance",
           "time_case", "user_run_config"]

BATCH_SIZE = 12  # cases per ncu start: the first batch is the reference and SDPA cases


def _plain(data):
    """Tuples to lists, as JSON would: so that a case equals itself read back."""
    return json.loads(json.dumps(data))


def user_run_config(spec: CaseSpec, launches: list[dict]) -> dict:
    """A user's kernel's run_config: the modelled ``algo``, the problem, and the tiling of its main
    forward launch (``backward_tiling``: of its main backward launch; ``preprocess_tiling``: its backward
    preprocess's rows per CTA and warps), read off the recorded launches."""
    config = spec.run_config()
    config.update(launched_tilings(launches, spec.problem.seq_q, spec.problem.batch * spec.problem.heads, spec.backward))
    return _plain(config)


def _ran_with(spec: CaseSpec, tensors, recorded: list[dict]) -> tuple[dict, list]:
    """The configuration and launches our kernel reports for the call just made; for a user's kernel,
    what its recorded launches say; the case's own for the others."""
    if spec.impl == "kernel":
        return user_run_config(spec, recorded), _plain(recorded)
    if spec.impl not in OURS:
        return spec.run_config(), []
    return _plain(run_config_of(spec, tensors)), _plain(list(kernel_module(spec).LAUNCHES))


def _skeleton(spec: CaseSpec, error: str) -> Case:
    return Case(name=spec.name, impl=spec.impl, pass_=spec.pass_, run_config=_plain(spec.run_config()), error=error,
                kernel=spec.kernel)


def time_case(spec: CaseSpec, warmup_ms: float, rep_ms: float) -> Case:
    """Time one case in this process; an out-of-memory or failing case comes back with ``error`` set."""
    torch = cuda_torch()
    torch.cuda.empty_cache()  # the previous case's tensors are gone by now
    try:
        tensors = make_inputs(torch, spec)
        fn = make_call(torch, spec, tensors)
        if spec.kernel:  # a user's kernel may be autotuned: its first call times every config; record a later one
            fn()
            torch.cuda.synchronize()
        with recording_launches() as recorded:
            fn()  # compile, and check that it runs
            torch.cuda.synchronize()
        run_config, launches = _ran_with(spec, tensors, recorded)
        timing = time_fn(fn, warmup_ms, rep_ms)
    except torch.cuda.OutOfMemoryError:
        return _skeleton(spec, "out of memory")
    except Exception as e:  # a case that fails is recorded, and the grid goes on
        return _skeleton(spec, one_line(e))
    return Case(name=spec.name, impl=spec.impl, pass_=spec.pass_, run_config=run_config, timing=timing,
                launches=tuple(launches), kernel=spec.kernel)


def provenance(ncu: str | None, counters: bool, metrics_missing=None) -> Provenance:
    """Where and with what the measurement ran: GPU, driver, CUDA, torch, triton, ncu, date, command, host."""
    torch = cuda_torch()
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    driver = None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        driver = out.stdout.strip().splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return Provenance(
        gpu_name=torch.cuda.get_device_name(), driver=driver, cuda=torch.version.cuda, torch=str(torch.__version__),
        triton=triton_version, ncu=ncu,
        clock_control="none" if counters else None, cache_control="all" if counters else None,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"), command=tuple(getattr(sys, "orig_argv", sys.argv)),
        hostname=socket.gethostname(), ncu_metrics_missing=metrics_missing,
    )


def _tflops(spec: CaseSpec, case: Case) -> str:
    if case.timing is None:
        return case.error or "no timing"
    return f"{case.timing.median_s * 1e3:.3f} ms, {spec.flops() / case.timing.median_s / 1e12:.0f} TFLOP/s"


def with_counters(case: Case, counters: dict, child_errors: dict, batch_failure: str | None) -> Case:
    """The case with its counters, or with the one-line reason it has none."""
    reason = batch_failure or child_errors.get(case.name)  # a case that failed under ncu: partial counts
    if reason is None and case.name not in counters:
        reason = "ncu profiled no kernel of this case"
    return replace(case, counters=None if reason else counters[case.name], counters_error=reason)


def measure(cases, out_path, *, ncu=True, warmup_ms=25, rep_ms=100, progress=print,
            batch_size=BATCH_SIZE) -> Measurement:
    """Time every case, read its counters under ncu (unless ``ncu=False``), and write ``out_path``.

    The file (and its ``.csv`` twin) is rewritten atomically after each batch. Returns the measurement.
    """
    cases = list(cases)
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise HarnessError(f"case names must be unique; {dup!r} appears twice")
    torch = cuda_torch()
    ncu_path = find_ncu() if ncu else None
    no_counters = None if ncu_path else ("counters not requested (--no-ncu)" if not ncu else "ncu not found")
    metrics, missing = metrics_for(ncu_path) if ncu_path else ((), None)
    prov = provenance(ncu_version(ncu_path) if ncu_path else None, counters=ncu_path is not None,
                      metrics_missing=missing)
    workdir = Path(tempfile.mkdtemp(prefix="iosim-ncu-"))
    progress(f"{len(cases)} cases on {prov.gpu_name}; ncu: {ncu_path or no_counters}; scratch {workdir}")
    if missing:
        progress(f"ncu lacks {len(missing)} requested metrics: {', '.join(missing)}")
    done: list[Case] = []
    for b in range(0, len(cases), batch_size):
        batch = cases[b:b + batch_size]
        timed = []
        for i, spec in enumerate(batch, start=b + 1):
            t0 = time.perf_counter()
            case = time_case(spec, warmup_ms, rep_ms)
            progress(f"[{i}/{len(cases)}] {spec.name}: {_tflops(spec, case)} ({time.perf_counter() - t0:.1f} s)")
            timed.append(case)
        ok = [s for s, c in zip(batch, timed) if c.error is None]
        counters, child_errors, failure = {}, {}, None
        if no_counters is None and ok:
            t0 = time.perf_counter()
            torch.cuda.empty_cache()
            pins = [list(c.launches or ()) for c in timed if c.error is None]  # autotuned kernels as they ran
            counters, child_errors, failure = profile_batch(ok, ncu_path, workdir, f"batch{b // batch_size:02d}",
                                                            metrics, pins)
            progress(f"  ncu, {len(ok)} cases: {failure[0] if failure else 'ok'} ({time.perf_counter() - t0:.1f} s)")
            if failure and failure[1]:
                no_counters = failure[0]  # e.g. no permission: later batches would fail the same way
        for case in timed:
            if case.error is None:
                done.append(with_counters(case, counters, child_errors, no_counters or (failure and failure[0])))
            else:
                done.append(case)
        dump_measurement(Measurement(provenance=prov, cases=tuple(done)), out_path)
    return Measurement(provenance=prov, cases=tuple(done))


def _problem_arg(text: str) -> dict:
    """``batch=1,heads=8,causal=1,dtype=bf16`` as Problem keywords (numbers as int, causal as bool, dtype and
    causal_align as given)."""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        out[key] = value == "1" or value.lower() == "true" if key == "causal" else (
            value if key in ("dtype", "causal_align") else int(value))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m iosim.kernels.harness", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for measurements.json and .csv")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="default", help="which case list to measure")
    parser.add_argument("--kernel", help="measure one user kernel instead of a grid: path/to/file.py:fn")
    parser.add_argument("--algo", default="flash2", help="the schedule that models --kernel")
    parser.add_argument("--pass", dest="pass_", default="fwd", choices=["fwd", "fwd_bwd"], help="--kernel's pass")
    parser.add_argument("--problem", default="", help="--kernel's problem: batch=1,heads=8,seq_q=4096,causal=1,...")
    parser.add_argument("--no-ncu", action="store_true", help="timings only, no Nsight Compute counters")
    parser.add_argument("--warmup-ms", type=float, default=25, help="do_bench warm-up budget, ms")
    parser.add_argument("--rep-ms", type=float, default=100, help="do_bench measuring budget, ms")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="cases per ncu start")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, on_terminate)
    try:
        cases = [kernel_case(args.kernel, args.algo, args.pass_, **_problem_arg(args.problem))] if args.kernel \
            else GRIDS[args.grid]()
        m = measure(cases, args.out / "measurements.json", ncu=not args.no_ncu,
                    warmup_ms=args.warmup_ms, rep_ms=args.rep_ms, batch_size=args.batch_size)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = sum(c.error is not None for c in m.cases)
    counted = sum(c.counters is not None for c in m.cases)
    print(f"wrote {args.out / 'measurements.json'}: {len(m.cases)} cases, {failed} failed, {counted} with counters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
