"""Timing on the GPU: ``do_bench`` with the L2 flushed (every measurement), CUDA events without a flush (L2-resident
microbenchmarks), and one call at a time after an idle pause (as Nsight Compute replays a kernel)."""
from __future__ import annotations

import statistics
import time

from iosim.kernels.device import cuda_torch
from iosim.measure.measurement import Timing


def time_fn(fn, warmup_ms: float = 25, rep_ms: float = 100) -> Timing:
    """The one timing primitive: ``triton.testing.do_bench`` (L2 flushed before each run), in seconds.

    Warm-up and repetitions are budgets in milliseconds; the result holds the median and the 20th
    and 80th percentiles.
    """
    import triton.testing

    ms = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    return Timing(median_s=ms[0] / 1e3, p20_s=ms[1] / 1e3, p80_s=ms[2] / 1e3, warmup_ms=warmup_ms, rep_ms=rep_ms)


def time_warm(fn, warmup: int = 3, reps: int = 25) -> float:
    """Median seconds of ``fn`` between CUDA events, with NO L2 flush: what the warm-up calls left in
    the L2 stays there. Only for microbenchmarks that must hit the L2 (``do_bench`` would flush it)."""
    torch = cuda_torch()
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)  # elapsed_time is in ms
    return statistics.median(times)


FLUSH_BYTES = 256 * 1024 * 1024  # what do_bench zeroes to flush the L2


def time_alone(fn, reps: int = 9, pause_s: float = 0.05) -> float:
    """Median seconds of ``fn`` called alone, between CUDA events: the L2 flushed, then the GPU left idle for
    ``pause_s`` before each call, as Nsight Compute runs the one call it profiles; ``do_bench`` (:func:`time_fn`) calls
    it back to back. Some kernels run 7-15 % faster alone (docs/validation.md): this says how much, beside it."""
    torch = cuda_torch()
    flush = torch.empty(FLUSH_BYTES, dtype=torch.int8, device="cuda")
    fn()
    times = []
    for _ in range(reps):
        flush.zero_()
        torch.cuda.synchronize()
        time.sleep(pause_s)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)
