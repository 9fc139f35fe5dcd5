"""The instruction-latency chains (kernels/latency_bench.py) without a GPU: the arithmetic that cancels all but
the chain, against hand-computed values; the PTX the chains are generated from; the dependency check on
synthetic SASS; and what every chain compiles to for sm_90 (ahead of time, with the ptxas and cuobjdump
Triton ships). Under TRITON_INTERPRET=1 inline PTX does not run, so the kernels are never executed here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from iosim.costs.sass import Instruction, LoopMix, control_fields
from iosim.kernels import latency_bench as lb

# --------------------------------------------------------------------------- arithmetic (pure)


def test_cycles_per_op_cancels_fixed_costs_and_the_loop_overhead():
    # T(U, I) = c(U) + I·(U·L + o) with L = 23 cycles a step, o = 9 cycles a pass, c(32) = 700, c(128) = 1900:
    # T(32, 8) = 700 + 8·745 = 6660, T(32, 40) = 700 + 40·745 = 30500,
    # T(128, 8) = 1900 + 8·2953 = 25524, T(128, 40) = 1900 + 40·2953 = 120020.
    # Per pass: (30500 − 6660) / 32 = 745 and (120020 − 25524) / 32 = 2953; per step (2953 − 745) / 96 = 23.
    cycles = {(32, 8): 6660, (32, 40): 30500, (128, 8): 25524, (128, 40): 120020}
    assert lb.cycles_per_op(cycles) == 23.0


def test_cycles_per_op_without_overheads_is_cycles_over_steps():
    # 4 cycles a step and nothing else: T = 4·U·I, so any two lengths give 4.
    assert lb.cycles_per_op({(u, i): 4.0 * u * i for u in (2, 6) for i in (3, 5)}) == 4.0


def test_cycles_per_op_needs_two_unrolls_times_two_pass_counts():
    with pytest.raises(ValueError, match=r"cycles\(=\[\(32, 8\), \(32, 40\)\]\)"):
        lb.cycles_per_op({(32, 8): 1.0, (32, 40): 2.0})
    with pytest.raises(ValueError, match="two unrolls × two pass counts"):
        lb.cycles_per_op({(32, 8): 1.0, (32, 40): 2.0, (128, 8): 3.0, (128, 40): 4.0, (64, 8): 5.0})


def _fake_torch():
    """What chain_latency uses of torch, on the CPU: int64 tensors "on cuda" and a no-op synchronize."""
    torch = pytest.importorskip("torch")
    return SimpleNamespace(int64=torch.int64, zeros=lambda n, dtype, device: torch.zeros(n, dtype=dtype),
                           cuda=SimpleNamespace(synchronize=lambda: None))


def _fake_loops(latency: dict[str, float], launches: list):
    """A stand-in for chain_loops writing lane 0's cycles as the kernel would: T(U, I) = 500 + I·(U·L + 7)."""

    def chain_loops(out, key, iters, unrolls=lb.UNROLLS):
        launches.append((key, iters))
        if key not in latency:
            raise RuntimeError("PTX does not assemble\nsecond line")
        for n, u in enumerate(unrolls):
            out[n * lb.LANES] = 500 + iters * (u * latency[key] + 7)

    return chain_loops


def test_chain_latency_reads_both_loops_of_each_launch(monkeypatch):
    launches = []
    monkeypatch.setattr(lb, "chain_loops", _fake_loops({"lat_shfl": 23.0}, launches))
    assert lb.chain_latency(_fake_torch(), "lat_shfl") == 23.0
    # one launch that compiles, then the two pass counts in each of the REPS repetitions
    assert launches == [("lat_shfl", 8)] + [("lat_shfl", 8), ("lat_shfl", 40)] * lb.REPS


def test_a_failing_chain_is_reported_and_left_out(monkeypatch):
    monkeypatch.setattr(lb, "chain_loops", _fake_loops({k: 4.0 for k in lb.CHAINS if k != "lat_lds"}, []))
    messages = []
    lat = lb.instruction_latencies(_fake_torch(), progress=messages.append)
    assert lat == {k: 4.0 for k in lb.CHAINS if k != "lat_lds"}
    assert messages == ["lat_lds: failed: RuntimeError: PTX does not assemble"]


# --------------------------------------------------------------------------- generated PTX


def test_body_ptx_chains_steps_from_input_to_output():
    assert lb.body_ptx("lat_shfl", 6).splitlines() == [
        "{", '.pragma "nounroll";', ".reg .b32 v<6>;",
        "shfl.sync.bfly.b32 v0, $1, 1, 0x1f, 0xffffffff;",  # lane masks 2^(k mod 5)
        "shfl.sync.bfly.b32 v1, v0, 2, 0x1f, 0xffffffff;",
        "shfl.sync.bfly.b32 v2, v1, 4, 0x1f, 0xffffffff;",
        "shfl.sync.bfly.b32 v3, v2, 8, 0x1f, 0xffffffff;",
        "shfl.sync.bfly.b32 v4, v3, 16, 0x1f, 0xffffffff;",
        "shfl.sync.bfly.b32 v5, v4, 1, 0x1f, 0xffffffff;",
        "mov.b32 $0, v5;", "}"]
    assert lb.body_ptx("lat_mufu_ex2", 2).splitlines()[3:5] == [
        "{ .reg .f32 t; neg.f32 t, $1; ex2.approx.ftz.f32 v0, t; }",
        "{ .reg .f32 t; neg.f32 t, v0; ex2.approx.ftz.f32 v1, t; }"]


def test_shared_setup_links_each_lanes_words_into_a_cycle():
    # 3 words per lane, 128 bytes apart: word 0 → word 1 → word 2 → word 0, at byte 4·lane + 128·k
    lines = lb.shared_setup_ptx(slots=3).splitlines()
    assert lines[1] == ".shared .align 128 .b32 lat_chase[96];"
    assert lines[7:10] == ["add.u32 n, a, 128; st.shared.u32 [a+0], n;",
                           "add.u32 n, a, 256; st.shared.u32 [a+128], n;",
                           "add.u32 n, a, 0; st.shared.u32 [a+256], n;"]
    assert lines[-3:] == ["bar.warp.sync 0xffffffff;", "mov.u32 $0, a;", "}"]


# --------------------------------------------------------------------------- dependency check (synthetic SASS)


def _body(*texts: str) -> list[Instruction]:
    return [Instruction(16 * k, t.split()[1 if t.startswith("@") else 0].split(".")[0], t)
            for k, t in enumerate(texts)]


def test_chain_steps_follows_registers_through_the_back_branch():
    body = _body("SHFL.BFLY PT, R0, R4, 0x1, 0x1f", "UIADD3 UR4, UR4, -0x1, URZ", "SHFL.BFLY PT, R5, R0, 0x2, 0x1f",
                 "SHFL.BFLY PT, R4, R5, 0x4, 0x1f", "@P0 BRA 0x0")
    assert lb.chain_steps(body, "SHFL.BFLY") == 3
    assert lb.chain_steps(_body("LDS R5, [R4]", "LDS R4, [R5]", "@P0 BRA 0x0"), "LDS") == 2


def test_chain_steps_rejects_a_step_that_skips_its_predecessor():
    # An independent step: ptxas could overlap it with the one before.
    with pytest.raises(ValueError, match=r"'MUFU.EX2 R6, -R4' at 0x10 does not read R5"):
        lb.chain_steps(_body("MUFU.EX2 R5, -R4", "MUFU.EX2 R6, -R4", "MUFU.EX2 R4, -R6"), "MUFU.EX2")
    # Another instruction in the chain (here an |x| that ptxas did not fold): its latency would be counted too.
    with pytest.raises(ValueError, match=r"'MUFU.RCP R4, R6' at 0x20 does not read R5"):
        lb.chain_steps(_body("MUFU.RCP R5, R4", "FADD.FTZ R6, |R5|, -RZ", "MUFU.RCP R4, R6"), "MUFU.RCP")
    with pytest.raises(ValueError, match="no FFMA in the loop body"):
        lb.chain_steps(_body("MUFU.RCP R4, R4"), "FFMA")


def test_mnemonic_keeps_modifiers_and_drops_the_predicate():
    (insn,) = _body("@!P1 F2FP.F16.F32.PACK_AB R4, R4, R4")
    assert lb.mnemonic(insn) == "F2FP.F16.F32.PACK_AB"


# --------------------------------------------------------------------------- what the chains compile to for sm_90

SASS_SCRIPT = textwrap.dedent('''
    import json, sys
    from iosim.kernels import latency_bench as lb
    json.dump({key: lb.chain_sass(key) for key in lb.CHAINS}, sys.stdout)
''')
LOOP_CONTROL = {"UIADD3", "ISETP", "BRA"}  # the pass counter in a uniform register, its test, the back branch
SCOREBOARDED = {"lat_mufu_ex2": "MUFU", "lat_mufu_rcp": "MUFU", "lat_shfl": "SHFL", "lat_lds": "LDS"}

@pytest.fixture(scope="module")
def chain_sass(tmp_path_factory):
    """``{key: cuobjdump -sass text}`` of every chain kernel, compiled for sm_90 in a process of its own (the
    test process has TRITON_INTERPRET=1, under which there is nothing to compile)."""
    tmp = tmp_path_factory.mktemp("latency_sass")
    script = tmp / "chain_sass.py"
    script.write_text(SASS_SCRIPT)
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp / "cache")}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


@pytest.mark.sass
@pytest.mark.parametrize("key", list(lb.CHAINS))
def test_each_loop_is_one_dependent_chain_of_the_intended_instruction(chain_sass, key):
    bodies = lb.loop_bodies(chain_sass[key])
    assert len(bodies) == 2  # the short loop, then the long one; neither unrolled nor deleted by ptxas
    for body, unroll in zip(bodies, lb.UNROLLS):
        # exactly one step per PTX step (none folded, none hoisted), each reading the one before
        assert lb.chain_steps(body, lb.CHAINS[key].sass) == unroll
        assert {i.opcode for i in body if lb.mnemonic(i) != lb.CHAINS[key].sass} == LOOP_CONTROL
        # Variable latency: every step waits on a scoreboard its predecessor releases (what the simulator prices;
        # the first step of a pass also waits on the one before last, already done). FFMA and F2FP are fixed
        # latency on sm_90: ptxas's stall counts carry the dependency, no scoreboard.
        steps = [i for i in body if lb.mnemonic(i) == lb.CHAINS[key].sass]
        waiting = [control_fields(i.control)[3] != 0 for i in steps]
        producers = set(LoopMix.of(body, depth=1, loop=True).waits)
        if key in SCOREBOARDED:
            assert all(waiting) and producers == {SCOREBOARDED[key]}
        else:
            assert not any(waiting) and producers == set()


@pytest.mark.sass
def test_the_shared_memory_chase_is_set_up_outside_the_loops(chain_sass):
    text = chain_sass["lat_lds"]
    assert text.count(" STS ") == lb.SLOTS  # each lane's words, stored once before the first clock read
    assert all(" STS " not in i.text for body in lb.loop_bodies(text) for i in body)
    assert all(" STS " not in chain_sass[key] for key in lb.CHAINS if key != "lat_lds")


# --------------------------------------------------------------------------- CLI and GPU


def test_main_without_a_gpu_prints_one_line_and_exits_2(capsys):
    torch = pytest.importorskip("torch")

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: main would measure")
    assert lb.main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: HarnessError: no CUDA GPU") and err.count("\n") == 1


@pytest.mark.gpu
def test_latencies_on_the_gpu():
    import torch

    lat = lb.instruction_latencies(torch)
    assert set(lat) == set(lb.CHAINS)
    # A dependent FFMA issues every 4 cycles from Volta to Hopper (ptxas encodes a 4-cycle stall); the
    # differences of four loops leave no overhead, so the median is 4 within clock jitter.
    assert lat["lat_fma"] == pytest.approx(4.0, abs=0.25)
    # The scoreboarded instructions wait at least as long as ptxas's shortest fixed latency.
    assert all(4.0 <= lat[k] < 200.0 for k in SCOREBOARDED)
