"""Predictions held against hardware: each measured case simulated exactly as it ran, error per metric.

A measurement file (:mod:`iosim.measurement`) records the run configuration of every case, the GPU,
and the cache conditions of its counters. Validation simulates each case with that configuration on
that GPU's profile (the calibrated one where it exists), in ``ncu`` mode when Nsight Compute flushed
the caches before every kernel (its default, ``cache_control: all``) and ``plain`` otherwise, and
compares DRAM read, DRAM write, their sum, the L2 in two views and time. The L2 views: the bytes SMs
move over the crossbar (``xbar_bytes``; ncu's ``l1tex__m_xbar2l1tex_read_bytes`` +
``l1tex__m_l1tex2xbar_write_bytes``: what the papers call HBM accesses) and the bytes the L2 slices
look up after Hopper's request coalescer merged identical loads (``l2_lookup_bytes``;
``lts__t_sectors_srcunit_tex_op_*`` × 32). Files without those counters compare ``l2_bytes``
(``lts__t_bytes``, every tag lookup) with the predicted lookups. ``inst_executed`` holds the warp
instructions the kernels' compiled code predicts against ``smsp__inst_executed``, and
``shared_wavefronts`` the shared-memory wavefronts it predicts (:func:`iosim.costs.issue.shared_cycles`)
against ``l1tex__data_pipe_lsu_wavefronts_mem_shared`` where a file has that counter. Time is Nsight
Compute's summed kernel duration when counters exist (same conditions as the simulation), else the
median wall time.
The FlashAttention paper's closed form is reported beside it. PyTorch SDPA's cuDNN and flash
backends are modelled on sm_90 (:mod:`iosim.schedule.references`: FlashAttention-2's schedule on
their tiles, priced from what their kernels executed); cases the simulator does not model (other
GPUs, FlexAttention) are listed and left out of the summary.
"""
from __future__ import annotations

import functools
import itertools
import math
import re
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from iosim.costs import closed_forms
from iosim.hardware.profile import ProfileError, builtin_profiles, load_profile
from iosim.measure.kernel_codes import case_codes, case_dq, case_launcher_ops
from iosim.measure.measurement import KERNEL_IMPL, REFERENCE_IMPLS, Measurement, load_measurement
from iosim.results.caveats import regimes
from iosim.schedule.problem import SDPA_IMPLS, ConfigError, Problem, RunConfig, Tiling
from iosim.schedule.references import reference_config
from iosim.schedule.tiling import launched_preprocess, launched_tilings
from iosim.simulate import simulate

METRICS = ("dram_read_bytes", "dram_write_bytes", "dram_bytes", "xbar_bytes", "l2_lookup_bytes", "l2_bytes",
           "inst_executed", "shared_wavefronts", "local_bytes", "time_s")
WITHIN = 1.35  # every case's prediction should lie within this factor of its measurement
# Substrings of the GPU name a driver reports -> built-in profile id.
GPU_PROFILES = (("H200", "h200"), ("H100", "h100-sxm"), ("A100-SXM4-80GB", "a100-sxm4-80gb"),
                ("A100-SXM4-40GB", "a100-sxm4-40gb"), ("A100 80GB", "a100-sxm4-80gb"), ("A100", "a100-sxm4-40gb"),
                ("4090", "rtx4090"))


class ValidationError(ValueError):
    """A measurement that cannot be validated; the one-line message names the file and field."""


@dataclass(frozen=True)
class CaseResult:
    """One measured case beside its prediction: metric -> bytes or seconds."""

    name: str
    config: dict
    gpu: str
    predicted: dict
    measured: dict
    paper: dict = field(default_factory=dict)  # the paper's closed form: dram_bytes
    note: str = ""  # e.g. a user kernel priced without its own compiled code
    regimes: tuple = ()  # where the model is least certain, by its kernels (iosim.results.caveats)
    kernels: tuple = ()  # each simulated kernel beside the measured one it stands for (:func:`kernel_pairs`)

    def error(self, metric: str) -> float | None:
        """Relative error (predicted − measured) / measured, or None where either is missing."""
        p, m = self.predicted.get(metric), self.measured.get(metric)
        if p is None or not m:
            return None
        return (p - m) / m

    def to_dict(self) -> dict:
        return {"name": self.name, "config": self.config, "gpu": self.gpu, "predicted": self.predicted,
                "measured": self.measured, "paper": self.paper,
                "error": {k: self.error(k) for k in METRICS}, **({"note": self.note} if self.note else {}),
                **({"regimes": list(self.regimes)} if self.regimes else {}),
                **({"kernels": list(self.kernels)} if self.kernels else {})}


def profile_for(gpu_name: str, override: str | None = None, where: str = "provenance.gpu_name"):
    """The profile to simulate a measured GPU with: ``override``, else the calibrated built-in, else the built-in."""
    if override:
        return load_profile(override)
    for needle, pid in GPU_PROFILES:
        if needle.lower() in gpu_name.lower():
            calibrated = f"{pid}-calibrated"
            return load_profile(calibrated if calibrated in builtin_profiles() else pid)
    raise ValidationError(f"{where}: no profile for GPU {gpu_name!r}; pass --gpu NAME|FILE "
                          f"(built in: {', '.join(builtin_profiles())})")


def validate(measurement: Measurement, gpu: str | None = None, progress=None, source: str = "",
             impls: tuple | None = None, jobs: int = 1, path: str | Path | None = None,
             l2_lines: int | None = None, aggregate: bool = True) -> tuple:
    """Simulate every modelled case of ``measurement`` (of those ``impls`` only, where given: ``flash2``,
    ``sdpa_cudnn``, ``kernel``, ...; ``ours``: every case not PyTorch's own attention); return (case
    results, names of cases skipped and why). ``jobs`` > 1 simulates the cases on that many processes
    (each reloads the measurement from ``path``, the file it came from); the results are the same.
    ``l2_lines``: the L2 model's resolution (see :func:`~iosim.simulate.simulate`). ``aggregate=False`` simulates
    each case one CTA a process, one loop iteration a step (the per-CTA run the aggregated one stands for: slower,
    and on multi-wave forwards nearer the GPU, see docs/validation.md)."""
    prov = measurement.provenance
    profile = profile_for(prov.gpu_name, gpu, f"{source}: provenance.gpu_name" if source else "provenance.gpu_name")
    cases = measurement.cases
    chosen = [n for n, case in enumerate(cases) if _selected(case, impls)]
    if jobs > 1 and path is not None and len(chosen) > 1:
        done: dict = {}
        with ProcessPoolExecutor(max_workers=min(jobs, len(chosen))) as pool:
            futures = {pool.submit(_case_in_worker, str(path), n, gpu, source, l2_lines, aggregate): n
                       for n in chosen}
            for future in as_completed(futures):
                n = futures[future]
                done[n] = future.result()
                if progress:
                    progress(len(done), len(cases), cases[n].name)
        outcomes = [done[n] for n in chosen]
    else:
        outcomes = []
        for n in chosen:
            if progress:  # progress(cases started, cases in the file, the case now simulated)
                progress(n + 1, len(cases), cases[n].name)
            outcomes.append(_case(cases[n], n, profile, prov, source, l2_lines, aggregate))
    results = [value for kind, value in outcomes if kind == "result"]
    skipped = [value for kind, value in outcomes if kind == "skipped"]
    return results, skipped


def _selected(case, impls: tuple | None) -> bool:
    return impls is None or case.impl in impls or ("ours" in impls and case.impl not in REFERENCE_IMPLS)


@functools.lru_cache(maxsize=4)
def _worker_measurement(path: str) -> Measurement:
    return load_measurement(path)


def _case_in_worker(path: str, n: int, gpu: str | None, source: str, l2_lines: int | None = None,
                    aggregate: bool = True) -> tuple:
    """:func:`_case` in a worker process: the measurement and profile loaded there (profiles do not pickle)."""
    measurement = _worker_measurement(path)
    prov = measurement.provenance
    profile = profile_for(prov.gpu_name, gpu, f"{source}: provenance.gpu_name" if source else "provenance.gpu_name")
    return _case(measurement.cases[n], n, profile, prov, source, l2_lines, aggregate)


def _case(case, n: int, profile, prov, source: str, l2_lines: int | None = None, aggregate: bool = True) -> tuple:
    """One case simulated as it ran: ``("result", CaseResult)`` or ``("skipped", (name, why))``."""
    why = _skip_reason(case)
    if why:
        return "skipped", (case.name, why)
    counted = case.counters is not None
    mode = "ncu" if counted and prov.cache_control == "all" else "plain"
    codes, note = (None, "")
    try:
        if case.impl in SDPA_IMPLS:  # SDPA's backends: flash2's schedule on their kernels (iosim.schedule.references)
            problem = Problem(**case.run_config["problem"])
            try:
                config = reference_config(case.impl, problem, profile.arch, mode)
            except ConfigError as e:
                return "skipped", (case.name, f"not modelled: {e}")
        else:
            config = RunConfig.from_dict(case.run_config).with_(mode=mode)
    except (ConfigError, TypeError) as e:
        raise ValidationError(f"{source}: cases[{n}].run_config: {e}") from None
    # --- a user's kernel is priced with its own compiled code (iosim.measure.kernel_codes) ---
    if case.impl == KERNEL_IMPL:
        if not case.run_config.get("tiling") and case.launches:  # recorded before the harness read a "_prefill_"
            p = config.problem  # kernel's tiles (it took it for a backward's preprocess): its launches say them
            ran = launched_tilings(case.launches, p.seq_q, p.batch * p.heads, p.backward)
            config = RunConfig.from_dict({**config.to_dict(), **ran})
        dq = case_dq(case, profile.arch, _triton(prov.triton))
        if dq is not None and "dq" not in case.run_config and config.problem.backward:  # recorded before RunConfig.dq
            config = config.with_(dq=dq)
        if config.problem.backward and config.preprocess_tiling is None:  # recorded before preprocess_tiling
            p = config.problem
            pre = launched_preprocess(case.launches, p.seq_q, p.batch * p.heads)
            if pre is not None:
                config = config.with_(preprocess_tiling=Tiling(**pre))
        ops = case_launcher_ops(case, profile.arch, _triton(prov.triton), case.run_config.get("tiling"))
        if ops and not config.launcher_ops:  # what its launcher runs in PyTorch, as the committed capture says
            config = RunConfig.from_dict({**config.to_dict(), "launcher_ops": ops})
        codes, note = case_codes(case, config, profile.arch, _triton(prov.triton))
    # --- end of the user-kernel code lookup ---
    try:
        run = simulate(config, profile, codes=codes, triton_version=_triton(prov.triton), l2_lines=l2_lines,
                       aggregate=aggregate)
    except ConfigError as e:  # a case the model cannot run (e.g. causal with seq_k != seq_q): listed
        return "skipped", (case.name, f"not modelled: {e}")
    measured = case.counters.kernels if case.counters is not None else ()
    return "result", CaseResult(case.name, config.to_dict(), profile.id, _predicted(run), _measured(case),
                                _paper(config), note, tuple(regimes(run)), kernel_pairs(run.kernels, measured))


def validate_files(paths, gpu: str | None = None, progress=None, impls: tuple | None = None, jobs: int = 1,
                   aggregate: bool = True) -> tuple:
    """:func:`validate` over several files (``jobs`` processes for each file's cases); ``progress(done,
    total, name)`` counts the cases of all of them; ``aggregate``: see :func:`validate`."""
    results, skipped = [], []
    measurements = [(path, load_measurement(path)) for path in paths]
    total, before = sum(len(m.cases) for _, m in measurements), 0
    for path, measurement in measurements:
        step = (lambda n, _, name, before=before: progress(before + n, total, name)) if progress else None
        r, s = validate(measurement, gpu, step, source=Path(path).name, impls=impls, jobs=jobs, path=path,
                        aggregate=aggregate)
        before += len(measurement.cases)
        results += r
        skipped += s
    return results, skipped


def _triton(version: str | None) -> str | None:
    """The Triton release a measurement ran (``3.6.0`` of ``3.6.0+git...``): its compiled code is priced."""
    return None if not version else version.split("+")[0]


def _skip_reason(case) -> str | None:
    if case.error:
        return f"failed on the GPU: {case.error}"
    sdpa = case.impl in SDPA_IMPLS and (case.run_config or {}).get("problem")  # modelled (iosim.schedule.references)
    if not sdpa and (not case.run_config or case.run_config.get("algo") is None):
        return f"{case.impl} is an outside reference, not modelled"
    if case.counters is None and case.timing is None:
        return "no counters and no timing"
    return None


def _predicted(run) -> dict:
    hbm, l2 = run.levels["hbm"], run.levels["l2"]
    lookups = sum(k.l2_lookup_bytes for k in run.kernels)
    out = {"dram_read_bytes": hbm.read_bytes, "dram_write_bytes": hbm.write_bytes, "dram_bytes": hbm.total,
           "xbar_bytes": l2.total, "l2_lookup_bytes": lookups, "l2_bytes": lookups,
           "inst_executed": sum(k.instructions.get("total", 0.0) for k in run.kernels), "time_s": run.time_s}
    if all("shared_wavefronts" in k.instructions for k in run.kernels):  # every kernel's code recorded them
        out["shared_wavefronts"] = sum(k.instructions["shared_wavefronts"] for k in run.kernels)
    out["local_bytes"] = sum(k.instructions.get(key, 0.0) for k in run.kernels
                             for key in ("local_load_bytes", "local_store_bytes"))
    return out


KERNEL_METRICS = ("dram_bytes", "xbar_bytes", "l2_lookup_bytes", "time_s")  # compared kernel by kernel


def kernel_pairs(predicted, measured) -> tuple:
    """Each simulated kernel beside the measured launch it stands for, as dicts of ``name``, ``measured_name``,
    ``ctas`` (simulated), ``grid`` (launched) and ``predicted``/``measured``/``error`` by :data:`KERNEL_METRICS`.
    A simulated kernel priced from a user's compiled kernel, or from an ATen kernel's executed code, pairs with
    a launch of that function (``sass: FILE.py FN, ...``, ``ncu: ATen at::KERNEL, ...``), wherever its launcher
    ran it, several of one function each with the launch nearest its bytes (:func:`_anchors`); the others pair in order where the numbers match (a library's kernels carry names of their
    own: eager PyTorch's cuBLAS products, SDPA's), otherwise by name in order, and any left over stand alone
    (the other side None), so a kernel the model runs and the GPU did not, or the reverse, shows. A launch's
    later loops (a fused dQ's, ``launched`` False) stand with its first as one launch, as the GPU counts it."""
    launches: list = []  # the simulated kernels of each launch
    for k in predicted:
        if getattr(k, "launched", True) or not launches:
            launches.append([k])
        else:
            launches[-1].append(k)
    predicted, measured = launches, list(measured)
    names = [(_launch_name(ks), _code_function(getattr(ks[0], "code", ""))) for ks in predicted]
    if len(predicted) == len(measured):
        anchored = _anchors(predicted, measured, [fn for _, fn in names])
        rest = iter(j for j in range(len(measured)) if j not in anchored.values())
        pairs = [(k, measured[anchored[i]] if i in anchored else measured[next(rest)]) for i, k in enumerate(predicted)]
    else:
        pairs, at = [], 0
        for k, own in zip(predicted, names):
            hit = next((n for n in range(at, len(measured)) if bare_name(measured[n].name) in own), None)
            if hit is None:
                pairs.append((k, None))
                continue
            pairs += [(None, m) for m in measured[at:hit]] + [(k, measured[hit])]
            at = hit + 1
        pairs += [(None, m) for m in measured[at:]]
    out = []
    for ks, m in pairs:
        p = {} if ks is None else {"dram_bytes": sum(k.levels["hbm"].total for k in ks),
                                   "xbar_bytes": sum(k.levels["l2"].total for k in ks),
                                   "l2_lookup_bytes": sum(k.l2_lookup_bytes for k in ks), "time_s": sum(k.time_s for k in ks)}
        got = {} if m is None else {"dram_bytes": m.dram_read_bytes + m.dram_write_bytes, "time_s": m.duration_s,
                                    **({"xbar_bytes": m.xbar_read_bytes + m.xbar_write_bytes}
                                       if m.xbar_read_bytes is not None and m.xbar_write_bytes is not None else {}),
                                    **({} if (looked := _lookup_bytes(m)) is None else {"l2_lookup_bytes": looked})}
        out.append({"name": None if ks is None else _launch_name(ks), "measured_name": None if m is None else m.name,
                    "ctas": None if ks is None else ks[0].ctas, "grid": None if m is None or m.grid is None else list(m.grid),
                    "predicted": p, "measured": got,
                    "error": {x: (p[x] - got[x]) / got[x] for x in KERNEL_METRICS if x in p and got.get(x)}})
    return tuple(out)


def _anchors(predicted, measured, functions) -> dict:
    """Predicted launch index -> measured launch index, for the launches whose code names its function. Among the
    launches of one function (ATen's fills and copies are all ``vectorized_elementwise_kernel``) the pairing that
    moves each nearest its launch's bytes (crossbar, DRAM where the file has no crossbar counters; ratios within
    about 10 % alike) and then keeps the order best: a launcher that casts dQ after its group sums, where the model
    casts it first, pairs its kernels by what they move rather than one place off. Where too many pairings are
    possible (over :data:`PAIRINGS`), in order."""
    anchored: dict = {}
    for fn in dict.fromkeys(f for f in functions if f):
        mine = [i for i, f in enumerate(functions) if f == fn]
        theirs = [j for j, m in enumerate(measured) if bare_name(m.name) == fn]
        if not theirs:
            continue
        mine = mine[:len(theirs)]
        far = {(i, j): round(abs(math.log(_moved(predicted[i], measured[j]))), 1) for i in mine for j in theirs}
        if math.perm(len(theirs), len(mine)) > PAIRINGS:
            chosen = theirs[:len(mine)]
        else:
            chosen = min(itertools.permutations(theirs, len(mine)),
                         key=lambda js: (sum(far[i, j] for i, j in zip(mine, js)),
                                         sum((a - theirs.index(j)) ** 2 for a, j in enumerate(js))))
        anchored.update(zip(mine, chosen))
    return anchored


PAIRINGS = 50_000  # pairings of one function's launches weighed at most, beyond which they pair in order


def _moved(kernels, launch) -> float:
    """Simulated over measured bytes of one launch: crossbar where measured, else DRAM (each at least a byte)."""
    if launch.xbar_read_bytes is not None and launch.xbar_write_bytes is not None:
        sim, ran = sum(k.levels["l2"].total for k in kernels), launch.xbar_read_bytes + launch.xbar_write_bytes
    else:
        sim, ran = sum(k.levels["hbm"].total for k in kernels), launch.dram_read_bytes + launch.dram_write_bytes
    return max(sim, 1.0) / max(ran or 0.0, 1.0)


def _launch_name(kernels) -> str:
    """A launch's simulated kernels by name: its loops joined by ``+``."""
    return "+".join(k.name for k in kernels)


def _code_function(code: str | None) -> str | None:
    """The function a simulated kernel's code was read from: a user's compiled function (``sass: FILE.py FN,
    sm_90, ...``) or the ATen kernel whose executed instructions price it (``ncu: ATen at::KERNEL, ...``), as a
    measured launch's bare name gives it; else None."""
    found = re.match(r"sass: \S+\.py (\w+),", code or "")
    if found:
        return found.group(1)
    found = re.match(r"ncu: ATen (\S+),", code or "")
    return bare_name(found.group(1)) if found else None


def bare_name(name: str) -> str:
    """A measured kernel's bare name: no template or argument list, no namespace (``void ns::k<...>(...)`` -> k).
    Template arguments nest and hold namespaces, parentheses and lambdas: only what lies outside every ``<...>``
    counts, up to the argument list."""
    bare, depth = [], 0
    for ch in name:
        if ch in "<>":
            depth = depth + 1 if ch == "<" else max(0, depth - 1)
        elif not depth:
            if ch == "(":
                break
            bare.append(ch)
    words = "".join(bare).split()
    return words[-1].split("::")[-1] if words else name


def _lookup_bytes(c) -> float | None:
    """Bytes the L2 slices looked up for the SMs (read, write, atomic and reduction sectors) of a kernel's or a case's
    counters; None where the file has no such counters."""
    if c.l2_lookup_read_sectors is None or c.l2_lookup_write_sectors is None:
        return None
    return 32.0 * (c.l2_lookup_read_sectors + c.l2_lookup_write_sectors + (c.l2_lookup_atom_sectors or 0.0)
                   + (c.l2_lookup_red_sectors or 0.0))


def _measured(case) -> dict:
    c = case.counters
    if c is None:
        return {"time_s": case.timing.median_s}
    out = {"dram_read_bytes": c.dram_read_bytes, "dram_write_bytes": c.dram_write_bytes,
           "dram_bytes": c.dram_read_bytes + c.dram_write_bytes, "time_s": c.duration_s}
    if c.xbar_read_bytes is not None and c.xbar_write_bytes is not None:
        out["xbar_bytes"] = c.xbar_read_bytes + c.xbar_write_bytes
    lookups = _lookup_bytes(c)
    if lookups is not None:
        out["l2_lookup_bytes"] = lookups
    else:  # older files: every L2 tag lookup, the closest counter they have
        out["l2_bytes"] = c.l2_bytes
    if c.inst_executed is not None:
        out["inst_executed"] = c.inst_executed
    if c.shared_wavefronts is not None:
        out["shared_wavefronts"] = c.shared_wavefronts
    if c.local_load_bytes is not None and c.local_store_bytes is not None:
        out["local_bytes"] = c.local_load_bytes + c.local_store_bytes
    return out


def _paper(config: RunConfig) -> dict:
    """The paper's count, for the square problems of its algorithms (none for a decode step, a
    variable-length batch or a window, which the papers do not count)."""
    p = config.problem
    if config.algo == "flash_decode" or p.seq_q != p.seq_k or p.seq_lens is not None or p.window is not None:
        return {}
    b = closed_forms.paper_bytes(config)
    return {"dram_bytes": b["read"] + b["write"]}


def caveat_split(results: list, metric: str = "dram_bytes") -> dict:
    """Cases and median |error| of ``metric`` per regime where the model is least certain, and of the cases in
    none (``"none"``): whether the caveats mark the larger errors. Empty where no case is in any regime."""
    groups: dict = {}
    for r in results:
        e = r.error(metric)
        for name in r.regimes or ("none",):
            groups.setdefault(name, []).append(abs(e) if e is not None else None)
    if set(groups) <= {"none"}:
        return {}
    return {name: {"cases": len(errs), "median_abs_error": statistics.median(e for e in errs if e is not None)
                   if any(e is not None for e in errs) else None} for name, errs in groups.items()}


def summary(results: list) -> dict:
    """Per metric: cases compared, median and max |relative error|, the worst cases, and whether every
    case lies within 1.5× and within :data:`WITHIN` of its measurement. Also the paper formula's DRAM
    error, for contrast."""
    out = {}
    for metric in METRICS:
        errs = sorted(((abs(e), r.name, e) for r in results if (e := r.error(metric)) is not None), reverse=True)
        if not errs:
            continue
        ratios = [1 + e for _, _, e in errs]
        out[metric] = {
            "cases": len(errs),
            "median_abs_error": statistics.median(a for a, _, _ in errs),
            "max_abs_error": errs[0][0],
            "worst": [{"name": n, "error": e} for _, n, e in errs[:3]],
            "within_1_5x": all(1 / 1.5 <= x <= 1.5 for x in ratios),
            "within_1_35x": all(1 / WITHIN <= x <= WITHIN for x in ratios),
        }
    paper = [abs(r.paper["dram_bytes"] - r.measured["dram_bytes"]) / r.measured["dram_bytes"]
             for r in results if r.measured.get("dram_bytes") and "dram_bytes" in r.paper]
    if paper:
        out["paper_dram_bytes"] = {"cases": len(paper), "median_abs_error": statistics.median(paper),
                                   "max_abs_error": max(paper)}
    return out


__all__ = ["CaseResult", "ValidationError", "validate", "validate_files", "summary", "profile_for", "METRICS",
           "ProfileError"]
