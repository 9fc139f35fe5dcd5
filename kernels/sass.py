"""Ahead-of-time SASS of our Triton kernels: capture launches without a GPU, compile them for sm_XX, count instructions.

``capture_launches`` runs a Python launcher with CPU tensors while ``JITFunction.run`` is replaced by a
recorder: each ``kernel[grid](...)`` is specialised exactly as the runtime would (the kernel's own
binder and ``_pack_args``, so pointers and ints divisible by 16 get ``tt.divisibility`` and loads
vectorise) and nothing runs. ``compile_sass`` compiles one record for ``GPUTarget("cuda", arch, 32)``,
disassembles the cubin with the ``cuobjdump`` Triton ships and returns its per-loop
:class:`~iosim.costs.sass.KernelMix`. The same calls work on Triton 3.6 and 3.9 (both have
``create_function_from_signature``, ``JITFunction._pack_args`` and ``ASTSource(fn, signature,
constexprs, attrs)``). ``python -m iosim.kernels.sass --out DIR`` writes the mixes of our kernels.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from iosim.costs.sass import KernelMix, kernel_mix, mix_key, mixes_filename, write_mixes
from iosim.files import read_json, write_json

DEFAULT_ARCH = 90
SEQ = 128  # sequence length of the capture tensors: a multiple of 128, so NQ, NK, N·d are 16-divisible as on the GPU
DECODE_SEQ_K = 128 * 128  # KV length of the decode captures: 128 blocks of 128, so up to 128 splits
VARLEN_SEQ_LENS = (SEQ, 3 * SEQ)  # a packed batch of the varlen captures: total and offsets 16-divisible
WINDOW = 4 * SEQ  # window of the local-attention captures (16-divisible, as a model's window is)
DECODE_WINDOW = DECODE_SEQ_K - 128  # decode window: 127 + 1 blocks of 128, so still up to 128 splits


@dataclass(frozen=True)
class Launch:
    """One ``kernel[grid](...)`` call as the runtime would compile it: plain data, picklable.

    ``signature``/``constexprs``/``attrs`` are what ``JITFunction._pack_args`` returns (keys by
    argument path), ``options`` the launch's compile options (num_warps, num_stages, ...).
    """

    kernel: str
    module: str
    grid: tuple[int, ...]
    num_warps: int
    num_stages: int
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    arg_names: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    @property
    def fn(self):
        """The ``JITFunction`` (looked up by module and name, so a record crosses processes; an autotuned
        or heuristics-wrapped kernel's own function under its wrappers)."""
        fn = getattr(importlib.import_module(self.module), self.kernel)
        while not hasattr(fn, "_pack_args") and hasattr(fn, "fn"):
            fn = fn.fn
        return fn

    @property
    def variant(self) -> str | None:
        """For a launch of an autotuned kernel, which of its configs it ran (see :func:`capture_launches`)."""
        return self.extra.get("autotune")

    def named_constexprs(self) -> dict:
        return {self.arg_names[path[0]]: _plain(value) for path, value in self.constexprs.items()}

    def dtype(self) -> str:
        """Element type of the first pointer argument (``fp16`` for ``*fp16``): the call's data type."""
        return next((t.lstrip("*").lstrip("k") for t in self.signature.values() if str(t).startswith("*")), "")

    def key(self) -> str:
        return mix_key(self.kernel, self.dtype(), self.num_warps, self.num_stages, self.named_constexprs())


def _plain(value):
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)


def _storages(bound_args) -> tuple:
    """Addresses of the storages of a launch's tensor arguments (a tensor descriptor's by its base): which
    tensors the kernel reads and writes, matched against the launcher's own operations."""
    values = bound_args.values() if isinstance(bound_args, dict) else bound_args
    out = []
    for value in values:
        tensor = getattr(value, "base", value)  # a host-side TensorDescriptor holds its tensor as .base
        storage = getattr(tensor, "untyped_storage", None)
        if storage is not None:
            try:
                out.append(storage().data_ptr())
            except (RuntimeError, TypeError):  # a tensor without storage (meta, fake)
                continue
    return tuple(out)


def _backend(arch: int):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    return make_backend(GPUTarget("cuda", arch, 32))


@contextlib.contextmanager
def _recording(launches: list, arch: int):
    """``JITFunction.run`` replaced by a recorder of :class:`Launch` records that launches nothing."""
    from triton.runtime import jit

    backend = _backend(arch)
    binders: dict = {}
    original = jit.JITFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        kwargs["debug"] = bool(kwargs.get("debug", self.debug))
        kwargs.setdefault("enable_fp_fusion", True)  # Triton ≤ 3.9's default (3.9 warns that 3.10 flips it)
        binder = binders.get(id(self)) or binders.setdefault(
            id(self), jit.create_function_from_signature(self.signature, self.params, backend))
        bound_args, specialization, options = binder(*args, **kwargs)
        options, signature, constexprs, attrs = self._pack_args(backend, kwargs, bound_args, specialization, options)
        grid = grid(bound_args) if callable(grid) else grid
        names = tuple(p.name for p in self.params)
        option_args = {k: v for k, v in kwargs.items() if k not in names}
        launches.append(Launch(self.__name__, self.module, tuple(int(g) for g in grid), options.num_warps,
                               options.num_stages, signature, dict(constexprs), attrs, option_args, names,
                               {"storages": _storages(bound_args)}))
        return None

    from triton.runtime import autotuner

    tuner_run = autotuner.Autotuner.run

    def tuned(self, *args, **kwargs):
        """An autotuned launch: every config the autotuner would time (after its pruning), each recorded
        once and labelled with its config, instead of timing them; nothing runs."""
        self.nargs = dict(zip(self.arg_names, args))
        configs = self.prune_configs(kwargs) if len(self.configs) > 1 else list(self.configs)
        for config in configs:
            settings = config.all_kwargs()
            if config.pre_hook is not None:  # e.g. a tensor descriptor's block shape, set from the config
                config.pre_hook({**self.nargs, **kwargs, **settings})
            first = len(launches)
            self.fn.run(*args, **kwargs, **settings)
            shown = " ".join(f"{k}={v}" for k, v in settings.items() if v is not None and (k, v) != ("num_ctas", 1))
            for launch in launches[first:]:
                launch.extra.setdefault("autotune", f"{self.base_fn.__name__}: {shown}")
        return None

    jit.JITFunction.run = run
    autotuner.Autotuner.run = tuned
    try:
        yield
    finally:
        jit.JITFunction.run = original
        autotuner.Autotuner.run = tuner_run


def capture_launches(fn, *args, arch: int = DEFAULT_ARCH, launches: list | None = None, **kwargs):
    """Run ``fn(*args, **kwargs)`` with every Triton launch recorded, not run; return (its result, launches).
    ``launches``: the list to record into (its length at any moment says how many came so far).

    Kernels must be compiled ``@triton.jit`` functions: under ``TRITON_INTERPRET=1`` there is nothing to capture.
    """
    launches = [] if launches is None else launches
    with _recording(launches, arch):
        result = fn(*args, **kwargs)
    return result, launches


def tool(name: str) -> str:
    """Path of a CUDA binary utility Triton ships (``cuobjdump``, ``nvdisasm``)."""
    from triton import knobs
    return getattr(knobs.nvidia, name).path


def compile_sass(launch: Launch, arch: int = DEFAULT_ARCH) -> KernelMix:
    """Compile ``launch`` for sm_``arch`` (no GPU needed) and return its per-loop instruction mix."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as triton_compile
    from triton.runtime.jit import JITFunction

    fn = launch.fn
    if not isinstance(fn, JITFunction):
        raise RuntimeError(f"{launch.kernel} is {type(fn).__name__}, not a JITFunction: is TRITON_INTERPRET=1?")
    options = _backend(arch).parse_options(dict(launch.options))
    compiled = triton_compile(ASTSource(fn, launch.signature, launch.constexprs, launch.attrs),
                              target=GPUTarget("cuda", arch, 32), options=options.__dict__)
    sass, usage = disassemble(compiled.asm["cubin"])
    name = compiled.metadata.name
    res = usage.get(name, {})
    import triton
    return kernel_mix(sass, name, key=launch.key(), n_regs=res.get("REG"), n_spill_bytes=res.get("LOCAL", 0),
                      local_bytes=res.get("LOCAL", 0) + res.get("STACK", 0),
                      shared_bytes=compiled.metadata.shared, num_warps=launch.num_warps,
                      meta={"arch": f"sm_{arch}", "triton": triton.__version__, "kernel": launch.kernel,
                            "dtype": launch.dtype(), "num_stages": launch.num_stages,
                            "constexprs": launch.named_constexprs(), "signature": dict(launch.signature)})


def disassemble(cubin: bytes) -> tuple[str, dict[str, dict[str, int]]]:
    """``cuobjdump -sass`` text of a cubin and its ``-res-usage`` per function ({"REG": 90, "SHARED": 0, ...})."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        sass = subprocess.run([tool("cuobjdump"), "-sass", str(path)], check=True, capture_output=True, text=True)
        res = subprocess.run([tool("cuobjdump"), "-res-usage", str(path)], check=True, capture_output=True, text=True)
    return sass.stdout, parse_res_usage(res.stdout)


def parse_res_usage(text: str) -> dict[str, dict[str, int]]:
    """``Function k:`` / ``REG:22 STACK:0 SHARED:0 LOCAL:0 ...`` lines as {kernel: {field: value}}."""
    usage, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Function ") and line.endswith(":"):
            current = line[len("Function "):-1].strip()
        elif current and line.startswith("REG:"):
            usage[current] = {k: int(v) for k, v in (p.split(":", 1) for p in line.split()) if v.isdigit()}
    return usage


# ---------------------------------------------------------------------------------------------
# Our kernels' configurations
# ---------------------------------------------------------------------------------------------
def configurations() -> list[tuple[str, dict, dict]]:
    """(algo, problem fields, tiling overrides) for every case of the default, dq and smem grids run by our kernels and
    every algorithm's default tiling at d = 32, 64, 128, 256, fp16/bf16, causal or not, forward and backward (its dQ
    atomic or in a kernel of its own),
    the variable-length and sliding-window kernels (:func:`ragged_configurations`), multi-query decode
    (:func:`mqa_configurations`) and the lone grid's decodes (:func:`lone_configurations`)."""
    from iosim.kernels.cases import GRIDS, OURS, TRAINED

    configs = []
    smem = [spec for spec in GRIDS["smem"]() if spec.impl in TRAINED]  # its decode cases: lone_configurations
    for spec in GRIDS["default"]() + GRIDS["dq"]() + smem:
        if spec.impl in OURS:
            p = spec.problem
            configs.append((spec.impl, dict(heads=p.heads, kv_heads=p.kv_heads, head_dim=p.head_dim, dtype=p.dtype,
                                            causal=p.causal, backward=p.backward), spec.overrides()))
    for algo in TRAINED:
        for d in (32, 64, 128, 256):
            for dtype in ("fp16", "bf16"):
                for causal in (False, True):
                    for dq in ("atomic", "separate"):  # the backward's dQ by atomics, or in a kernel of its own
                        configs.append((algo, dict(heads=16, kv_heads=16, head_dim=d, dtype=dtype, causal=causal,
                                                   backward=True), {} if dq == "atomic" else {"dq": dq}))
    # flash-decoding: 16, 32 and 64 query rows per CTA (group 4 × 1, 8, 16 positions), one split (O written directly)
    # and every power-of-two split count the combine is compiled for (2-128), at d = 64 and 128
    for d in (64, 128):
        for dtype in ("fp16", "bf16"):
            for heads, seq_q in ((32, 1), (32, 8), (32, 16)):
                for splits, block_n in itertools.product((1, 2, 4, 8, 16, 32, 64, 128), (64, 128)):
                    configs.append(("flash_decode", dict(heads=heads, kv_heads=8, head_dim=d, dtype=dtype, causal=False,
                                                         backward=False, seq_q=seq_q, seq_k=DECODE_SEQ_K),
                                    {"splits": splits, "block_n": block_n}))
    # a paged cache (one query row, the default 128-row blocks): every page size, one split and several
    for d, dtype, page, splits in itertools.product((64, 128), ("fp16", "bf16"), (16, 32, 64, 128, 256), (1, 4)):
        configs.append(("flash_decode", dict(heads=32, kv_heads=8, head_dim=d, dtype=dtype, causal=False, backward=False,
                                             seq_q=1, seq_k=DECODE_SEQ_K, page_size=page), {"splits": splits}))
    return configs + row_configurations() + ragged_configurations() + mqa_configurations() + lone_configurations()


ROW_LENGTHS = tuple(2 ** e for e in range(8, 16))  # 256 ... 32768 columns: standard attention's row kernels' BLOCK
CAUSAL_ROWS = 16384  # the longest causal row captured (causal needs seq_q = seq_k: S is rows × rows)


def row_configurations() -> list[tuple[str, dict, dict]]:
    """Standard attention at every row length its one-row-per-CTA kernels (``softmax``, ``ds``) are compiled
    for: their whole row sits in registers, so their code (``BLOCK``, the row rounded up to a power of two,
    and their warps) follows the row length. 16 query rows where not causal (the row kernels do not
    depend on them), as many as the keys where causal."""
    configs = []
    for n, dtype, causal in itertools.product(ROW_LENGTHS, ("fp16", "bf16"), (False, True)):
        if causal and n > CAUSAL_ROWS:
            continue
        configs.append(("standard", dict(heads=1, kv_heads=1, head_dim=64, dtype=dtype, causal=causal, backward=True,
                                         seq_q=n if causal else 16, seq_k=n), {}))
    return configs


def lone_configurations() -> list[tuple[str, dict, dict]]:
    """The lone grid's decodes (CTAs alone on their SMs): split counts and tiles the other configurations
    lack. Last, so that a kernel variant they share with those keeps the launch it was first compiled from."""
    from iosim.kernels.cases import GRIDS

    return [(spec.impl, dict(heads=p.heads, kv_heads=p.kv_heads, head_dim=p.head_dim, dtype=p.dtype, causal=False,
                             backward=False, seq_q=p.seq_q, seq_k=p.seq_k, seq_lens=p.seq_lens), spec.overrides())
            for spec, p in ((spec, spec.problem) for spec in GRIDS["lone"]())]


def mqa_configurations() -> list[tuple[str, dict, dict]]:
    """Multi-query decode: 32 query heads on one KV head fill a 32-row tile; contiguous, paged (16, 64, 256
    tokens) and ragged (with and without a window), one split (O written directly) and several (partials)."""
    configs = []
    for d, dtype, page, ragged, splits in itertools.product((64, 128), ("fp16", "bf16"), (None, 16, 64, 256),
                                                            (None, (), DECODE_WINDOW), (1, 4)):
        local = {} if ragged is None else {"seq_lens": (DECODE_SEQ_K,), "window": ragged or None}
        configs.append(("flash_decode", dict(heads=32, kv_heads=1, head_dim=d, dtype=dtype, causal=False, backward=False,
                                             seq_q=1, seq_k=DECODE_SEQ_K, page_size=page, **local), {"splits": splits}))
    return configs


def ragged_configurations() -> list[tuple[str, dict, dict]]:
    """The varlen forward (flash2 with ``seq_lens``) at d = 64, 128, fp16/bf16, MHA (16 heads) and GQA
    (32 over 8), causal with and without a window and non-causal; the ragged decode (flash_decode with
    ``seq_lens``) with and without a window, 1 and 4 query rows, one split and every power-of-two split
    count the combine is compiled for (2-128), contiguous, and paged (16, 64, 256 tokens) at 1 and 4 splits."""
    configs = []
    for d, dtype, (heads, kv_heads), (causal, window) in itertools.product(
            (64, 128), ("fp16", "bf16"), ((16, 16), (32, 8)), ((True, None), (True, WINDOW), (False, None))):
        configs.append(("flash2", dict(heads=heads, kv_heads=kv_heads, head_dim=d, dtype=dtype, causal=causal,
                                       backward=False, seq_lens=VARLEN_SEQ_LENS, window=window), {}))
    layouts = [(None, (1, 2, 4, 8, 16, 32, 64, 128))] + [(page, (1, 4)) for page in (16, 64, 256)]
    for d, dtype, seq_q, window, (page, all_splits) in itertools.product(
            (64, 128), ("fp16", "bf16"), (1, 4), (None, DECODE_WINDOW), layouts):
        for splits in all_splits:
            configs.append(("flash_decode", dict(heads=32, kv_heads=8, head_dim=d, dtype=dtype, causal=False,
                                                 backward=False, seq_q=seq_q, seq_k=DECODE_SEQ_K, page_size=page,
                                                 seq_lens=(DECODE_SEQ_K,), window=window), {"splits": splits}))
    return configs


def capture_config(algo: str, problem: dict, overrides: dict, arch: int = DEFAULT_ARCH) -> list[Launch]:
    """The launches of one attention call (forward, and backward when ``problem["backward"]``) on CPU tensors;
    a problem with ``seq_lens`` is a packed varlen forward (flash2) or a ragged decode."""
    import torch

    from iosim.kernels import ALGOS

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[problem["dtype"]]
    h, hkv, d = problem["heads"], problem["kv_heads"], problem["head_dim"]
    if problem.get("seq_lens") and algo != "flash_decode":
        return _capture_varlen(problem, dtype, arch)
    ragged = {"seq_lens": problem["seq_lens"], "window": problem.get("window")} if problem.get("seq_lens") else {}
    q = torch.zeros((1, h, problem.get("seq_q", SEQ), d), dtype=dtype, requires_grad=problem["backward"])
    k = torch.zeros((1, hkv, problem.get("seq_k", SEQ), d), dtype=dtype, requires_grad=problem["backward"])
    v = torch.zeros_like(k, requires_grad=problem["backward"])

    if problem.get("page_size"):  # a paged cache: the same call on pools of pages
        mod = ALGOS[algo]
        pages = mod.to_pages(k.detach(), v.detach(), problem["page_size"])
        return capture_launches(lambda: mod.attention_paged(q, *pages, k.shape[2], **ragged, **overrides),
                                arch=arch)[1]

    def call():
        o = ALGOS[algo].attention(q, k, v, causal=problem["causal"], **ragged, **overrides)
        if problem["backward"]:
            torch.autograd.grad(o, (q, k, v), torch.zeros_like(o))

    return capture_launches(call, arch=arch)[1]


def _capture_varlen(problem: dict, dtype, arch: int) -> list[Launch]:
    """The launch of one ``attention_varlen`` call on packed zero inputs, one length per sequence."""
    import torch

    from iosim.kernels import varlen

    lens, d = problem["seq_lens"], problem["head_dim"]
    q = torch.zeros((sum(lens), problem["heads"], d), dtype=dtype)
    k = torch.zeros((sum(lens), problem["kv_heads"], d), dtype=dtype)
    cu = varlen.cu_seqlens(lens, "cpu")
    return capture_launches(varlen.attention_varlen, q, k, torch.zeros_like(k), cu, cu, max(lens), max(lens),
                            causal=problem["causal"], window=problem.get("window"), arch=arch)[1]


def unique_launches(arch: int = DEFAULT_ARCH, log=None) -> list[Launch]:
    """One launch per distinct compiled variant (key) over :func:`configurations`, in first-seen order."""
    seen: dict[str, Launch] = {}
    for algo, problem, overrides in configurations():
        for launch in capture_config(algo, problem, overrides, arch):
            seen.setdefault(launch.key(), launch)
    if log:
        log(f"{len(seen)} distinct kernel variants")
    return list(seen.values())


def calibration_launches(arch: int = DEFAULT_ARCH) -> list[Launch]:
    """The tile loops ``iosim calibrate`` times, as it launches them: the occupancy series two and three
    stages deep (fp16, and fp8 with V transposed), the series with FlashAttention-2's softmax and the
    miss-cost series' softmax loops, and the backward's five-matmul loop, bare and with its softmax work
    (:mod:`iosim.kernels.microbench`). Their
    own SIMT code is inside each calibrated rate; the model takes it out before adding a kernel's."""
    import torch

    from iosim.kernels import microbench as mb
    from iosim.schedule.tiling import BWD, FWD, default_tiling

    occupancy = [(t[:4], None, False) for t in mb.OCC_TILES] + [(t[:4], 3, False) for t in mb.OCC_TILES_S3]
    series = ([(*s, torch.float16) for s in occupancy] + [(*s, torch.float8_e4m3fn) for s in occupancy]
              + [(t[:4], None, True, torch.float16) for t in mb.SOFTMAX_TILES]
              + [(t[:4], t[5], True, torch.float16) for t in mb.SOFTMAX_TILES_DEEP]
              + [(t, None, True, torch.float16) for t in mb.MISS_TILES])
    seen: dict[str, Launch] = {}
    for (bm, bn, d, warps), stages, softmax, dtype in series:
        stages = default_tiling("flash2", FWD, d).stages if stages is None else stages
        q, k = torch.zeros(bm, d, dtype=dtype), torch.zeros(16 * bn, d, dtype=dtype)
        v = k if dtype == torch.float16 else torch.zeros(d, 16 * bn, dtype=dtype)  # fp8: V transposed
        o, ids = torch.zeros(1, dtype=torch.float32), torch.zeros(1, dtype=torch.int32)
        _, launches = capture_launches(mb.tile_loop, q, k, v, o, ids, bn=bn, ctas=1, iters=4096, warps=warps,
                                       stages=stages, softmax=softmax, record_sm=True, arch=arch)
        for launch in launches:
            seen.setdefault(launch.key(), launch)
    for d in (64, 128):  # the backward's five-matmul loop ``tile_bwd_fp16_d<d>`` times, at flash2's backward tiling
        t = default_tiling("flash2", BWD, d)
        q = torch.zeros(16 * t.block_m, d, dtype=torch.float16)
        k = torch.zeros(t.block_n, d, dtype=torch.float16)
        out, ids = torch.zeros(1, dtype=torch.float32), torch.zeros(1, dtype=torch.int32)
        _, launches = capture_launches(mb.bwd_tile_loop, q, q, k, k, out, out, ids, bm=t.block_m, ctas=1,
                                       iters=mb.BWD_TILE_ITERS, warps=t.warps, stages=t.stages, arch=arch)
        for atomic in (False, True):  # the backward's softmax series (tile_bwd_softmax_*), as it is timed
            rows = torch.zeros(16 * t.block_m, dtype=torch.float32)
            _, more = capture_launches(mb.bwd_softmax_tile_loop, q, q, rows, rows, k, k, out, out, ids, bm=t.block_m,
                                       ctas=1, iters=1024, warps=t.warps, stages=t.stages, qk_scale=1.0,
                                       atomic=atomic, record_sm=True, arch=arch)
            launches += more
        for launch in launches:
            seen.setdefault(launch.key(), launch)
    return list(seen.values())


def _compile_one(launch: Launch, arch: int) -> dict:
    return compile_sass(launch, arch).to_dict()


def compile_all(launches: list[Launch], arch: int, workers: int, log=None) -> list[KernelMix]:
    """Compile every launch (in ``workers`` processes), in the order given."""
    results: dict[int, KernelMix] = {}
    start = time.perf_counter()
    if workers <= 1:
        for n, launch in enumerate(launches):
            results[n] = compile_sass(launch, arch)
            _progress(log, len(results), len(launches), launch, start)
    else:
        import multiprocessing
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_compile_one, launch, arch): n for n, launch in enumerate(launches)}
            for future in as_completed(futures):
                n = futures[future]
                results[n] = KernelMix.from_dict(future.result())
                _progress(log, len(results), len(launches), launches[n], start)
    return [results[n] for n in range(len(launches))]


def _progress(log, done: int, total: int, launch: Launch, start: float) -> None:
    if log:
        log(f"[{done}/{total}] {time.perf_counter() - start:6.1f} s  {launch.key()}")


def main(argv=None) -> int:
    """Compile our kernels (or, with --calibration, the calibration's tile loops) for sm_ARCH and write
    DIR/[calibration-]sm_<arch>-triton-<version>.json.gz (progress on stderr)."""
    parser = argparse.ArgumentParser(prog="python -m iosim.kernels.sass", description=main.__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for the mixes file")
    parser.add_argument("--arch", type=int, default=DEFAULT_ARCH, help="compute capability as an int (90 = sm_90)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="compile processes")
    parser.add_argument("--calibration", action="store_true",
                        help="compile the tile loops iosim calibrate times instead (calibration-sm_<arch>-triton-<version>.json.gz)")
    parser.add_argument("--only", metavar="KERNELS",
                        help="compile only these kernels (comma-separated names, e.g. softmax,ds) and merge them into "
                             "the existing file: every other mix is kept as it is")
    args = parser.parse_args(argv)
    import triton

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    start = time.perf_counter()
    launches = calibration_launches(args.arch) if args.calibration else unique_launches(args.arch, log)
    path = args.out / mixes_filename(args.arch, triton.__version__, calibration=args.calibration)
    kept: list = []
    if args.only:
        names = set(args.only.split(","))
        launches = [launch for launch in launches if launch.key().split("|")[0] in names]
        if not launches:
            parser.error(f"--only: no kernel named {args.only!r} among our kernels' launches")
        if path.exists():  # every other kernel's mix as committed, in its place
            kept = [KernelMix.from_dict(m) for m in read_json(path)["mixes"]]
    compiled = {mix.key: mix for mix in compile_all(launches, args.arch, args.workers, log)}
    mixes = [compiled.pop(mix.key, mix) for mix in kept] + list(compiled.values())
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(path, write_mixes(mixes, args.arch, triton.__version__))
    log(f"wrote {len(mixes)} mixes to {path} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "0"  # compiled JITFunctions, not the interpreter's
    sys.exit(main())
