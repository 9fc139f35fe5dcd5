"""What to measure: a case (an implementation, a problem and tiling overrides) and the grids of cases."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import yaml

from iosim.measure.measurement import KERNEL_IMPL, REFERENCE_IMPLS
from iosim.schedule.problem import HEAD_DIMS, ConfigError, Problem, RunConfig, Tiling
from iosim.schedule.tiling import FWD, resolve_tiling
from iosim.sizes import lengths_text

TRAINED = ("flash2", "flash1", "standard")  # our training kernels (iosim.kernels.ALGO_NAMES), in the grids' order
OURS = TRAINED + ("flash_decode",)  # and the inference kernel (forward only)
IMPLS = OURS + ("standard_eager", *REFERENCE_IMPLS, KERNEL_IMPL)
REPO = Path(__file__).resolve().parent.parent  # the repository root of a checkout (kernels/ lives in it)
FOREIGN_MANIFEST = Path("experiments/foreign_kernels/manifest.yaml")  # relative to the repository root
_SHORT = {"block_m": "bm", "block_n": "bn", "stages": "s", "warps": "w", "splits": "sp"}  # name parts, in this order


def _problem_dict(p: Problem) -> dict:
    """A problem as a measurement file records it: a top-left causal diagonal (the default) unsaid, as before it was
    a field."""
    out = asdict(p)
    if out["causal_align"] == "top-left":
        del out["causal_align"]
    return out


@dataclass(frozen=True)
class CaseSpec:
    """One attention call to measure: ``impl`` on ``problem`` (``backward``: forward + backward, the
    ``fwd_bwd`` pass), with ``tiling`` overrides for our kernels (``None`` = the algorithm's default).

    ``name`` (derived when empty) keys the case in measurement files, so it never changes for a case.
    ``impl`` ``kernel`` is a user's Triton kernel ``kernel`` (``path/to/file.py:fn``, relative to the
    repository root or absolute) whose schedule the simulator models as ``algo`` (``flash2``).
    """

    impl: str
    problem: Problem = field(default_factory=Problem)
    tiling: Tiling = field(default_factory=Tiling)
    name: str = ""
    kernel: str | None = None
    algo: str | None = None
    dq: str = "atomic"  # our flash backwards: dQ by atomics or in a kernel of its own (RunConfig.dq)
    skips_masked: bool = True  # a user's causal kernel skips the blocks its mask hides (RunConfig.skips_masked)

    def __post_init__(self):
        if self.impl not in IMPLS:
            raise ConfigError("impl", f"must be one of {', '.join(IMPLS)}, got {self.impl!r}")
        if (self.impl == KERNEL_IMPL) != (self.kernel is not None):
            raise ConfigError("kernel", f"a 'path.py:fn' is given exactly for impl {KERNEL_IMPL!r}")
        if self.impl == KERNEL_IMPL:
            path, sep, fn = self.kernel.rpartition(":")
            if not sep or not path.endswith(".py") or not fn.isidentifier():
                raise ConfigError("kernel", f"must be 'path/to/file.py:function', got {self.kernel!r}")
            if self.algo not in OURS:
                raise ConfigError("algo", f"the modelled schedule must be one of {', '.join(OURS)}, got {self.algo!r}")
            if self.tiling != Tiling():
                raise ConfigError("tiling", "a user's kernel chooses its own tiling")
        elif self.algo is not None:
            raise ConfigError("algo", f"only a user's kernel names a modelled schedule, not {self.impl}")
        if self.impl in OURS:
            if self.problem.head_dim not in HEAD_DIMS:
                raise ConfigError("head_dim", f"must be one of {', '.join(map(str, HEAD_DIMS))} for {self.impl}")
            resolve_tiling(self.impl, FWD, self.problem.head_dim, self.tiling)  # e.g. grid_order for flash2 only
            if self.problem.causal_offset:
                raise ConfigError("causal_align", "iosim's kernels put a causal diagonal top-left; bottom-right is "
                                                  "simulated (iosim simulate) and measured on a kernel of your own")
        elif self.tiling != Tiling():
            raise ConfigError("tiling", f"only our kernels take tiling overrides, not {self.impl}")
        if self.dq != "atomic":
            if self.impl not in ("flash1", "flash2") or not self.problem.backward:
                raise ConfigError("dq", f"{self.dq} is a choice of our flash1/flash2 backwards, not of {self.impl} "
                                        f"{self.pass_}")
            RunConfig(algo=self.impl, problem=self.problem, dq=self.dq)  # refuses a value outside DQ_MODES
            if self.dq == "fused":
                raise ConfigError("dq", "fused is a user's kernel's (Triton's tutorial backward); iosim's flash1/flash2 "
                                        "kernels run atomic or separate")
        if not self.name:
            object.__setattr__(self, "name", self._default_name())

    def _default_name(self) -> str:
        p = self.problem
        heads = f"b{p.batch}h{p.heads}" + (f"kv{p.kv_heads}" if p.kv_heads != p.heads else "")
        seq = f"n{p.seq_q}" + (f"k{p.seq_k}" if p.seq_k != p.seq_q else "")
        impl = self.impl
        if self.impl == KERNEL_IMPL:
            path, _, fn = self.kernel.rpartition(":")
            impl = f"kernel-{Path(path).stem}.{fn}"
        parts = [impl, self.pass_, p.dtype, heads, seq, f"d{p.head_dim}"]
        if p.causal:
            parts.append("causal" if p.causal_align == "top-left" else "causal-br")
        if p.page_size:
            parts.append(f"pg{p.page_size}")
        if p.seq_lens is not None:
            parts.append(_lengths_part(p.seq_lens))
        if p.window is not None:
            parts.append(f"w{p.window}")
        tiles = "".join(f"{short}{getattr(self.tiling, key)}" for key, short in _SHORT.items()
                        if getattr(self.tiling, key) is not None)
        if tiles:
            parts.append(tiles)
        if self.tiling.grid_order != "rows":
            parts.append(self.tiling.grid_order)
        if self.dq != "atomic":
            parts.append(f"dq{self.dq}")
        return "-".join(parts)

    @property
    def pass_(self) -> str:
        return "fwd_bwd" if self.problem.backward else "fwd"

    @property
    def backward(self) -> bool:
        return self.problem.backward

    def flops(self) -> float:
        return self.problem.flops()

    def overrides(self) -> dict:
        """The tiling overrides (and ``dq`` where not atomic) as the kernels' keyword arguments."""
        dq = {"dq": self.dq} if self.dq != "atomic" else {}
        return {key: value for key, value in asdict(self.tiling).items() if value is not None} | dq

    def run_config(self) -> dict:
        """The configuration the simulator takes for this case: resolved for our kernels; for SDPA,
        whose kernels we do not know, ``algo`` and ``tiling`` are null; eager PyTorch has no tiling."""
        if self.impl in OURS:
            return RunConfig(algo=self.impl, problem=self.problem, tiling=self.tiling, dq=self.dq).resolved().to_dict()
        if self.impl == KERNEL_IMPL:  # the tiling is read off its launches once it has run
            out = {"algo": self.algo, "problem": _problem_dict(self.problem), "tiling": {}}
            return out if self.skips_masked else out | {"skips_masked": False}
        outside = self.impl in REFERENCE_IMPLS
        return {"algo": None if outside else self.impl, "problem": _problem_dict(self.problem),
                "tiling": None if outside else {}}

    def to_json(self) -> dict:
        return {"impl": self.impl, "problem": _problem_dict(self.problem), "tiling": asdict(self.tiling), "name": self.name,
                "kernel": self.kernel, "algo": self.algo, "dq": self.dq, "skips_masked": self.skips_masked}

    @classmethod
    def from_json(cls, data: dict) -> CaseSpec:
        """The case ``to_json`` wrote (after a trip through JSON): what the ncu child receives."""
        return cls(impl=data["impl"], problem=Problem(**data["problem"]), tiling=Tiling(**data["tiling"]),
                   name=data["name"], kernel=data.get("kernel"), algo=data.get("algo"), dq=data.get("dq", "atomic"),
                   skips_masked=data.get("skips_masked", True))


def _lengths_part(lens: tuple) -> str:
    """A variable-length batch in a case name: its lengths where short, else count, range and total."""
    text = lengths_text(lens).replace(",", "_")
    return f"vl{text}" if len(text) <= 24 else f"vl{len(lens)}r{min(lens)}-{max(lens)}t{sum(lens)}"


def case(impl: str, pass_: str = "fwd", *, seq: int = 4096, tiling: Tiling | None = None, **problem) -> CaseSpec:
    """A case from the grid's shorthand: ``seq`` for both sequence lengths, ``pass_`` ``fwd`` or ``fwd_bwd``."""
    if pass_ not in ("fwd", "fwd_bwd"):
        raise ConfigError("pass", f"must be fwd or fwd_bwd, got {pass_!r}")
    return CaseSpec(impl, Problem(seq_q=seq, backward=pass_ == "fwd_bwd", **problem), tiling or Tiling())


REF_TILING = Tiling(block_m=128, block_n=64, warps=4)  # the tiling of the reference measurements


def default_grid() -> list[CaseSpec]:
    """The H100 data set: 61 cases, ≈ 4 minutes of device time with counters (3-5; Triton's cache cold or warm).

    B·H is 64 up to N = 8192; past that the batch shrinks so one call stays ≲ 100 ms (a forward at
    N = 65536, d = 64, B·H = 8 is 8.8 TFLOP, ≈ 30 ms at 300 TFLOP/s). ``standard`` keeps the N×N
    scores in HBM (B·H·N² elements twice: 8.6 GB fp16 at B·H = 64, N = 8192), so it stops at
    N = 16384 with B·H = 16; eager PyTorch keeps three N×N tensors and stops at N = 8192.
    The reference cases (h100-measured.md) come first so that they land even if the run is cut short.
    """
    S = case
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
    cases += [S("flash2", seq=n, batch=b, tiling=replace(REF_TILING, grid_order="heads"))
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
    S = case
    small = dict(batch=1, heads=4, seq=512)
    return [S("flash2", **small, tiling=REF_TILING), S("flash2", "fwd_bwd", **small), S("flash1", **small),
            S("standard", **small), S("standard_eager", **small), S("standard_eager", "fwd_bwd", **small),
            S("sdpa_flash", **small), S("sdpa_cudnn", "fwd_bwd", **small)]


def h200_grid() -> list[CaseSpec]:
    """Long causal sequences at d = 128 first, then the default grid re-measured on the H200.

    flash2 forward at B·H = 8, d = 128, causal, N from 48K to 128K: the range in which one head's K and V
    (N · 512 bytes: 24 to 64 MB) outgrow the L2 (50-60 MB; 25-30 MB per partition), plus N = 65536 not
    causal; SDPA's flash backend on two of them; one flash2 forward + backward, causal, N = 65536,
    B·H = 4. The longest forward is 35 TFLOP, ≈ 120 ms.
    """
    S = case
    long = dict(batch=1, heads=8, head_dim=128)
    return [
        S("flash2", seq=131072, causal=True, **long), S("flash2", seq=65536, causal=True, **long),
        S("flash2", seq=65536, **long),
        *[S("flash2", seq=n, causal=True, **long) for n in (49152, 81920, 98304, 114688)],
        S("sdpa_flash", seq=65536, causal=True, **long), S("sdpa_flash", seq=131072, causal=True, **long),
        S("flash2", "fwd_bwd", seq=65536, causal=True, batch=1, heads=4, head_dim=128),
    ] + default_grid()


def decode_grid() -> list[CaseSpec]:
    """Inference: one decode step (and a few speculative ones) against a KV cache, d = 128, 32 query heads.

    flash_decode at batch 1-256 and KV length 1K-256K with GQA 4 (8 KV heads); MHA, GQA 8 and MQA at one
    size; 4 and 16 query rows; split counts 1, 4 and 16 beside FlashAttention-2's choice; bf16; then
    flash2 on the same decode (no split: one CTA per head) and SDPA's flash backend as the outside
    reference. The largest cache is 34 GB (batch 64, 128K).
    """
    def S(batch, seq_k, kv_heads=8, seq_q=1, impl="flash_decode", splits=None, dtype="fp16"):
        problem = Problem(batch=batch, heads=32, kv_heads=kv_heads, seq_q=seq_q, seq_k=seq_k, head_dim=128, dtype=dtype)
        return CaseSpec(impl, problem, Tiling(splits=splits))

    sizes = [(1, n) for n in (1024, 8192, 32768, 131072, 262144)] + [(8, n) for n in (1024, 8192, 32768, 131072)]
    sizes += [(64, n) for n in (1024, 8192, 32768, 131072)] + [(256, n) for n in (1024, 4096, 16384)]
    cases = [S(b, n) for b, n in sizes]
    cases += [S(8, 32768, kv_heads=h) for h in (32, 4, 1)]
    cases += [S(8, 8192, seq_q=q) for q in (4, 16)]
    cases += [S(1, 32768, splits=n) for n in (1, 4, 16)] + [S(8, 32768, splits=n) for n in (1, 4)]
    cases += [S(8, 32768, dtype="bf16")]
    cases += [S(b, n, impl="flash2") for b, n in ((1, 32768), (8, 8192), (64, 8192))]
    cases += [S(b, n, impl="sdpa_flash") for b, n in ((1, 32768), (8, 32768), (64, 8192), (256, 4096))]
    return cases


def paged_grid() -> list[CaseSpec]:
    """A paged KV cache beside a contiguous one: flash_decode at four decode sizes (d = 128, 32 query
    heads, 8 KV heads, one query row) with the cache contiguous and in pages of 16, 64 and 256 tokens
    in a random order, plus MQA with 16-token pages."""
    def S(batch, seq_k, page=None, kv_heads=8):
        return CaseSpec("flash_decode", Problem(batch=batch, heads=32, kv_heads=kv_heads, seq_q=1, seq_k=seq_k,
                                                head_dim=128, page_size=page))

    sizes = ((1, 131072), (8, 32768), (64, 8192), (256, 4096))
    return [S(b, n, page) for b, n in sizes for page in (None, 16, 64, 256)] + [S(8, 32768, 16, 1), S(8, 32768, None, 1)]


def paged_flex_grid() -> list[CaseSpec]:
    """FlexAttention's decode on a paged cache (PyTorch's PagedAttention page table) beside flash_decode on
    the same pages, in one run: batch 8 × 32K and batch 64 × 8K (d = 128, 32 query heads, 8 KV heads), in
    pages of 64 and 256 tokens, FlexAttention also on 16-token pages and on the contiguous cache."""
    def S(batch, seq_k, page=None, impl="flash_decode"):
        return CaseSpec(impl, Problem(batch=batch, heads=32, kv_heads=8, seq_q=1, seq_k=seq_k, head_dim=128,
                                      page_size=page))

    cases = []
    for batch, seq_k in ((8, 32768), (64, 8192)):
        cases += [S(batch, seq_k, page, impl) for page in (64, 256) for impl in ("flash_decode", "flex")]
        cases.append(S(batch, seq_k, impl="flex"))
    return cases + [S(8, 32768, 16, "flex")]


def spread(count: int, low: int, high: int) -> tuple[int, ...]:
    """``count`` lengths spread log-uniformly over [low, high] in a fixed, unsorted order (the golden
    ratio's sequence, no random generator): a batch of requests of mixed lengths."""
    ratio = math.log(high / low)
    return tuple(round(low * math.exp(ratio * ((n * 0.6180339887) % 1.0))) for n in range(count))


def varlen_grid() -> list[CaseSpec]:
    """Variable-length batches (d = 128, 32 query heads, 8 KV heads, fp16). Prefill (flash2, causal):
    one long request among short ones, equal lengths packed, halving lengths (also non-causal and
    MQA), 32 mixed lengths, and the padded batch of the halving one for comparison. Decode
    (flash_decode, one query row): caches of halving lengths (also MQA, 16-token pages, 4 query rows),
    64 and 256 mixed lengths, and the padded batch for comparison. FlexAttention (a document mask for
    the prefill, a length mask for the decode) beside them, listed and not modelled."""
    halving = (8192, 4096, 2048, 1024, 512, 256, 128, 64)

    def P(lens, causal=True, kv_heads=8, impl="flash2"):
        return CaseSpec(impl, Problem(batch=len(lens), heads=32, kv_heads=kv_heads, seq_q=max(lens), seq_lens=lens,
                                      head_dim=128, causal=causal))

    def D(lens, kv_heads=8, seq_q=1, page=None, impl="flash_decode"):
        return CaseSpec(impl, Problem(batch=len(lens), heads=32, kv_heads=kv_heads, seq_q=seq_q, seq_lens=lens,
                                      head_dim=128, page_size=page))

    cases = [P((16384,) + (1024,) * 15), P((512,) * 64), P(halving), P(halving, causal=False),
             P(halving, kv_heads=1), P(spread(32, 128, 16384))]
    cases.append(CaseSpec("flash2", Problem(batch=8, heads=32, kv_heads=8, seq_q=8192, head_dim=128, causal=True)))
    long = tuple(n * 16 for n in halving)  # 131072 down to 1024
    cases += [D(long), D(long, kv_heads=1), D(long, page=16), D(long, seq_q=4), D(spread(64, 1024, 65536)),
              D(spread(256, 512, 8192))]
    cases.append(CaseSpec("flash_decode", Problem(batch=8, heads=32, kv_heads=8, seq_q=1, seq_k=131072, head_dim=128)))
    cases += [P(halving, impl="flex"), D(long, impl="flex")]
    return cases


def window_grid() -> list[CaseSpec]:
    """Sliding-window (local, causal) attention (d = 128, 32 query heads, 8 KV heads, fp16): prefill
    with windows of 512-4096 at 8K-32K (one window not a multiple of the blocks), causal without a
    window beside one, a variable-length batch with a window; decode of the last 4096-8192 keys of
    caches of 32K-256K (also 4 query rows); FlexAttention beside a prefill and a decode."""
    def P(seq, window, batch=1, impl="flash2"):
        return CaseSpec(impl, Problem(batch=batch, heads=32, kv_heads=8, seq_q=seq, head_dim=128, causal=True,
                                      window=window))

    def D(batch, seq_k, window, seq_q=1, impl="flash_decode"):
        return CaseSpec(impl, Problem(batch=batch, heads=32, kv_heads=8, seq_q=seq_q, seq_k=seq_k, head_dim=128,
                                      window=window))

    halving = (8192, 4096, 2048, 1024, 512, 256, 128, 64)
    cases = [P(32768, 4096), P(16384, 512, batch=2), P(16384, 4096, batch=2), P(8192, 1000, batch=4),
             P(16384, None, batch=2),
             CaseSpec("flash2", Problem(batch=8, heads=32, kv_heads=8, seq_q=8192, seq_lens=halving, head_dim=128,
                                        causal=True, window=1024))]
    cases += [D(8, 131072, 4096), D(64, 32768, 4096), D(1, 262144, 8192), D(8, 32768, 4096, seq_q=4)]
    cases += [P(16384, 4096, batch=2, impl="flex"), D(8, 131072, 4096, impl="flex")]
    return cases


def kernel_case(ref: str, algo: str = "flash2", pass_: str = "fwd", skips_masked: bool = True, **problem) -> CaseSpec:
    """A user's kernel ``ref`` (``path.py:fn``) as a case; ``problem`` as :class:`Problem` takes it; ``skips_masked``
    False: a causal kernel that visits every block."""
    if pass_ not in ("fwd", "fwd_bwd"):
        raise ConfigError("pass", f"must be fwd or fwd_bwd, got {pass_!r}")
    problem.setdefault("seq_k", problem.get("seq_q", Problem().seq_q))
    return CaseSpec(KERNEL_IMPL, Problem(backward=pass_ == "fwd_bwd", **problem), kernel=ref, algo=algo,
                    skips_masked=skips_masked)


def _manifest_path(path: Path | None) -> Path:
    if path is not None:
        return Path(path)
    for root in (REPO, Path.cwd()):  # not packaged: found in the checkout the kernels run from
        if (root / FOREIGN_MANIFEST).is_file():
            return root / FOREIGN_MANIFEST
    raise ConfigError("grid", f"the foreign grid needs {FOREIGN_MANIFEST} (in {REPO} or the current folder)")


def _repo_relative(path: Path) -> str:
    """``path`` relative to the repository root when inside it (so a case reads the same on every machine)."""
    path = path.resolve()
    try:
        return str(path.relative_to(REPO.resolve()))
    except ValueError:
        return str(path)


def manifest_cases(path: Path | None = None) -> list[CaseSpec]:
    """The cases of a foreign-kernel manifest: a YAML list of ``{kernel: FILE.py:fn, algo, pass, problem}``,
    each ``FILE`` relative to the manifest's folder; a bad entry is a ConfigError naming it."""
    path = _manifest_path(path)
    entries = yaml.safe_load(path.read_text())
    if not isinstance(entries, list):
        raise ConfigError("manifest", f"{path}: must be a YAML list of cases")
    cases = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "kernel" not in entry or "problem" not in entry:
            raise ConfigError(f"manifest[{i}]", f"{path}: each case needs 'kernel' and 'problem'")
        file, _, fn = str(entry["kernel"]).rpartition(":")
        ref = f"{_repo_relative(path.parent / file)}:{fn}"
        problem = {k: v for k, v in entry["problem"].items() if k != "backward"}
        cases.append(kernel_case(ref, entry.get("algo", "flash2"), entry.get("pass", "fwd"),
                                 bool(entry.get("skips_masked", True)), **problem))
    return cases


def lone_grid() -> list[CaseSpec]:
    """flash_decode with fewer CTAs than SMs, each alone on its SM for its whole loop (d = 128, 32 query
    heads, one cache of 131072 keys): what one CTA's pass takes when neither DRAM bandwidth nor a CTA
    beside it binds, at 16, 32 and 64 query rows a tile (GQA 4, MQA, MQA with two query rows), in the
    contiguous and the variable-length (ragged) kernel, then one and two CTAs on every SM."""
    def S(kv_heads, splits, seq_q=1, ragged=False):
        return CaseSpec("flash_decode", Problem(batch=1, heads=32, kv_heads=kv_heads, seq_q=seq_q, seq_k=131072,
                                                seq_lens=(131072,) if ragged else None, head_dim=128),
                        Tiling(splits=splits))

    cases = [S(kv, sp, ragged=r) for kv, sp in ((8, 8), (1, 28)) for r in (False, True)]
    return cases + [S(1, 28, seq_q=2), S(1, 28, seq_q=2, ragged=True), S(1, 132), S(1, 264)]


HOPPER_KERNEL = "kernels/flash_hopper.py:fwd"  # the Hopper (TMA) kernel, forward and backward under autograd


def hopper_grid() -> list[CaseSpec]:
    """The Hopper kernel (``kernels/flash_hopper.py``, TMA; modelled with FlashAttention-2's schedule) forward
    and forward + backward, and SDPA's cuDNN and flash backends on its shapes: d = 128 at N = 4K and 16K,
    d = 64, causal N = 8K, bf16 GQA (16 query heads on 4)."""
    shapes = [dict(batch=4, heads=16, seq_q=4096, head_dim=128), dict(batch=1, heads=16, seq_q=16384, head_dim=128),
              dict(batch=4, heads=16, seq_q=4096, head_dim=64),
              dict(batch=2, heads=16, seq_q=8192, head_dim=128, causal=True),
              dict(batch=4, heads=16, kv_heads=4, seq_q=4096, head_dim=128, dtype="bf16")]
    cases = [kernel_case(HOPPER_KERNEL, "flash2", pass_, **dict(shape)) for pass_ in ("fwd", "fwd_bwd") for shape in shapes]
    cases += [case("sdpa_cudnn", pass_, seq=shape["seq_q"], **{k: v for k, v in shape.items() if k != "seq_q"})
              for pass_ in ("fwd", "fwd_bwd") for shape in (shapes[0], shapes[2], shapes[3], shapes[4])]
    cases += [case("sdpa_flash", "fwd_bwd", seq=shape["seq_q"], **{k: v for k, v in shape.items() if k != "seq_q"})
              for shape in (shapes[0], shapes[3])]
    return cases


HOPPER_FP8_KERNEL = "kernels/flash_hopper.py:fwd_fp8"  # the Hopper forward on e4m3 inputs, unit scales


def fp8_grid() -> list[CaseSpec]:
    """The Hopper kernel's fp8 (e4m3) forward: d = 128 at N = 4K and 16K, causal N = 8K, GQA 16 on 4,
    and d = 64, the hopper grid's shapes (its fp16 forward measured there)."""
    shapes = [dict(batch=4, heads=16, seq_q=4096, head_dim=128), dict(batch=1, heads=16, seq_q=16384, head_dim=128),
              dict(batch=2, heads=16, seq_q=8192, head_dim=128, causal=True),
              dict(batch=4, heads=16, kv_heads=4, seq_q=4096, head_dim=128), dict(batch=4, heads=16, seq_q=4096, head_dim=64)]
    return [kernel_case(HOPPER_FP8_KERNEL, "flash2", "fwd", dtype="fp8", **shape) for shape in shapes]


def sdpa_grid() -> list[CaseSpec]:
    """SDPA's cuDNN and flash backends on shapes no committed case has (held out from the reference models,
    whose code was read at B·H = 64, N = 4096): d = 64 and 128, N = 2K-16K, causal, GQA, bf16, forward and
    forward + backward."""
    shapes = [dict(batch=8, heads=16, seq=2048, head_dim=128), dict(batch=1, heads=16, seq=16384, head_dim=128),
              dict(batch=4, heads=16, seq=4096, head_dim=128, causal=True),
              dict(batch=1, heads=32, kv_heads=8, seq=8192, head_dim=128, causal=True),
              dict(batch=2, heads=16, seq=8192, head_dim=64), dict(batch=8, heads=8, seq=2048, head_dim=128, dtype="bf16")]
    return [case(impl, pass_, **shape) for impl in ("sdpa_cudnn", "sdpa_flash") for pass_ in ("fwd", "fwd_bwd")
            for shape in shapes]


def sdpa_small_grid() -> list[CaseSpec]:
    """SDPA's flash and cuDNN backends on shapes no committed case has, chosen where libtorch's FlashAttention-2
    splits the K/V length (fewer than 211 query blocks of 64 rows on 132 SMs: 2 to 12 splits) and, forward +
    backward, where its wrapper copies dO and O first; held out from both (2026-12-04)."""
    fwd = [dict(batch=1, heads=8, seq=1024, head_dim=128), dict(batch=1, heads=2, seq=4096, head_dim=64, causal=True),
           dict(batch=1, heads=16, seq=640, head_dim=64), dict(batch=1, heads=4, kv_heads=1, seq=2048, head_dim=128,
                                                               causal=True),
           dict(batch=1, heads=1, seq=2048, head_dim=64), dict(batch=1, heads=4, seq=1536, head_dim=128, dtype="bf16")]
    both = [dict(batch=2, heads=8, seq=4096, head_dim=64),
            dict(batch=1, heads=16, kv_heads=4, seq=2048, head_dim=128, causal=True),
            dict(batch=1, heads=4, seq=1024, head_dim=64)]
    return [case(impl, pass_, **shape) for impl in ("sdpa_flash", "sdpa_cudnn")
            for pass_, shapes in (("fwd", fwd), ("fwd_bwd", both)) for shape in shapes]


def sdpa_split_grid() -> list[CaseSpec]:
    """SDPA's flash backend at seven more shapes where FlashAttention-2 splits the K/V length (2 to 4 splits; one
    N not a multiple of its blocks, causal, GQA, bf16, a forward + backward), chosen after its split-KV kernel's code
    was read (``sdpa_split_sass_*``), held out from it (2026-12-04)."""
    fwd = [dict(batch=2, heads=2, seq=1536, head_dim=64), dict(batch=1, heads=4, seq=3072, head_dim=128, causal=True),
           dict(batch=1, heads=6, seq=1000, head_dim=64), dict(batch=1, heads=8, kv_heads=2, seq=1024, head_dim=128,
                                                               dtype="bf16"),
           dict(batch=1, heads=3, seq=4000, head_dim=64, causal=True), dict(batch=4, heads=2, seq=512, head_dim=128)]
    return [case("sdpa_flash", **shape) for shape in fwd] + [case("sdpa_flash", "fwd_bwd", batch=1, heads=4, seq=2048,
                                                                  head_dim=128)]


def sdpa_split2_grid() -> list[CaseSpec]:
    """SDPA's flash forward at six more shapes where it splits, many splits among them, chosen after its combine
    kernel's loop over the splits was modelled (a dependent load a split), held out from it (2026-12-04)."""
    shapes = [dict(batch=1, heads=2, seq=1024, head_dim=128), dict(batch=1, heads=1, seq=4096, head_dim=128),
              dict(batch=2, heads=4, seq=768, head_dim=64), dict(batch=1, heads=6, seq=1792, head_dim=128, causal=True),
              dict(batch=1, heads=2, seq=6144, head_dim=64), dict(batch=1, heads=4, kv_heads=2, seq=2560, head_dim=128,
                                                                   dtype="bf16")]
    return [case("sdpa_flash", **shape) for shape in shapes]


def small_grid() -> list[CaseSpec]:
    """Standard attention, ours and eager PyTorch's, on small problems like the smoke grid's, where a kernel's
    CTAs fill few of the SMs and its launch and first loads weigh most: shapes no committed case has (2026-12-04),
    with flash1 and the smoke grid's flash2 beside them."""
    S = case
    shapes = [dict(batch=1, heads=4, seq=1024), dict(batch=2, heads=8, seq=512, head_dim=128),
              dict(batch=1, heads=16, seq=768)]
    cases = [S(impl, **shape) for impl in ("standard", "standard_eager") for shape in shapes]
    cases += [S("standard", "fwd_bwd", batch=1, heads=8, seq=1024), S("standard_eager", "fwd_bwd", batch=1, heads=8,
                                                                          seq=1024),
              S("flash1", batch=2, heads=8, seq=512, head_dim=128), S("flash2", batch=1, heads=16, seq=768, tiling=REF_TILING)]
    return cases


TLK_KERNEL = "experiments/thirdparty_kernels/tlk_flash.py:fwd"  # triton-lang/kernels' 16 x 16 tiles (gitignored, README)
TUTORIAL_64 = "experiments/thirdparty_kernels/tutorial_fa.py:fwd_64x64_w4_s4"  # Triton's tutorial (gitignored, README)
FOREIGN = "experiments/foreign_kernels/{}.py:attention"


def smem_grid() -> list[CaseSpec]:
    """Kernels whose loops move much through shared memory, with its wavefronts counted, on shapes no
    committed case has: triton-lang/kernels' 16 x 16-tile forward (mma.sync, ldmatrix, cross-warp reductions),
    Triton's tutorial at 64 x 64, the foreign kernels F2 (cp.async) and B2 (backward), flash_decode's 16-row
    tiles (and its KV 1K step again), and our flash2 forward and backward."""
    cases = [kernel_case(TLK_KERNEL, batch=2, heads=16, seq_q=8192, head_dim=64),
             kernel_case(TLK_KERNEL, batch=8, heads=16, seq_q=2048, head_dim=128),
             kernel_case(TLK_KERNEL, batch=1, heads=32, seq_q=8192, head_dim=64, causal=True),
             kernel_case(TUTORIAL_64, batch=8, heads=16, seq_q=2048, head_dim=64),
             kernel_case(FOREIGN.format("F2_exp2_masksplit"), batch=4, heads=16, seq_q=2048, head_dim=128),
             kernel_case(FOREIGN.format("B2_bwd_exp2_small"), "flash2", "fwd_bwd", batch=4, heads=16, seq_q=2048,
                         head_dim=64)]
    decode = [Problem(batch=b, heads=32, kv_heads=kv, seq_q=1, seq_k=n, head_dim=128)
              for b, kv, n in ((1, 8, 1024), (4, 8, 4096), (1, 1, 16384))]
    cases += [CaseSpec("flash_decode", p, Tiling()) for p in decode]
    cases += [case("flash2", seq=3072, batch=4, heads=16, head_dim=64, tiling=REF_TILING),
              case("flash2", "fwd_bwd", seq=3072, batch=4, heads=16, head_dim=64, tiling=REF_TILING)]
    return cases


def dq_grid() -> list[CaseSpec]:
    """Our flash2 backward with dQ in a kernel of its own (``dq: separate``) beside the atomic one on the same
    problems: d = 64 and 128, causal or not, GQA, at the backward's default tiles and at 64 × 64."""
    problems = [dict(seq=4096, batch=4, heads=16, head_dim=64), dict(seq=8192, batch=2, heads=16, head_dim=128),
                dict(seq=4096, batch=4, heads=16, head_dim=64, causal=True),
                dict(seq=8192, batch=2, heads=16, head_dim=128, causal=True),
                dict(seq=4096, batch=2, heads=32, kv_heads=8, head_dim=128, causal=True, dtype="bf16")]
    cases = []
    for p in problems:
        for dq in ("atomic", "separate"):
            spec = case("flash2", "fwd_bwd", **p)
            cases.append(CaseSpec(spec.impl, spec.problem, spec.tiling, dq=dq))
    small = Tiling(block_m=64, block_n=64, warps=4)
    cases += [CaseSpec("flash2", case("flash2", "fwd_bwd", seq=4096, batch=4, heads=16, head_dim=64).problem, small,
                       dq="separate"),
              CaseSpec("flash2", case("flash2", "fwd_bwd", seq=8192, batch=2, heads=16, head_dim=128,
                                      causal=True).problem, small, dq="separate")]
    return cases


GRIDS = {"default": default_grid, "smoke": smoke_grid, "h200": h200_grid, "decode": decode_grid, "paged": paged_grid,
         "paged_flex": paged_flex_grid, "lone": lone_grid, "varlen": varlen_grid, "window": window_grid,
         "foreign": manifest_cases, "hopper": hopper_grid, "sdpa": sdpa_grid, "fp8": fp8_grid, "smem": smem_grid,
         "dq": dq_grid, "sdpa_small": sdpa_small_grid, "small": small_grid,
         "sdpa_split": sdpa_split_grid, "sdpa_split2": sdpa_split2_grid}
