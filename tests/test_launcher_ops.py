"""A user's launcher's own PyTorch operations: recorded while it is captured, placed in the schedule, priced.

Checked against what is independent of the code under test: with no L2 an added kernel moves exactly the bytes
its operation reads and writes (the limiting case), an operation the schedule already runs adds nothing (the
schedule is the same), and the recorder against the operations a plain PyTorch function runs.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from iosim.schedule.build import build_schedule
from iosim.schedule.problem import ConfigError, LauncherOp, Operand, Problem, RunConfig
from iosim.simulate import simulate

B, H, D = 2, 4, 64


def _problem(seq: int = 1000, kv_heads: int = H, backward: bool = True, **kw) -> Problem:
    return Problem(batch=B, heads=H, kv_heads=kv_heads, seq_q=seq, head_dim=D, backward=backward, **kw)


def _flag_ops(kv_heads: int = H) -> tuple:
    """FlagAttention's backward launcher: dQ zero-filled before the dQ kernel, dK and dV summed over each group."""
    group = H // kv_heads
    return (
        LauncherOp("aten.zeros_like.default", "bwd", "flash2_bwd_q", (), (Operand("dQ", (B, H, "Nq", D), 2),)),
        LauncherOp("aten.sum.dim_IntList", "bwd", None, (Operand(None, (B, kv_heads, group, "Nk", D), 2),),
                   (Operand("dK", (B, kv_heads, "Nk", D), 2),)),
        LauncherOp("aten.sum.dim_IntList", "bwd", None, (Operand(None, (B, kv_heads, group, "Nk", D), 2),),
                   (Operand("dV", (B, kv_heads, "Nk", D), 2),)),
    )


def test_launcher_ops_round_trip_and_name_the_bad_field():
    config = RunConfig(problem=_problem(), dq="separate", launcher_ops=_flag_ops())
    data = config.to_dict()
    assert data["launcher_ops"][1]["reads"][0] == {"tensor": None, "shape": [B, H, 1, "Nk", D], "elem_bytes": 2}
    assert RunConfig.from_dict(data) == config
    assert "launcher_ops" not in RunConfig(problem=_problem()).to_dict()  # runs without them keep their form
    bad = [({"phase": "middle"}, "launcher_ops.phase: must be one of fwd, bwd"),
           ({"writes": []}, "launcher_ops.writes"),
           ({"writes": [{"tensor": "P", "shape": [1], "elem_bytes": 2}]}, "launcher_ops.tensor: must be one of Q, K"),
           ({"writes": [{"tensor": None, "shape": ["N"], "elem_bytes": 2}]}, "launcher_ops.shape"),
           ({"writes": [{"tensor": None, "shape": [4], "elem_bytes": 0}]}, "launcher_ops.elem_bytes"),
           ({"wrote": []}, "launcher_ops.wrote: unknown field")]
    for change, message in bad:
        op = {**data["launcher_ops"][0], **change}
        with pytest.raises(ConfigError, match=message):
            RunConfig.from_dict({**data, "launcher_ops": [op]})
    with pytest.raises(ConfigError, match="launcher_ops: are a user's kernel's"):
        RunConfig(algo="flash1", problem=_problem(), launcher_ops=_flag_ops())


def test_each_operation_is_a_kernel_in_its_place():
    names = [k.name for k in build_schedule(RunConfig(problem=_problem(), dq="separate", launcher_ops=_flag_ops())).kernels]
    assert names == ["flash2_fwd", "flash2_bwd_pre", "flash2_bwd_kv", "torch_zeros_like", "flash2_bwd_q", "torch_sum",
                     "torch_sum"]
    copy = LauncherOp("aten.clone.default", "fwd", None, (Operand("Q", (B, H, "Nq", D), 2),),
                      (Operand(None, (B, H, "Nq", D), 2),))
    fill = LauncherOp("aten.fill_.Scalar", "fwd", "flash2_fwd", (), (Operand(None, (B, H, "Nq"), 4),))
    names = [k.name for k in build_schedule(RunConfig(problem=_problem(), launcher_ops=(copy, fill))).kernels]
    assert names[:3] == ["torch_fill_", "flash2_fwd", "torch_clone"]  # before the kernel named; else its pass's end
    # the capture says what runs in PyTorch: the schedule's own dQ fill and cast, which this launcher does not run, go
    assert names[3:] == ["flash2_bwd_pre", "flash2_bwd"]


def test_with_no_l2_an_added_kernel_moves_exactly_its_operation_bytes():
    for seq in (1000, 3000):  # the sequence dimensions take the problem's length
        config = RunConfig(problem=_problem(seq), dq="separate", launcher_ops=_flag_ops(), mode="ncu")
        run = simulate(config, "h200", l2_bytes=0)
        added = [k for k in run.kernels if k.name.startswith("torch_")]
        assert len(added) == 3
        for kernel, op in zip(added, config.launcher_ops):
            reads, writes = op.bytes(seq, seq)
            assert (kernel.levels["hbm"].read_bytes, kernel.levels["hbm"].write_bytes) == (reads, writes)
        assert added[0].levels["hbm"].write_bytes == B * H * seq * D * 2


def test_an_operation_the_schedule_runs_already_adds_nothing():
    """flash2's atomic backward fills and casts its fp32 dQ accumulator, and sums dK, dV over groups: a launcher
    that does the same in PyTorch runs the same schedule, byte for byte."""
    p = _problem(kv_heads=2)
    ops = (
        LauncherOp("aten.zeros.default", "bwd", "flash2_bwd", (), (Operand(None, (B, H, "Nq", D), 4),)),
        LauncherOp("aten.sum.dim_IntList", "bwd", None, (Operand(None, (B, 2, 2, "Nk", D), 2),),
                   (Operand("dK", (B, 2, "Nk", D), 2),)),
        LauncherOp("aten.sum.dim_IntList", "bwd", None, (Operand(None, (B, 2, 2, "Nk", D), 2),),
                   (Operand("dV", (B, 2, "Nk", D), 2),)),
        LauncherOp("aten._to_copy.default", "bwd", None, (Operand(None, (B, H, "Nq", D), 4),),
                   (Operand("dQ", (B, H, "Nq", D), 2),)),
    )
    bare = build_schedule(RunConfig(problem=p))
    with_ops = build_schedule(RunConfig(problem=p, launcher_ops=ops))
    assert [k.name for k in with_ops.kernels] == [k.name for k in bare.kernels]
    assert "sum_dk" in [k.name for k in bare.kernels]
    # one more fill than the schedule has is one more kernel
    more = build_schedule(RunConfig(problem=p, launcher_ops=ops + ops[:1]))
    assert [k.name for k in more.kernels].count("torch_zeros") == 1
    # group sums in fp32, then casts (the foreign kernels' launchers): the schedule's bf16 sums are not run
    fp32 = tuple(LauncherOp(name, "bwd", None, (Operand(None, shape_in, eb_in),), (Operand(out, shape_out, eb_out),))
                 for out in ("dK", "dV") for name, shape_in, eb_in, shape_out, eb_out in (
                     ("aten.sum.dim_IntList", (B, 2, 2, "Nk", D), 4, (B, 2, "Nk", D), 4),
                     ("aten._to_copy.default", (B, 2, "Nk", D), 4, (B, 2, "Nk", D), 2)))
    names = [k.name for k in build_schedule(RunConfig(problem=p, launcher_ops=ops[:1] + ops[3:] + fp32)).kernels]
    assert names == ["flash2_fwd", "zeros_dq", "flash2_bwd_pre", "flash2_bwd", "cast_dq", "torch_sum",
                     "torch__to_copy", "torch_sum", "torch__to_copy"]


def test_a_call_tensor_is_the_schedules_own_and_a_temporary_is_new():
    schedule = build_schedule(RunConfig(problem=_problem(), dq="separate", launcher_ops=_flag_ops()))
    fill, total = (next(k for k in schedule.kernels if k.name == n) for n in ("torch_zeros_like", "torch_sum"))
    assert [pt.tensor for pt in fill.patterns] == ["dQ"]
    assert [pt.tensor for pt in total.patterns] == ["tmp1_1", "dK"]
    assert schedule.tensor("tmp1_1").nbytes == schedule.tensor("dK").nbytes
    # two temporaries one operation reads are two tensors: both move their bytes
    add = LauncherOp("aten.add.Tensor", "fwd", None, (Operand(None, (B, H, "Nq", D), 2),) * 2,
                     (Operand(None, (B, H, "Nq", D), 2),))
    run = simulate(RunConfig(problem=_problem(backward=False), launcher_ops=(add,), mode="ncu"), "h200", l2_bytes=0)
    added = next(k for k in run.kernels if k.name == "torch_add")
    assert (added.levels["hbm"].read_bytes, added.levels["hbm"].write_bytes) == add.bytes(1000, 1000)


def test_the_recorder_keeps_what_moves_bytes_and_names_the_calls_tensors():
    torch = pytest.importorskip("torch")
    from iosim.kernels.launcher_ops import Recording, launcher_ops, recording

    q = torch.zeros(B, H, 96, D, dtype=torch.float16)
    k = torch.zeros(B, 2, 128, D, dtype=torch.float16)
    rec = Recording()
    with recording(rec):
        o = torch.empty_like(q)  # an allocation: nothing moves
        rec.launches.append("a Triton launch")
        dk_h = torch.zeros(B, H, 128, D, dtype=torch.float16)  # a fill: written, not read
        dk = dk_h.view(B, 2, 2, 128, D).sum(2)  # a view (nothing), then a reduction
        rec.launches.append("another")
        scale = torch.ones(1)  # no sequence dimension: left out
    assert [op.op for op in rec.ops] == ["aten.zeros.default", "aten.sum.dim_IntList", "aten.ones.default"]
    assert [op.after for op in rec.ops] == [1, 1, 2]
    ops = launcher_ops(rec, {"Q": q, "K": k, "O": o, "dK": dk}, 96, 128,
                       lambda phase, after: {1: "flash2_bwd_q"}.get(after))
    assert len(ops) == 2 and scale.numel() == 1
    fill, total = ops
    assert fill.reads == () and fill.writes == (Operand(None, (B, H, "Nk", D), 2),) and fill.before == "flash2_bwd_q"
    assert total.reads == (Operand(None, (B, 2, 2, "Nk", D), 2),)
    assert total.writes == (Operand("dK", (B, 2, "Nk", D), 2),)
    assert total.bytes(1000, 4000) == (B * H * 4000 * D * 2, B * 2 * 4000 * D * 2)
    # a capture length that equals the head dimension: the last dimension stays the head dimension
    rec = Recording()
    with recording(rec):
        acc = torch.zeros(B, H, 96, 64)
    (fill,) = launcher_ops(rec, {"Q": q}, 96, 64, lambda phase, after: None, head_dim=64)
    assert fill.writes == (Operand(None, (B, H, "Nq", 64), 4),) and acc.shape[-1] == 64


def test_copies_of_k_and_v_for_every_head_make_the_kernels_run_without_gqa():
    """K and V repeated for every query head before the kernel: with no L2 the forward moves what the same
    forward without GQA moves (Q once, 4 heads of K and V once per Q block: the paper's count), and the copies
    read the call's 2-head K, V and write 4 heads."""
    p = Problem(batch=B, heads=H, kv_heads=2, seq_q=1000, head_dim=D)
    copies = tuple(LauncherOp("aten.clone.default", "fwd", "flash2_fwd", (Operand(None, (B, 2, "Nk", D), 2),),
                              (Operand(t, (B, 2, 2, "Nk", D), 2),)) for t in ("K", "V"))
    run = simulate(RunConfig(problem=p, launcher_ops=copies, mode="ncu"), "h200", l2_bytes=0)
    assert run.config["problem"]["kv_heads"] == H
    fwd = next(k for k in run.kernels if k.name == "flash2_fwd")
    mha = simulate(RunConfig(problem=replace(p, kv_heads=H), mode="ncu"), "h200", l2_bytes=0).kernels[0]
    slice_bytes = 1000 * D * 2
    blocks = -(-1000 // run.config["tiling"]["block_m"])
    assert fwd.levels["hbm"] == mha.levels["hbm"]
    assert fwd.levels["hbm"].read_bytes == B * H * slice_bytes * (1 + 2 * blocks)
    for copy in (k for k in run.kernels if k.name == "torch_clone"):
        assert (copy.levels["hbm"].read_bytes, copy.levels["hbm"].write_bytes) == (B * 2 * slice_bytes,
                                                                                     B * H * slice_bytes)


def test_a_copy_the_kernel_is_handed_is_the_input_and_a_reused_address_is_not_a_role(monkeypatch):
    torch = pytest.importorskip("torch")
    from iosim.kernels import launcher_ops as lo

    q = torch.zeros(B, H, 96, D, dtype=torch.float16)
    k = torch.zeros(B, 2, 96, D, dtype=torch.float16)
    real = lo._address
    # the allocator gives a freed temporary's memory to the next fp32 tensor of its size: one address for both
    monkeypatch.setattr(lo, "_address", lambda t: 1 if t.dtype == torch.float32 and t.dim() == 4 else real(t))
    rec = lo.Recording()
    with lo.recording(rec):
        scaled = k * 0.5  # a copy of K that the kernel is handed instead of K
        rec.launches.append("the kernel")
        temp = torch.zeros(B, H, 96, D)  # a temporary, freed ...
        del temp
        dq = torch.zeros(B, H, 96, D)  # ... and its memory taken by the gradient
    kernel_args = {rec.at_launch(real(scaled), "fwd", 0)}
    ops = lo.launcher_ops(rec, {"Q": q, "K": k, "dQ": dq}, 96, 128, lambda phase, after: None, D, kernel_args)
    mul, fill_temp, fill_dq = ops
    assert mul.reads == (Operand(None, (B, 2, "Nq", D), 2),) and mul.writes == (Operand("K", (B, 2, "Nq", D), 2),)
    assert fill_temp.writes[0].tensor is None  # the same address, an earlier allocation: not dQ
    assert fill_dq.writes[0].tensor == "dQ"


def test_a_transposed_or_repeated_copy_is_recorded_as_such_and_runs_atens_strided_kernels():
    """The recorder says which operands are not contiguous; a copy of a transposed view runs ATen's strided
    kernel, a copy that reads fewer elements than it writes (K repeated for each query head) its broadcast one,
    and a contiguous copy its plain one; ``contiguous`` is written only where False, so older captures read as
    they were."""
    torch = pytest.importorskip("torch")
    from iosim.kernels.launcher_ops import Recording, launcher_ops, recording

    q = torch.zeros(B, 96, H, D, dtype=torch.float16)  # tokens first, as a serving engine packs them
    rec = Recording()
    with recording(rec):
        packed = q.transpose(1, 2).contiguous()
        plain = packed.clone()
    transposed, copied = launcher_ops(rec, {"Q": q}, 96, 96, lambda phase, after: "flash2_fwd")
    assert [o.contiguous for o in transposed.reads] == [False] and transposed.writes[0].contiguous
    assert copied.reads[0].contiguous and plain.is_contiguous()
    config = RunConfig(problem=_problem(backward=False), launcher_ops=(transposed, copied))
    data = config.to_dict()
    assert data["launcher_ops"][0]["reads"][0]["contiguous"] is False
    assert "contiguous" not in data["launcher_ops"][1]["reads"][0]
    assert RunConfig.from_dict(data) == config
    repeat = LauncherOp("aten.clone.default", "fwd", "flash2_fwd", (Operand(None, (B, 2, "Nk", D), 2),),
                        (Operand("K", (B, 2, 2, "Nk", D), 2),))
    kinds = {k.name: k.aten for k in build_schedule(RunConfig(problem=_problem(backward=False, kv_heads=2),
                                                              launcher_ops=(transposed, repeat))).kernels}
    assert kinds["flash2_fwd"] == ""
    aten = [k.aten for k in build_schedule(config).kernels if k.name.startswith("torch_")]
    assert aten == ["strided", "copy"]
    assert [k.aten for k in build_schedule(RunConfig(problem=_problem(backward=False, kv_heads=2),
                                                     launcher_ops=(repeat,))).kernels if k.name.startswith("torch_")] == ["broadcast"]
