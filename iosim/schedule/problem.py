"""What to simulate or measure: an attention problem and the launch configuration of the kernels that solve it.

The one problem type of iosim: the simulator, the Triton kernels (``iosim.kernels``), the measuring
harness and the tests all describe a call with these frozen dataclasses, which round-trip through
plain dicts: a kernel reports the configuration it ran with as ``RunConfig.to_dict()`` and the
simulator takes it as is.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

DTYPE_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4, "fp8": 1}  # fp8: e4m3 Q, K, V (the output is fp16)
OUT_DTYPE = {"fp8": "fp16"}  # the output's type where it differs from the inputs' (fp8 attention writes fp16 O)
HEAD_DIMS = (16, 32, 64, 128, 256)  # what iosim's Triton kernels take (a power of two for tl.arange)
# What is modelled: rows of whole 16-byte vectors up to FlashAttention-2's and cuDNN's largest head (a kernel of
# one's own pads a head such as 96 to its power-of-two tile and masks the loads: bytes of d, math of the tile)
HEAD_DIM_STEP, HEAD_DIM_MAX = 8, 256
WARPS = (1, 2, 4, 8, 16)
ALGOS = ("standard", "standard_eager", "flash1", "flash2", "flash_decode")
GRID_ORDERS = ("rows", "heads")
MODES = ("plain", "ncu")
SDPA_IMPLS = ("sdpa_cudnn", "sdpa_flash")  # kernels other than iosim's own that run an algorithm (iosim.schedule.references)
DQ_MODES = ("atomic", "separate", "fused")  # how a FlashAttention backward computes dQ (RunConfig.dq)
PAGE_SIZES = (16, 32, 64, 128, 256)  # tokens per page of a paged KV cache (vLLM's and FlashInfer's range)
PHASES = ("fwd", "bwd")  # the passes a launcher's PyTorch operations run in (LauncherOp.phase)
ROLES = ("Q", "K", "V", "O", "dO", "dQ", "dK", "dV")  # tensors of the call a launcher operation can touch
SEQ_DIMS = ("Nq", "Nk")  # a launcher operand's dimensions that are the problem's sequence lengths
# Where a causal mask's diagonal sits when seq_q != seq_k: query row i sees keys j <= i (top-left: PyTorch's
# is_causal, the Triton kernels here) or j <= i + seq_k - seq_q (bottom-right: FlashAttention-2 from 2.1,
# FlashInfer, a chunked prefill after its cached prefix)
CAUSAL_ALIGNS = ("top-left", "bottom-right")


def head_dim_error(head_dim) -> str | None:
    """Why ``head_dim`` is outside what is modelled (a multiple of 8 up to 256), None where it is inside."""
    if isinstance(head_dim, int) and not isinstance(head_dim, bool) and 0 < head_dim <= HEAD_DIM_MAX \
            and head_dim % HEAD_DIM_STEP == 0:
        return None
    return f"must be a multiple of {HEAD_DIM_STEP} from {HEAD_DIM_STEP} to {HEAD_DIM_MAX}, got {head_dim!r}"


class ConfigError(ValueError):
    """A configuration value outside its allowed range; the message names the field."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def _operand_dict(o: dict) -> dict:
    """An operand as :meth:`RunConfig.to_dict` writes it: its shape a list, ``contiguous`` only where False
    (a capture from before it was recorded reads as contiguous)."""
    out = dict(o, shape=list(o["shape"]))
    if out.get("contiguous", True):
        out.pop("contiguous", None)
    return out


def _under(t: float, cap: int) -> float:
    """The integral of ``min(cap, max(0, a))`` over ``a <= t``: the area under a causal diagonal, clipped at the keys."""
    if t <= 0:
        return 0.0
    return t * t / 2 if t <= cap else cap * cap / 2 + cap * (t - cap)


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(name, f"must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class Problem:
    """One attention call: O = softmax(Q Kᵀ / sqrt(d)) V over ``batch × heads`` independent heads.

    ``kv_heads`` < ``heads`` is grouped-query attention (1 = multi-query): query head h reads
    key/value head ``h // (heads // kv_heads)``. ``backward`` adds the gradient pass.

    ``seq_lens`` is a variable-length batch (``cu_seqlens`` packing, no padding): one length per
    request, the query and key length of each in a prefill, the K/V cache length of each in a decode
    (``seq_q`` query rows each); ``seq_k`` is then the longest. ``window`` is local attention: a query
    sees its ``window`` most recent keys, itself included (causal; in a decode, the last ``window``
    keys of the cache). ``causal_align`` places a causal mask's diagonal when ``seq_q != seq_k``
    (:data:`CAUSAL_ALIGNS`; the same mask either way when they are equal).
    """

    batch: int = 4
    heads: int = 16
    kv_heads: int | None = None
    seq_q: int = 4096
    seq_k: int | None = None
    head_dim: int = 64
    dtype: str = "fp16"
    causal: bool = False
    backward: bool = False
    page_size: int | None = None  # a paged KV cache: pages of this many tokens, in any order (flash_decode)
    seq_lens: tuple[int, ...] | None = None  # a variable-length batch: each request's length
    window: int | None = None  # local attention: keys a query sees, itself included
    causal_align: str = "top-left"  # one of CAUSAL_ALIGNS

    def __post_init__(self):
        if self.kv_heads is None:
            object.__setattr__(self, "kv_heads", self.heads)
        if self.seq_lens is not None:
            lens = self.seq_lens
            if isinstance(lens, (str, bytes)) or not hasattr(lens, "__iter__"):
                raise ConfigError("seq_lens", f"must be a list of positive integers, got {lens!r}")
            lens = tuple(lens)
            for n in lens:
                _positive_int("seq_lens", n)
            if len(lens) != self.batch:
                raise ConfigError("seq_lens", f"needs one length per request (batch={self.batch}), got {len(lens)}")
            if self.seq_k is not None and self.seq_k != max(lens):
                raise ConfigError("seq_k", f"is the longest of seq_lens ({max(lens)}) in a variable-length batch, "
                                           f"got {self.seq_k}")
            object.__setattr__(self, "seq_lens", lens)
            object.__setattr__(self, "seq_k", max(lens))
        if self.seq_k is None:
            object.__setattr__(self, "seq_k", self.seq_q)
        for name in ("batch", "heads", "kv_heads", "seq_q", "seq_k", "head_dim"):
            _positive_int(name, getattr(self, name))
        if self.window is not None:
            _positive_int("window", self.window)
        if self.heads % self.kv_heads:
            raise ConfigError("kv_heads", f"must divide heads={self.heads}, got {self.kv_heads}")
        if self.dtype not in DTYPE_BYTES:
            raise ConfigError("dtype", f"must be one of {', '.join(DTYPE_BYTES)}, got {self.dtype!r}")
        if self.causal_align not in CAUSAL_ALIGNS:
            raise ConfigError("causal_align", f"must be one of {', '.join(CAUSAL_ALIGNS)}, got {self.causal_align!r}")
        if self.page_size is not None and self.page_size not in PAGE_SIZES:
            raise ConfigError("page_size", f"must be one of {', '.join(map(str, PAGE_SIZES))}, got {self.page_size!r}")

    @property
    def elem_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def out_bytes(self) -> int:
        """Bytes of an element of the output O (fp16 for fp8 inputs, as FlashAttention-3 writes it)."""
        return DTYPE_BYTES[OUT_DTYPE.get(self.dtype, self.dtype)]

    @property
    def bh(self) -> int:
        """Number of (batch, query head) pairs."""
        return self.batch * self.heads

    @property
    def bh_kv(self) -> int:
        return self.batch * self.kv_heads

    @property
    def group(self) -> int:
        """Query heads per key/value head."""
        return self.heads // self.kv_heads

    def kv_index(self, bh: int) -> int:
        """The key/value (batch, head) row that query (batch, head) ``bh`` reads."""
        b, h = divmod(bh, self.heads)
        return b * self.kv_heads + h // self.group

    @property
    def causal_offset(self) -> int:
        """Keys past its own index a query row sees under the causal mask: row i sees keys j <= i + offset
        (0 top-left, seq_k - seq_q bottom-right; 0 without a mask)."""
        if not self.causal or self.causal_align == "top-left":
            return 0
        return self.seq_k - self.seq_q

    @property
    def lengths(self) -> tuple[int, ...]:
        """Each request's length (its K/V length): ``seq_lens``, or ``seq_k`` for every request."""
        return self.seq_lens if self.seq_lens is not None else (self.seq_k,) * self.batch

    def flops(self) -> float:
        """Matmul FLOPs by the FlashAttention papers' convention: 4·H·d per (query, key) pair of every
        request, Nq·Nk pairs, ½ if causal (with Nq != Nk the area under the diagonal), ×3.5 with backward;
        a window counts the pairs it keeps (N·W − W²/2 causal, which is N²/2 at W = N; Nq·W in a decode)."""
        pairs = 0.0
        if self.causal and self.seq_q != self.seq_k and self.seq_lens is None:  # a rectangle cut by its diagonal:
            o, nk = self.causal_offset, self.seq_k  # the area under it, N²/2 at equal lengths as below
            pairs = (_under(self.seq_q + o, nk) - _under(o, nk)) * self.batch
            f = 4.0 * self.heads * self.head_dim * pairs
            return f * 3.5 if self.backward else f
        for n in self.lengths:
            nq = n if self.seq_lens is not None and self.seq_q == self.seq_k else self.seq_q
            if self.causal:
                w = min(self.window or n, n)
                pairs += n * w - w * w / 2
            else:
                pairs += nq * min(self.window or n, n)
        f = 4.0 * self.heads * self.head_dim * pairs
        return f * 3.5 if self.backward else f


@dataclass(frozen=True)
class Tiling:
    """Launch configuration shared by every kernel of one algorithm.

    ``block_m`` rows of Q (or of the output) and ``block_n`` rows of K/V per tile; ``None`` (also for
    ``warps`` and ``stages``) picks the algorithm's default, which matches its Triton kernel. ``grid_order`` says which grid axis the block scheduler walks fastest:
    ``rows`` launches the Q blocks of one head together (FlashAttention-2's order), ``heads`` the
    same Q block of every head together. ``persistent`` models a persistent kernel: it launches that many
    CTAs, each taking the tiles in turn (CTA c the tiles c, c + persistent, ...), so only that many run at
    once and a CTA's tiles follow one another on its SM.
    """

    block_m: int | None = None
    block_n: int | None = None
    warps: int | None = None
    stages: int | None = None
    grid_order: str = "rows"
    splits: int | None = None  # flash_decode: CTAs the K/V length is split across (None: fill the GPU)
    persistent: int | None = None  # flash2's forward: CTAs a persistent kernel launches (None: one CTA a tile)

    def __post_init__(self):
        for name in ("block_m", "block_n"):
            value = getattr(self, name)
            if value is not None:
                _positive_int(name, value)
                if value & (value - 1) or value < 16:
                    raise ConfigError(name, f"must be a power of two >= 16, got {value}")
        if self.warps is not None and self.warps not in WARPS:
            raise ConfigError("warps", f"must be one of {', '.join(map(str, WARPS))}, got {self.warps}")
        if self.stages is not None:
            _positive_int("stages", self.stages)
        if self.splits is not None:
            _positive_int("splits", self.splits)
        if self.persistent is not None:
            _positive_int("persistent", self.persistent)
        if self.grid_order not in GRID_ORDERS:
            raise ConfigError("grid_order", f"must be one of {', '.join(GRID_ORDERS)}, got {self.grid_order!r}")


@dataclass(frozen=True)
class Operand:
    """A tensor a launcher operation reads or writes: which of the call's tensors it is (``tensor``, one of
    :data:`ROLES`; None for the launcher's own temporaries), its shape with the sequence dimensions named
    (``"Nq"``, ``"Nk"``: they take the problem's lengths), its element size, and whether its elements lie in
    order (False: a transposed or broadcast view, which ATen copies element by element, not in vectors)."""

    tensor: str | None
    shape: tuple
    elem_bytes: int
    contiguous: bool = True

    def __post_init__(self):
        if self.tensor is not None and self.tensor not in ROLES:
            raise ConfigError("launcher_ops.tensor", f"must be one of {', '.join(ROLES)} or null, got {self.tensor!r}")
        shape = tuple(self.shape)
        for dim in shape:
            if dim not in SEQ_DIMS and (not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0):
                raise ConfigError("launcher_ops.shape", f"dimensions must be positive integers or one of "
                                                        f"{', '.join(SEQ_DIMS)}, got {dim!r}")
        _positive_int("launcher_ops.elem_bytes", self.elem_bytes)
        object.__setattr__(self, "shape", shape)

    def dims(self, seq_q: int, seq_k: int) -> tuple[int, ...]:
        """The shape at sequence lengths ``seq_q``, ``seq_k``."""
        return tuple(seq_q if d == "Nq" else seq_k if d == "Nk" else d for d in self.shape)

    def numel(self, seq_q: int, seq_k: int) -> int:
        n = 1
        for dim in self.dims(seq_q, seq_k):
            n *= dim
        return n

    def nbytes(self, seq_q: int, seq_k: int) -> int:
        return self.numel(seq_q, seq_k) * self.elem_bytes


@dataclass(frozen=True)
class LauncherOp:
    """A PyTorch operation a user's launcher runs between its Triton kernels (``torch.zeros_like(dq)``, a group
    sum of dK, a cast), as :mod:`iosim.kernels.launcher_ops` records it: the ATen operator, the pass, the
    schedule kernel it runs before (None: at the end of its pass) and the tensors it reads and writes.
    The schedule prices it as a PyTorch elementwise kernel (:mod:`iosim.schedule.launcher`)."""

    op: str
    phase: str
    before: str | None = None
    reads: tuple = ()
    writes: tuple = ()

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ConfigError("launcher_ops.phase", f"must be one of {', '.join(PHASES)}, got {self.phase!r}")
        if not self.writes:
            raise ConfigError("launcher_ops.writes", f"{self.op}: an operation the schedule prices writes a tensor")
        for name in ("reads", "writes"):
            ops = tuple(o if isinstance(o, Operand) else _build(Operand, dict(o), f"launcher_ops.{name}")
                        for o in getattr(self, name))
            object.__setattr__(self, name, ops)

    def bytes(self, seq_q: int, seq_k: int) -> tuple[int, int]:
        """(bytes read, bytes written) at sequence lengths ``seq_q``, ``seq_k``."""
        return (sum(o.nbytes(seq_q, seq_k) for o in self.reads), sum(o.nbytes(seq_q, seq_k) for o in self.writes))


@dataclass(frozen=True)
class RunConfig:
    """Everything one simulation needs besides the hardware profile.

    ``mode`` is ``plain`` (L2 contents carry from one kernel to the next, as in a normal run) or
    ``ncu`` (L2 written back and invalidated before every kernel, as Nsight Compute's default
    cache control does). ``host_tensors`` names tensors that live in host memory (offload).
    ``dq`` is how a FlashAttention backward computes dQ: ``atomic`` (FlashAttention-2's, ``kernels/flash2.py``:
    the kernel over K/V blocks adds each dQ block atomically into an fp32 buffer) or ``separate`` (a second
    kernel over Q blocks streams K/V again and writes dQ once, as FlagAttention does) or ``fused`` (the same two
    loops in one kernel, each CTA the K/V-outer loop of its K/V block then the Q-outer loop of its Q block, as
    Triton's tutorial does).
    :func:`iosim.schedule.tiling.resolve` fills every ``None`` of the tilings with its default; a
    simulation's result records the resolved configuration.
    """

    algo: str = "flash2"
    problem: Problem = field(default_factory=Problem)
    tiling: Tiling = field(default_factory=Tiling)
    mode: str = "plain"
    host_tensors: tuple[str, ...] = ()
    backward_tiling: Tiling | None = None  # the backward kernels' tiling; None: ``tiling``'s overrides
    impl: str | None = None  # whose kernels run it: None for iosim's Triton kernels, else one of SDPA_IMPLS (PyTorch SDPA's)
    dq: str = "atomic"  # a FlashAttention backward's dQ: one of DQ_MODES
    launcher_ops: tuple = ()  # LauncherOp: what a user's launcher runs in PyTorch besides its Triton kernels
    # a FlashAttention backward's preprocess (D = rowsum(dO∘O)): its rows per CTA (block_m) and warps, as a user's
    # kernel launches it; None: the backward tiling's
    preprocess_tiling: Tiling | None = None
    # a causal flash kernel skips the blocks wholly above its diagonal (True, as FlashAttention does), or visits every
    # block and masks (False: a user's kernel that only masks, which iosim.kernels.causal_align finds by running it)
    skips_masked: bool = True

    def __post_init__(self):
        if self.algo not in ALGOS:
            raise ConfigError("algo", f"must be one of {', '.join(ALGOS)}, got {self.algo!r}")
        if self.impl is not None and self.impl not in SDPA_IMPLS:
            raise ConfigError("impl", f"must be one of ours, {', '.join(SDPA_IMPLS)} (ours: iosim's own kernels), got {self.impl!r}")
        if self.impl is not None and self.algo != "flash2":
            raise ConfigError("impl", f"{self.impl} runs FlashAttention-2's schedule: algo must be flash2, got {self.algo!r}")
        if self.mode not in MODES:
            raise ConfigError("mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.dq not in DQ_MODES:
            raise ConfigError("dq", f"must be one of {', '.join(DQ_MODES)}, got {self.dq!r}")
        if self.dq != "atomic" and (self.algo not in ("flash1", "flash2") or self.impl is not None):
            raise ConfigError("dq", f"{self.dq} is a FlashAttention backward of iosim's or a user's kernels: algo must "
                                    f"be flash1 or flash2 with impl ours, got algo {self.algo!r}, impl {self.impl or 'ours'}")
        object.__setattr__(self, "host_tensors", tuple(self.host_tensors))
        ops = tuple(o if isinstance(o, LauncherOp) else _build(LauncherOp, dict(o), "launcher_ops")
                    for o in self.launcher_ops)
        if ops and (self.algo != "flash2" or self.impl is not None):
            raise ConfigError("launcher_ops", f"are a user's kernel's (algo flash2, impl ours), got algo {self.algo!r}, "
                                              f"impl {self.impl or 'ours'}")
        object.__setattr__(self, "launcher_ops", ops)
        if self.tiling.persistent is not None and (self.algo != "flash2" or self.impl is not None):
            raise ConfigError("persistent", f"is a persistent flash2 forward's (algo flash2, impl ours), got algo "
                                            f"{self.algo!r}, impl {self.impl or 'ours'}")
        if self.tiling.splits is not None and self.algo != "flash_decode" and self.impl != "sdpa_flash":
            raise ConfigError("splits", f"splits the K/V length of flash_decode or of SDPA's flash backend's forward "
                                        f"(impl sdpa_flash), got algo {self.algo!r}, impl {self.impl or 'ours'}")
        if self.backward_tiling is not None and self.backward_tiling.persistent is not None:
            raise ConfigError("backward_tiling.persistent", "a persistent kernel is modelled for the forward only")
        if not self.skips_masked and (self.algo != "flash2" or self.impl is not None):
            raise ConfigError("skips_masked", f"False is a user's kernel's (algo flash2, impl ours), got algo "
                                              f"{self.algo!r}, impl {self.impl or 'ours'}")

    def to_dict(self) -> dict:
        out = asdict(self) | {"host_tensors": list(self.host_tensors)}
        if out["impl"] is None:  # only SDPA's kernels say so: other runs keep their old form
            del out["impl"]
        if out["dq"] == "atomic":  # only a backward with dQ in a kernel of its own says so
            del out["dq"]
        if not out["launcher_ops"]:  # only a user's launcher with PyTorch operations of its own says so
            del out["launcher_ops"]
        else:
            out["launcher_ops"] = [dict(op, **{key: [_operand_dict(o) for o in op[key]] for key in ("reads", "writes")})
                                   for op in out["launcher_ops"]]
        if out["preprocess_tiling"] is None:  # only a user's backward whose preprocess launches its own way says so
            del out["preprocess_tiling"]
        if out["skips_masked"]:  # only a user's causal kernel that visits every block says so
            del out["skips_masked"]
        for key in ("tiling", "backward_tiling", "preprocess_tiling"):  # only flash-decoding splits and persistent
            for name in ("splits", "persistent"):  # kernels say so: other runs keep their old form
                if out.get(key) is not None and out[key][name] is None:
                    del out[key][name]
        for key in ("page_size", "seq_lens", "window"):  # only a paged cache, a ragged batch, a window say so
            if out["problem"][key] is None:
                del out["problem"][key]
        if out["problem"]["causal_align"] == "top-left":  # only a bottom-right causal mask says so
            del out["problem"]["causal_align"]
        if out["problem"].get("seq_lens") is not None:
            out["problem"]["seq_lens"] = list(out["problem"]["seq_lens"])
        return out

    def resolved(self) -> RunConfig:
        """This configuration with both passes' tiles, warps and stages spelled out (see :mod:`iosim.schedule.tiling`)."""
        from iosim.schedule.tiling import resolve

        return resolve(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """Build from ``to_dict`` output or a kernel's reported configuration; unknown keys are refused."""
        data = dict(data)
        problem = _build(Problem, data.pop("problem", {}), "problem")
        tiling = _build(Tiling, data.pop("tiling", None) or {}, "tiling")
        backward = data.pop("backward_tiling", None)
        backward = None if backward is None else _build(Tiling, backward, "backward_tiling")
        pre = data.pop("preprocess_tiling", None)
        pre = None if pre is None else _build(Tiling, pre, "preprocess_tiling")
        return _build(cls, data, "run", problem=problem, tiling=tiling, backward_tiling=backward, preprocess_tiling=pre)

    def with_(self, **changes) -> RunConfig:
        return replace(self, **changes)


def _build(cls, data: dict, where: str, **extra):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(known))}")
    return cls(**data, **extra)
