"""Measure attention calls on a GPU: do_bench timings and Nsight Compute counters, into a measurement file.

Every case is one attention call (forward, or forward + backward) of one implementation: ours
(``flash2``, ``flash1``, ``standard`` in Triton), PyTorch eager (``standard_eager``: matmul, scale,
softmax, matmul) or PyTorch's SDPA backends (``sdpa_flash``, ``sdpa_cudnn``) as references.

Timing runs in this process: ``triton.testing.do_bench`` (L2 flushed before each run, quantiles
0.5/0.2/0.8) after one untimed call that compiles. Counters come from ONE more call of each case in
a child process under ``ncu --profile-from-start off --nvtx``: the child warms each case up outside
the profiled range, then wraps one call in ``cudaProfilerStart``/``Stop`` and an NVTX range
``iosim-case-<i>``. A whole batch of cases shares one ncu start (slow: Python, torch and ncu itself).

Reading ncu's results: ``ncu --import R --csv --page raw --print-units base`` prints one row per
kernel with every collected metric (bytes, ns, percent) and, since ``--nvtx`` was on, the NVTX
ranges the kernel ran in; the ``iosim-case-<i>`` tag there says which case a kernel belongs to. We
chose this text export over NVIDIA's ``ncu_report`` module (``<ncu>/extras/python``, which does
import on the GPU machine) because the export is plain text that the tests parse from a committed
fixture on machines without ncu or its compiled ``_ncu_report.so``, and one subprocess call replaces
a dependency on a module found by path at run time. NVIDIA's ``nsight-python`` (which drives ncu
from Python and returns data frames) was the other candidate: it is not on the GPU machine, which
cannot install packages, and it profiles annotated Python functions where we need one ncu start
for a whole batch of cases. The price of the text export is unit handling (a small table) and
thousands separators, both covered by the fixture, which is cut from a real export (H200,
ncu 2025.3.1, 2026-11-25).

No ncu, or ncu that may not read counters (``ERR_NVGPUCTRPERM``), gives a timing-only file whose
cases carry ``counters: null`` and the reason in ``counters_error``; no CUDA GPU raises
:class:`HarnessError`. Results are rewritten atomically after every batch, so a run killed at a time
limit leaves every finished batch on disk.

    python3 -m iosim.kernels.harness --out DIR [--grid default|smoke] [--no-ncu]
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from iosim.measure.measurement import Case, Counters, KernelCounters, Measurement, Provenance, Timing, dump_measurement

OURS = ("flash2", "flash1", "standard")
IMPLS = OURS + ("standard_eager", "sdpa_flash", "sdpa_cudnn")
# Kept short: every metric group may add a replay pass of every kernel.
NCU_METRICS = (
    "dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum", "lts__t_sector_hit_rate.pct",
    "gpu__time_duration.sum", "launch__registers_per_thread",
    "launch__shared_mem_per_block_static", "launch__shared_mem_per_block_dynamic",
)
CASE_TAG = "iosim-case-{}"
_TAG_RE = re.compile(r"iosim-case-(\d+)")
BATCH_SIZE = 12  # cases per ncu start: the first batch is the reference and SDPA cases
NCU_TIMEOUT_S = 240  # per batch; a hung profiler costs one batch, not the session


class HarnessError(RuntimeError):
    """The harness cannot run at all (no GPU, bad case list); the message is one line."""


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class CaseSpec:
    """What to measure: an implementation, a problem, tiling overrides for our kernels, and the pass."""

    impl: str
    pass_: str = "fwd"  # or "fwd_bwd"
    batch: int = 4
    heads: int = 16
    kv_heads: int | None = None
    seq: int = 4096
    head_dim: int = 64
    dtype: str = "fp16"
    causal: bool = False
    tiling: dict = field(default_factory=dict)  # overrides: block_m, block_n, warps, stages, grid_order
    name: str = ""

    def __post_init__(self):
        if self.kv_heads is None:
            object.__setattr__(self, "kv_heads", self.heads)
        if self.impl not in IMPLS:
            raise HarnessError(f"impl: must be one of {', '.join(IMPLS)}, got {self.impl!r}")
        if self.pass_ not in ("fwd", "fwd_bwd"):
            raise HarnessError(f"pass: must be fwd or fwd_bwd, got {self.pass_!r}")
        if self.tiling and self.impl not in OURS:
            raise HarnessError(f"tiling: only our kernels take tiling overrides, not {self.impl}")
        if not self.name:
            object.__setattr__(self, "name", self._default_name())

    def _default_name(self) -> str:
        parts = [self.impl, self.pass_, self.dtype, f"b{self.batch}h{self.heads}"]
        if self.kv_heads != self.heads:
            parts[-1] += f"kv{self.kv_heads}"
        parts += [f"n{self.seq}", f"d{self.head_dim}"]
        if self.causal:
            parts.append("causal")
        short = {"block_m": "bm", "block_n": "bn", "warps": "w", "stages": "s"}
        tiling = "".join(f"{short[k]}{v}" for k, v in sorted(self.tiling.items()) if k in short)
        if tiling:
            parts.append(tiling)
        if "grid_order" in self.tiling:
            parts.append(self.tiling["grid_order"])
        return "-".join(parts)

    @property
    def backward(self) -> bool:
        return self.pass_ == "fwd_bwd"

    def flops(self) -> float:
        """4·B·H·N²·d, halved when causal; the backward pass counts 2.5× the forward."""
        f = 4.0 * self.batch * self.heads * self.seq * self.seq * self.head_dim / (2 if self.causal else 1)
        return f * 3.5 if self.backward else f

    def problem(self) -> dict:
        return {"batch": self.batch, "heads": self.heads, "kv_heads": self.kv_heads, "seq_q": self.seq,
                "seq_k": self.seq, "head_dim": self.head_dim, "dtype": self.dtype, "causal": self.causal,
                "backward": self.backward}

    def to_json(self) -> dict:
        return asdict(self)


REF_TILING = {"block_m": 128, "block_n": 64, "warps": 4}  # the tiling of the reference measurements


def default_grid() -> list[CaseSpec]:
    """The H100 data set: 62 cases, ≈ 4 minutes of device time with counters (3-5; Triton's cache cold or warm).

    B·H is 64 up to N = 8192; past that the batch shrinks so one call stays ≲ 100 ms (a forward at
    N = 65536, d = 64, B·H = 8 is 8.8 TFLOP, ≈ 30 ms at 300 TFLOP/s). ``standard`` keeps the N×N
    scores in HBM (B·H·N² elements twice: 8.6 GB fp16 at B·H = 64, N = 8192), so it stops at
    N = 16384 with B·H = 16; eager PyTorch keeps three N×N tensors and stops at N = 8192.
    The reference cases (h100-measured.md) come first so that they land even if the run is cut short.
    """
    S = CaseSpec
    ref = dict(tiling=REF_TILING)
    cases = [
        S("flash2", seq=1024, **ref), S("flash2", seq=4096, **ref),
        S("standard_eager", seq=1024), S("standard_eager", seq=4096),
        S("sdpa_flash", seq=1024), S("sdpa_flash", seq=4096), S("sdpa_flash", "fwd_bwd", seq=4096),
        S("sdpa_flash", seq=4096, batch=2, head_dim=128),
        S("sdpa_cudnn", seq=1024), S("sdpa_cudnn", seq=4096), S("sdpa_cudnn", "fwd_bwd", seq=4096),
        S("sdpa_cudnn", seq=4096, batch=2, head_dim=128),
    ]
    # flash2 forward: N sweep, both grid orders, causal, d = 128, bf16, GQA.
    cases += [S("flash2", seq=n, **ref) for n in (512, 2048, 8192)]
    cases += [S("flash2", seq=n, batch=b, heads=h, **ref) for n, b, h in ((16384, 2, 16), (32768, 1, 16), (65536, 1, 8))]
    cases += [S("flash2", seq=n, batch=b, tiling=REF_TILING | {"grid_order": "heads"})
              for n, b in ((1024, 4), (4096, 4), (16384, 2))]
    cases += [S("flash2", seq=n, batch=b, causal=True) for n, b in ((1024, 4), (4096, 4), (16384, 2))]
    cases += [S("flash2", seq=n, batch=b, head_dim=128) for n, b in ((1024, 4), (4096, 4), (16384, 1))]
    cases += [S("flash2", seq=4096, dtype="bf16"), S("flash2", seq=4096, dtype="bf16", head_dim=128)]
    cases += [S("flash2", seq=4096, kv_heads=4), S("flash2", seq=16384, batch=2, kv_heads=2)]
    # flash2 forward + backward.
    cases += [S("flash2", "fwd_bwd", seq=n, batch=b, heads=h) for n, b, h in
              ((1024, 4, 16), (4096, 4, 16), (16384, 1, 16), (32768, 1, 8))]
    cases += [S("flash2", "fwd_bwd", seq=4096, causal=True), S("flash2", "fwd_bwd", seq=4096, head_dim=128),
              S("flash2", "fwd_bwd", seq=4096, dtype="bf16"), S("flash2", "fwd_bwd", seq=4096, kv_heads=4)]
    # flash1.
    # flash1 runs one CTA per (batch, head), as FlashAttention-1 did: B·H = 64 CTAs use half the
    # SMs, and a call at N = 4096 already takes ~1 s, so its sweep stops there.
    cases += [S("flash1", seq=n) for n in (512, 1024, 2048, 4096)]
    cases += [S("flash1", seq=4096, causal=True), S("flash1", seq=4096, head_dim=128)]
    cases += [S("flash1", "fwd_bwd", seq=1024), S("flash1", "fwd_bwd", seq=4096),
              S("flash1", "fwd_bwd", seq=4096, causal=True)]
    # standard (Triton, scores in HBM).
    cases += [S("standard", seq=n, batch=b) for n, b in ((512, 4), (1024, 4), (4096, 4), (8192, 4))]
    cases += [S("standard", seq=16384, batch=1), S("standard", seq=4096, causal=True),
              S("standard", seq=4096, head_dim=128)]
    cases += [S("standard", "fwd_bwd", seq=1024), S("standard", "fwd_bwd", seq=4096)]
    # eager PyTorch (no mask: the simulator's standard_eager is four kernels).
    cases += [S("standard_eager", seq=8192), S("standard_eager", seq=4096, dtype="bf16"),
              S("standard_eager", "fwd_bwd", seq=1024), S("standard_eager", "fwd_bwd", seq=4096)]
    return cases


def smoke_grid() -> list[CaseSpec]:
    """A few small cases (seconds) to check that the harness and ncu work on a machine."""
    S = CaseSpec
    small = dict(batch=1, heads=4, seq=512)
    return [S("flash2", **small, tiling=REF_TILING), S("flash2", "fwd_bwd", **small), S("flash1", **small),
            S("standard", **small), S("standard_eager", **small), S("standard_eager", "fwd_bwd", **small),
            S("sdpa_flash", **small), S("sdpa_cudnn", "fwd_bwd", **small)]


GRIDS = {"default": default_grid, "smoke": smoke_grid}


# --------------------------------------------------------------------------- ncu output (pure)

_UNIT_SCALE = {  # ncu unit -> bytes or seconds; --print-units base gives byte and ns
    "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "Tbyte": 1e12,
    "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0,
    "nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0,
}
_COUNTER_FIELDS = {  # KernelCounters field: ncu metric
    "dram_read_bytes": "dram__bytes_read.sum",
    "dram_write_bytes": "dram__bytes_write.sum",
    "l2_bytes": "lts__t_bytes.sum",
    "l2_hit_rate": "lts__t_sector_hit_rate.pct",
    "duration_s": "gpu__time_duration.sum",
}


def _number(text: str, unit: str) -> float | None:
    """An ncu value in base units (bytes, seconds, percent); ``None`` for ``n/a`` or empty."""
    text = text.strip().replace(",", "")
    if not text or text.lower() == "n/a":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value * _UNIT_SCALE.get(unit.split("/")[0].strip(), 1.0)


def _triple(text: str) -> tuple[int, int, int] | None:
    nums = re.findall(r"\d+", text or "")
    return tuple(int(n) for n in nums) if len(nums) == 3 else None


def parse_ncu_raw_csv(text: str) -> list[dict]:
    """Rows of ``ncu --import R --csv --page raw``: one dict per kernel, metrics in base units.

    The raw page is a header row (``"ID","Process ID","Process Name","Host Name"``, two NVTX columns
    when ``--nvtx`` was on, ``"Kernel Name"``, …, ``"Block Size","Grid Size"``, …, then every collected
    metric by name), a row of units (empty for the non-metric columns; ``byte``, ``ns``, ``%``,
    ``byte/block``) and one row per profiled kernel, with thousands separators (``"3,063,648"``).
    Lines before the header (``==PROF==`` messages) are skipped. Each dict has ``id``, ``name``,
    ``nvtx`` (the NVTX columns joined), ``grid``, ``block`` and every metric, bytes and seconds.
    """
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID",')), None)
    if start is None:
        raise ValueError('no CSV header (a line starting with "ID") in the ncu export')
    rows = list(csv.reader(io.StringIO("\n".join(lines[start:]))))
    header, body = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    for needed in ("Kernel Name", *_COUNTER_FIELDS.values()):
        if needed not in col:
            raise ValueError(f"the ncu export has no {needed!r} column")
    units = [""] * len(header)
    if body and not body[0][0].strip():  # the units row has an empty ID
        units, body = body[0], body[1:]
    nvtx_cols = [i for i, name in enumerate(header) if "Range" in name]
    out = []
    for row in body:
        if len(row) != len(header) or not row[0].strip().isdigit():
            continue
        rec = {"id": int(row[0]), "name": row[col["Kernel Name"]], "nvtx": " ".join(row[i] for i in nvtx_cols),
               "grid": _triple(row[col["Grid Size"]]) if "Grid Size" in col else None,
               "block": _triple(row[col["Block Size"]]) if "Block Size" in col else None}
        for i, name in enumerate(header):
            if "__" in name:
                rec[name] = _number(row[i], units[i])
        out.append(rec)
    return out


def kernel_counters(row: dict) -> KernelCounters:
    """One parsed ncu row as :class:`KernelCounters`; a missing counter is a ValueError naming it."""
    values = {}
    for name, metric in _COUNTER_FIELDS.items():
        if row.get(metric) is None:
            raise ValueError(f"ncu reported no {metric} for kernel {row.get('name')!r}")
        values[name] = float(row[metric])
    values["l2_hit_rate"] = min(100.0, max(0.0, values["l2_hit_rate"]))
    regs = row.get("launch__registers_per_thread")
    static, dynamic = row.get("launch__shared_mem_per_block_static"), row.get("launch__shared_mem_per_block_dynamic")
    shared = None if static is None and dynamic is None else int(round((static or 0) + (dynamic or 0)))
    return KernelCounters(name=row["name"], grid=row.get("grid"), block=row.get("block"),
                          registers=None if regs is None else int(round(regs)), shared_bytes=shared, **values)


def counters_by_case(rows: list[dict]) -> dict[int, Counters]:
    """``{case index: Counters summed over its kernels}`` from parsed rows, by their NVTX tags.

    The child tags each case with an NVTX range ``iosim-case-<i>``. The autograd engine launches
    backward kernels from its own thread, outside the main thread's push/pop range, and their
    start/end range may be missing too; such a kernel belongs to the case of the kernel before it,
    because cases run one at a time, each between cudaProfilerStart and Stop, and each begins with
    a tagged forward kernel. An untagged first kernel is a ValueError.
    """
    kernels: dict[int, list[KernelCounters]] = {}
    case = None
    for row in sorted(rows, key=lambda r: r["id"]):
        m = _TAG_RE.search(row["nvtx"])
        if m is not None:
            case = int(m.group(1))
        elif case is None:
            raise ValueError(f"kernel {row['id']} ({row['name'][:80]!r}) precedes every iosim-case NVTX range")
        kernels.setdefault(case, []).append(kernel_counters(row))
    return {i: Counters.from_kernels(ks) for i, ks in kernels.items()}


def ncu_failure(log: str, returncode: int) -> tuple[str, bool]:
    """A one-line reason why ncu gave no counters, and whether later runs would fail the same way."""
    if "ERR_NVGPUCTRPERM" in log:
        return "ncu: no permission to read GPU performance counters (ERR_NVGPUCTRPERM)", True
    for marker in ("LibraryNotLoaded", "Failed to initialize the profiler", "not supported on this device"):
        if marker in log:
            line = next(line for line in log.splitlines() if marker in line)
            return f"ncu: profiler unavailable: {line.strip()[:200]}", True
    errors = [line.strip() for line in log.splitlines() if "==ERROR==" in line]
    if errors:
        return f"ncu: {errors[-1][:240]}", False
    if "No kernels were profiled" in log:
        return "ncu: no kernels were profiled", False
    return f"ncu exited with code {returncode}", False


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:240] if text else ''}".rstrip(": ")


# --------------------------------------------------------------------------- running a case (torch)


def _torch():
    try:
        import torch
    except ImportError as e:
        raise HarnessError(f"no CUDA GPU: torch is not importable ({e})") from None
    if not torch.cuda.is_available():
        raise HarnessError(f"no CUDA GPU: torch {torch.__version__} sees no CUDA device")
    return torch


def make_inputs(torch, spec: CaseSpec):
    """Random q, k, v (and dO) from a fixed seed: never zeros, whose products the GPU may shortcut."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[spec.dtype]
    gen = torch.Generator(device="cuda").manual_seed(0)
    def rand(heads):
        return torch.randn(spec.batch, heads, spec.seq, spec.head_dim, dtype=dtype, device="cuda", generator=gen)
    q, k, v = rand(spec.heads), rand(spec.kv_heads), rand(spec.kv_heads)
    do = rand(spec.heads) if spec.backward else None
    if spec.backward:
        for t in (q, k, v):
            t.requires_grad_(True)
    return q, k, v, do


def make_forward(torch, spec: CaseSpec):
    """``f(q, k, v) -> o`` for the case's implementation."""
    if spec.impl in OURS:
        import iosim.kernels as kernels
        mod = kernels.ALGOS[spec.impl]
        return lambda q, k, v: mod.attention(q, k, v, causal=spec.causal, **spec.tiling)
    if spec.impl == "standard_eager":
        if spec.causal or spec.kv_heads != spec.heads:
            raise HarnessError("standard_eager: only non-causal, non-GQA cases (four kernels, no mask)")
        scale = 1.0 / math.sqrt(spec.head_dim)
        def eager(q, k, v):
            s = q @ k.transpose(-1, -2)
            s = s * scale
            p = torch.softmax(s, -1)
            return p @ v
        return eager
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backend = {"sdpa_flash": SDPBackend.FLASH_ATTENTION, "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION}[spec.impl]
    gqa = {"enable_gqa": True} if spec.kv_heads != spec.heads else {}
    def sdpa(q, k, v):
        with sdpa_kernel(backend):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=spec.causal, **gqa)
    return sdpa


def make_call(torch, spec: CaseSpec, tensors):
    """The timed function: one attention call; with the backward, a fresh graph each time."""
    forward = make_forward(torch, spec)
    q, k, v, do = tensors
    if not spec.backward:
        return lambda: forward(q, k, v)
    # autograd.grad rather than o.backward: no accumulation into .grad, so no extra add kernels.
    return lambda: torch.autograd.grad(forward(q, k, v), (q, k, v), do)


def _plain(data):
    """Tuples to lists, as JSON would: so that a case equals itself read back."""
    return json.loads(json.dumps(data))


def _run_config(spec: CaseSpec, tensors) -> tuple[dict, list]:
    if spec.impl in OURS:
        import iosim.kernels as kernels
        mod = kernels.ALGOS[spec.impl]
        q, k, v, _ = tensors
        config = mod.run_config(q, k, v, spec.causal, spec.backward, **spec.tiling)
        return _plain(config), _plain(list(mod.LAUNCHES))
    algo = None if spec.impl.startswith("sdpa") else spec.impl
    tiling = None if algo is None else {}
    return {"algo": algo, "problem": spec.problem(), "tiling": tiling}, []


def _skeleton(spec: CaseSpec, error: str | None = None) -> Case:
    run_config = {"algo": None if spec.impl.startswith("sdpa") else spec.impl, "problem": spec.problem(),
                  "tiling": None if spec.impl.startswith("sdpa") else dict(spec.tiling)}
    return Case(name=spec.name, impl=spec.impl, pass_=spec.pass_, run_config=run_config, error=error)


def time_fn(fn, warmup_ms: float = 25, rep_ms: float = 100) -> Timing:
    """The one timing primitive: ``triton.testing.do_bench`` (L2 flushed before each run), in seconds."""
    import triton.testing
    ms = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    return Timing(median_s=ms[0] / 1e3, p20_s=ms[1] / 1e3, p80_s=ms[2] / 1e3, warmup_ms=warmup_ms, rep_ms=rep_ms)


def time_case(spec: CaseSpec, warmup_ms: float, rep_ms: float) -> Case:
    """Time one case in this process; an out-of-memory or failing case comes back with ``error`` set."""
    torch = _torch()
    torch.cuda.empty_cache()  # the previous case's tensors are gone by now
    try:
        tensors = make_inputs(torch, spec)
        fn = make_call(torch, spec, tensors)
        fn()  # compile, and check that it runs
        torch.cuda.synchronize()
        run_config, launches = _run_config(spec, tensors)
        timing = time_fn(fn, warmup_ms, rep_ms)
    except torch.cuda.OutOfMemoryError:
        return _skeleton(spec, "out of memory")
    except Exception as e:  # a case that fails is recorded, and the grid goes on
        return _skeleton(spec, one_line(e))
    return Case(name=spec.name, impl=spec.impl, pass_=spec.pass_, run_config=run_config, timing=timing,
                launches=tuple(launches))


# --------------------------------------------------------------------------- ncu


def find_ncu() -> str | None:
    found = shutil.which("ncu")
    if found:
        return found
    for pattern in ("/opt/nvidia/nsight-compute/*/ncu", "/usr/local/cuda/bin/ncu"):
        hits = sorted(Path("/").glob(pattern.lstrip("/")))
        if hits:
            return str(hits[-1])
    return None


def _ncu_version(ncu: str) -> str | None:
    try:
        out = subprocess.run([ncu, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"Version\s+([\w.]+)", out)
    return m.group(1) if m else (out.strip().splitlines() or [None])[-1]


_CHILD_GROUPS: set[int] = set()  # process groups of running ncu children, killed if we are terminated


def _run_group(cmd: list[str], log_path: Path, timeout: float) -> int | None:
    """Run ``cmd`` in its own process group, output to ``log_path``; ``None`` if it timed out (then killed)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _CHILD_GROUPS.add(proc.pid)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
        finally:
            _CHILD_GROUPS.discard(proc.pid)


def _on_terminate(signum, frame):
    """SIGTERM (a ``timeout`` running out): end our ncu child's group too, then exit; written batches stay."""
    for pgid in list(_CHILD_GROUPS):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    raise SystemExit(128 + signum)


def profile_batch(specs: list[CaseSpec], ncu: str, workdir: Path, tag: str
                  ) -> tuple[dict[str, Counters], dict[str, str], tuple[str, bool] | None]:
    """Counters for each case of a batch from one ncu run.

    Returns ``(counters by case name, per-case errors from the child, batch failure or None)``;
    a batch failure is ``(one-line reason, fatal)`` where fatal means ncu cannot work on this machine.
    """
    spec_path, result_path = workdir / f"{tag}-cases.json", workdir / f"{tag}-child.json"
    report, log_path = workdir / f"{tag}", workdir / f"{tag}-ncu.log"
    spec_path.write_text(json.dumps([s.to_json() for s in specs]))
    cmd = [ncu, "--profile-from-start", "off", "--nvtx", "--clock-control", "none", "--cache-control", "all",
           "--metrics", ",".join(NCU_METRICS), "-f", "-o", str(report),
           sys.executable, "-m", "iosim.kernels.harness", "--ncu-child", str(spec_path), str(result_path)]
    rc = _run_group(cmd, log_path, NCU_TIMEOUT_S)
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


def _ncu_child(spec_path: str, result_path: str) -> int:
    """Runs under ncu: each case warmed up, then one call inside the profiled range and its NVTX tag."""
    torch = _torch()
    specs = [CaseSpec(**d) for d in json.loads(Path(spec_path).read_text())]
    errors = {}
    for i, spec in enumerate(specs):
        torch.cuda.empty_cache()
        try:
            fn = make_call(torch, spec, make_inputs(torch, spec))
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


# --------------------------------------------------------------------------- provenance and the loop


def provenance(ncu_version: str | None, counters: bool) -> Provenance:
    torch = _torch()
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
        triton=triton_version, ncu=ncu_version,
        clock_control="none" if counters else None, cache_control="all" if counters else None,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"), command=tuple(getattr(sys, "orig_argv", sys.argv)),
        hostname=socket.gethostname(),
    )


def _tflops(spec: CaseSpec, case: Case) -> str:
    if case.timing is None:
        return case.error or "no timing"
    return f"{case.timing.median_s * 1e3:.3f} ms, {spec.flops() / case.timing.median_s / 1e12:.0f} TFLOP/s"


def _with_counters(case: Case, counters: dict, child_errors: dict, batch_failure: str | None) -> Case:
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
    torch = _torch()
    ncu_path = find_ncu() if ncu else None
    no_counters = None if ncu_path else ("counters not requested (--no-ncu)" if not ncu else "ncu not found")
    prov = provenance(_ncu_version(ncu_path) if ncu_path else None, counters=ncu_path is not None)
    workdir = Path(tempfile.mkdtemp(prefix="iosim-ncu-"))
    progress(f"{len(cases)} cases on {prov.gpu_name}; ncu: {ncu_path or no_counters}; scratch {workdir}")
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
            counters, child_errors, failure = profile_batch(ok, ncu_path, workdir, f"batch{b // batch_size:02d}")
            progress(f"  ncu, {len(ok)} cases: {failure[0] if failure else 'ok'} ({time.perf_counter() - t0:.1f} s)")
            if failure and failure[1]:
                no_counters = failure[0]  # e.g. no permission: later batches would fail the same way
        for case in timed:
            if case.error is None:
                done.append(_with_counters(case, counters, child_errors, no_counters or (failure and failure[0])))
            else:
                done.append(case)
        m = Measurement(provenance=prov, cases=tuple(done))
        dump_measurement(m, out_path)
    return Measurement(provenance=prov, cases=tuple(done))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--ncu-child"]:
        return _ncu_child(*argv[1:3])
    parser = argparse.ArgumentParser(prog="python3 -m iosim.kernels.harness", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for measurements.json and .csv")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="default", help="which case list to measure")
    parser.add_argument("--no-ncu", action="store_true", help="timings only, no Nsight Compute counters")
    parser.add_argument("--warmup-ms", type=float, default=25, help="do_bench warm-up budget, ms")
    parser.add_argument("--rep-ms", type=float, default=100, help="do_bench measuring budget, ms")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="cases per ncu start")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_terminate)
    try:
        m = measure(GRIDS[args.grid](), args.out / "measurements.json", ncu=not args.no_ncu,
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
