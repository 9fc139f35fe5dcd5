"""Calibrate a hardware profile on the GPU at hand: measured ceilings replace the assumed fractions.

:func:`calibrate` runs the microbenchmarks of :mod:`iosim.kernels.microbench`, copies the base
profile and replaces ``dram_efficiency`` (copy / datasheet HBM bandwidth), ``dram_write_efficiency``
(writes alone), ``dram_read_efficiency`` (reads alone, the best Triton stream), ``l2_efficiency`` (L2 read / datasheet L2 bandwidth), ``l2_write_efficiency`` (stores into the L2), ``tensor_efficiency`` (best Triton tile loop, fp16 / datasheet fp16
tensor peak), ``tensor_efficiency_bwd``, ``launch_overhead``, ``l2_atomic_bandwidth``,
``cta_load_bandwidth``, the L2 and DRAM latencies, ``sm_clock`` (the SM clock sustained under a
tl.dot load), ``tensor_efficiency_solo`` (the tile loop with one CTA per SM), ``kernel_start_overhead``
(what a kernel's first wave costs beyond its loop trips and first loads, from in-kernel
``%globaltimer`` spans), each with ``source:
"measured: iosim calibrate, <gpu>, <date>"``, and adds a ``calibration:`` block with the provenance
and every raw number. A measurement that cannot be right (a fraction above 1 or not above 0, a
latency or rate not above 0, an L2 latency not below the DRAM latency, a clock outside 0.5-1.5x the
profile's boost clock) is not written: the field keeps its base value and the summary says why. Units come
from ``iosim.hardware.profile.UNITS`` and the file is written by its validating ``write_profile``.

Some microbenchmarks feed no field and live only under ``calibration.raw`` (:data:`RAW_ONLY`), where
the model reads some of them directly (:mod:`iosim.costs.issue`): the tile loop with exactly c CTAs
per SM (``tile_occ_*_c<c>``: the tensor rate at a kernel's occupancy), the same with
FlashAttention-2's online softmax (``tile_softmax_*``), the mma.sync tile loop (``tile_hmma_*``), the
backward tile loop with dQ in registers or added atomically (``tile_bwd_plain_*``,
``tile_bwd_atomic_*`` and its ``*_bytes_per_s``: the share of atomic time a CTA waits for; ``tile_bwd_softmax_*``
the same loops with the backward's own softmax work) and instruction latencies (``lat_*``, :mod:`iosim.kernels.latency_bench`:
the scoreboard waits a kernel's schedule leaves uncovered); :mod:`iosim.kernels.microbench` says what
each measures. One that cannot be
what it claims (``*_ok_sms`` below the SM count: the SMs did not hold exactly c CTAs each; a rate not above
0, a tile rate above the datasheet tensor peak of its operands, fp16 or fp8) is kept but FLAGGED in the summary.

    python3 -m iosim.kernels.calibrate --base hardware_profiles/h100-sxm.yaml --out FILE
"""
from __future__ import annotations

import argparse
import math
import re
import socket
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from iosim.hardware.profile import OPTIONAL, REQUIRED, UNITS, read_profile_dict, write_profile
from iosim.kernels.device import HarnessError, cuda_torch
from iosim.kernels.microbench import STREAM_CONFIGS, run_all
from iosim.schedule.tiling import BWD, FWD, default_tiling

# Raw keys that feed no profile field: kept under calibration.raw, checked by _raw_flags
RAW_ONLY = ("tile_occ_", "tile_softmax_", "tile_hmma_", "tile_bwd_plain_", "tile_bwd_atomic_", "tile_bwd_softmax_",
            "convoy_miss_")
# miss_pass_*: seconds per pass of the pipelined tile loop on DRAM-missing against L2-resident tiles
# (microbench.miss_cost), kept raw: the engine charges miss_pass_s to a pass whose tiles missed the L2, and to each
# CTA of a convoy started together the convoy_miss_* series' (microbench.convoy_costs)
RAW_UNITS = ("bytes/s for dram_*, l2_*, atomic_* and tile_*_bytes_per_s (atomic payload), FLOP/s for matmul_* and "
             "the other tile_* (a *_sms entry: distinct SMs the CTAs ran on; *_ok_sms: SMs that ran exactly the "
             "c CTAs of its _c<c> key), seconds for launch_*, miss_pass_*, convoy_miss_* and latency_* (SM cycles for latency_*_cycles), "
             "Hz for sm_clock_*, SM cycles per dependent instruction for lat_* (iosim.kernels.latency_bench)")
SPAN_FIRST_TILE_BYTES = 128 * 64 * 2  # the largest first-pass tile of the span loop (microbench.cta_fixed_cost): Q
CLOCK_RANGE = (0.5, 1.5)  # a measured SM clock outside these multiples of the boost clock is not believed
_DIMENSIONS = {**REQUIRED, **OPTIONAL}  # profile field -> its dimension in UNITS


def _factor(name: str, unit: str) -> float:
    """Base units per ``unit`` for the profile field ``name``; a unit foreign to its dimension is refused."""
    units = UNITS[_DIMENSIONS[name]]
    if unit not in units:
        raise ValueError(f"{name}: unit {unit!r} is not one of {', '.join(units)}")
    return units[unit]


def _si(field: dict, name: str) -> float:
    return float(field["value"]) * _factor(name, field.get("unit"))


class _Fields:
    """The profile's fields being calibrated, and one summary row per field measured."""

    def __init__(self, base: dict, source: str):
        self.fields = {k: dict(v) for k, v in base["fields"].items()}
        self.source, self.rows = source, []

    def unit(self, name: str, default: str) -> str:
        return self.fields.get(name, {}).get("unit", default)

    def refuse(self, name: str, unit: str, why: str) -> None:
        """Keep the base value; the summary row says NOT WRITTEN and why."""
        self.rows.append((name, self.fields.get(name, {}).get("value"), None, unit, f"NOT WRITTEN: {why}"))

    def flag(self, key: str, value: float, unit: str, why: str) -> None:
        """A raw-only number that cannot be what it claims: still in calibration.raw, FLAGGED in the summary."""
        self.rows.append((key, None, value, unit, f"FLAGGED (kept in calibration.raw): {why}"))

    def put(self, name: str, value: float, unit: str, how: str) -> None:
        """Write a measured value (``unit`` is the profile's), or refuse one that cannot be right."""
        if not math.isfinite(value) or value <= 0:
            self.refuse(name, unit, f"measured {value:.4g}, not a positive number; {how}")
            return
        if unit == "fraction" and value > 1:
            self.refuse(name, unit, f"{value:.3f} of the datasheet peak, above 1 (is the base profile for this GPU?); {how}")
            return
        self.rows.append((name, self.fields.get(name, {}).get("value"), value, unit, how))
        self.fields[name] = {"value": round(value, 4), "unit": unit, "source": self.source, "note": how}


def calibrated_profile(base: dict, raw: dict, provenance: dict) -> tuple[dict, list[tuple]]:
    """A copy of ``base`` (a profile as read from YAML) with measured fields; and summary rows.

    A field whose measurement is missing from ``raw`` keeps its base value. A fraction above 1
    means the datasheet peak is not this GPU's (or the benchmark is wrong): the field keeps its base
    value and the row says NOT WRITTEN, as for every other value that cannot be right.
    """
    out = {k: v for k, v in base.items() if k != "calibration"}
    f = _Fields(base, f"measured: iosim calibrate, {provenance['gpu']}, {provenance['date']}")
    _efficiencies(f, raw)
    _rates_and_latencies(f, raw)
    _clock_and_solo(f, raw)
    _raw_flags(f, raw)
    out["fields"] = f.fields
    out["calibration"] = dict(provenance, raw={k: float(f"{v:.6g}") for k, v in sorted(raw.items())},
                              raw_units=RAW_UNITS)
    return out, f.rows


def _efficiencies(f: _Fields, raw: dict) -> None:
    """The fractions of the datasheet peaks: DRAM, L2, tensor cores forward and backward."""
    if "dram_copy" in raw:
        peak = _si(f.fields["hbm_bandwidth"], "hbm_bandwidth")
        f.put("dram_efficiency", raw["dram_copy"] / peak, "fraction",
              f"device-to-device copy of 2 GiB, {raw['dram_copy'] / 1e12:.3f} TB/s (bytes read + written) "
              f"/ hbm_bandwidth {peak / 1e12:.3f} TB/s")
    if "dram_read_stream" in raw:
        peak = _si(f.fields["hbm_bandwidth"], "hbm_bandwidth")
        f.put("dram_read_efficiency", raw["dram_read_stream"] / peak, "fraction",
              f"reads alone: the best of {len(STREAM_CONFIGS)} Triton streams summing 2 GiB (2-8 CTAs per SM, 8-16 KiB "
              f"loads, 4-8 warps, own chunks or grid-strided), {raw['dram_read_stream'] / 1e12:.3f} TB/s / hbm_bandwidth {peak / 1e12:.3f} TB/s")
    if "dram_write" in raw:
        peak = _si(f.fields["hbm_bandwidth"], "hbm_bandwidth")
        f.put("dram_write_efficiency", raw["dram_write"] / peak, "fraction",
              f"fill_ of 2 GiB (writes alone), {raw['dram_write'] / 1e12:.3f} TB/s / hbm_bandwidth {peak / 1e12:.3f} TB/s")
    if "l2_read" in raw:
        peak = _si(f.fields["l2_bandwidth"], "l2_bandwidth")
        f.put("l2_efficiency", raw["l2_read"] / peak, "fraction",
              f"every SM re-reading 8 MiB with .cg loads, {raw['l2_read'] / 1e12:.3f} TB/s / l2_bandwidth {peak / 1e12:.3f} TB/s")
    if "l2_write" in raw:
        peak = _si(f.fields["l2_bandwidth"], "l2_bandwidth")
        f.put("l2_write_efficiency", raw["l2_write"] / peak, "fraction",
              f"plain stores by 16 CTAs per SM into an L2-resident 16 MiB buffer, {raw['l2_write'] / 1e12:.3f} TB/s "
              f"/ l2_bandwidth {peak / 1e12:.3f} TB/s")
    peak = _si(f.fields["tensor_flops_fp16"], "tensor_flops_fp16")
    tiles = {k: v for k, v in raw.items() if k.startswith("tile_fp16")}
    if tiles:
        best = max(tiles, key=tiles.get)
        d = int(best.rsplit("_d", 1)[1])
        t = default_tiling("flash2", FWD, d)
        f.put("tensor_efficiency", tiles[best] / peak, "fraction",
              f"Triton loop of S = Q K^T, O += P V on {t.block_m}x{t.block_n}x{d} fp16 tiles, "
              f"{tiles[best] / 1e12:.0f} TFLOP/s / tensor_flops_fp16 {peak / 1e12:.1f} TFLOP/s"
              + (f"; cuBLAS 8192^3 fp16 {raw['matmul_fp16'] / 1e12:.0f} TFLOP/s" if "matmul_fp16" in raw else ""))
    bwd = {k: v for k, v in raw.items() if k.startswith("tile_bwd_fp16")}
    if bwd:
        t = default_tiling("flash2", BWD, 64)
        f.put("tensor_efficiency_bwd", statistics.median(bwd.values()) / peak, "fraction",
              f"Triton loop of FlashAttention-2 backward's five matmuls ({t.block_n} K/V x {t.block_m} Q rows, "
              f"{t.warps} warps), fp16, "
              + ", ".join(f"d={k.rsplit('_d', 1)[1]}: {v / 1e12:.0f} TFLOP/s" for k, v in sorted(bwd.items()))
              + f"; median / tensor_flops_fp16 {peak / 1e12:.1f} TFLOP/s")


def _rates_and_latencies(f: _Fields, raw: dict) -> None:
    """Launch overhead, atomic and per-CTA bandwidth, and the L2 and DRAM load latencies, in the profile's units."""
    if "launch_triton_empty" in raw:
        unit = f.unit("launch_overhead", "us")
        f.put("launch_overhead", raw["launch_triton_empty"] / _factor("launch_overhead", unit), unit,
              "empty Triton kernels back to back behind torch.cuda._sleep (GPU-side cost, CPU launch cost hidden); "
              "median of 15 x 200 launches")
    if "atomic_shared" in raw:
        unit = f.unit("l2_atomic_bandwidth", "GB/s")
        f.put("l2_atomic_bandwidth", raw["atomic_shared"] / _factor("l2_atomic_bandwidth", unit), unit,
              "fp32 tl.atomic_add of 64x64 tiles, 32 CTAs per target tile at once (FlashAttention-2 backward's dQ); "
              f"payload bytes / time; distinct targets: {raw.get('atomic_distinct', 0) / 1e9:.0f} GB/s")
    if "cta_load_bandwidth" in raw:
        unit = f.unit("cta_load_bandwidth", "GB/s")
        f.put("cta_load_bandwidth", raw["cta_load_bandwidth"] / _factor("cta_load_bandwidth", unit), unit,
              "one 4-warp CTA loading fp32 tiles one after another (num_stages=1), 64 CTAs, tiles of 8 and 32 KiB: "
              f"slope of time per tile; intercept {raw['cta_load_latency'] * 1e9:.0f} ns")
    dram = raw.get("latency_dram")
    if dram is None and "dram_latency" in f.fields:
        dram = _si(f.fields["dram_latency"], "dram_latency")
    for key, name, how in (("latency_l2", "l2_latency", "4 MiB after a warm-up pass over the whole cycle in the "
                            "same launch (L2-resident), timed in-kernel by %globaltimer"),
                           ("latency_dram", "dram_latency", "2 GiB, L2 flushed before each launch, timed in-kernel")):
        if key not in raw:
            continue
        unit = f.unit(name, "ns")
        value = raw[key] / _factor(name, unit)
        if key == "latency_l2" and dram is not None and raw[key] >= dram:
            f.refuse(name, unit, f"L2 latency {raw[key] * 1e9:.0f} ns is not below the DRAM latency "
                     f"{dram * 1e9:.0f} ns: the chase missed the L2")
            continue
        f.put(name, value, unit, f"one thread chasing a random pointer cycle through {how}, 128-byte hops, "
              f".cg loads; median time / hops"
              + (f" ({raw[key + '_cycles']:.0f} SM cycles)" if key + "_cycles" in raw else ""))
    if "cta_span_fixed_s" in raw and dram is not None:
        unit = f.unit("kernel_start_overhead", "us")
        # the model charges a CTA's first loads a DRAM round trip and its largest first tile (the 128 x 64
        # fp16 Q tile, 16 KiB) at the per-CTA load rate
        fill = SPAN_FIRST_TILE_BYTES / raw["cta_load_bandwidth"] if raw.get("cta_load_bandwidth") else 0.0
        f.put("kernel_start_overhead", (raw["cta_span_fixed_s"] - dram - fill) / _factor("kernel_start_overhead", unit),
              unit,
              "one wave of the tile loop (128x64x64, 4 warps, 2 CTAs per SM, L2 flushed) timed in-kernel by "
              f"%globaltimer at 1-32 trips: fixed part of the span {raw['cta_span_fixed_s'] * 1e6:.2f} us "
              f"({raw['cta_span_iter_s'] * 1e9:.0f} ns per trip) less what the model charges the first loads (the DRAM "
              f"latency {dram * 1e9:.0f} ns and the 16 KiB Q tile at the per-CTA load rate, {fill * 1e9:.0f} ns): "
              "the first wave's dispatch, cold caches, pipeline fill and exit, once per kernel "
              + (f"(further waves in lockstep add {raw['cta_each_s'] * 1e6:.2f} us each beyond their trips; "
                 "every CTA's first loads are charged, the rest of it is not)" if "cta_each_s" in raw
                 else ""))


def _clock_and_solo(f: _Fields, raw: dict) -> None:
    """The SM clock under a tensor-core load, and the tile loop's efficiency with one CTA per SM."""
    clock = raw.get("sm_clock_dot", raw.get("sm_clock_fma"))
    if clock is not None:
        unit = f.unit("sm_clock", "MHz")
        boost = _si(f.fields["boost_clock"], "boost_clock")
        how = (f"%clock64 cycles / %globaltimer ns on every SM around a loop of 64^3 tl.dot "
               f"({raw.get('sm_clock_dot', 0) / 1e6:.0f} MHz) and of FMAs ({raw.get('sm_clock_fma', 0) / 1e6:.0f} MHz); "
               f"median over SMs, the dot loop's written; boost clock {boost / 1e6:.0f} MHz")
        lo, hi = CLOCK_RANGE
        if not lo * boost <= clock <= hi * boost:
            f.refuse("sm_clock", unit, f"{clock / 1e6:.0f} MHz is outside {lo}-{hi}x the boost clock; {how}")
        else:
            f.put("sm_clock", clock / _factor("sm_clock", unit), unit, how)
    peak = _si(f.fields["tensor_flops_fp16"], "tensor_flops_fp16")
    solo = {k: v for k, v in raw.items() if k.startswith("tile_solo_fp16") and not k.endswith("_sms")}
    if solo:
        parts = [f"{k.removeprefix('tile_solo_fp16_')}: {v / 1e12:.0f} TFLOP/s on {raw.get(k + '_sms', 0):.0f} SMs"
                 for k, v in sorted(solo.items())]
        sms = _si(f.fields["sm_count"], "sm_count")
        short = [k for k in solo if k + "_sms" in raw and raw[k + "_sms"] < sms]
        how = ("Triton loop of S = Q K^T, O += P V with one CTA per SM (grid = SM count), fp16, "
               + ", ".join(parts) + f"; median / tensor_flops_fp16 {peak / 1e12:.1f} TFLOP/s")
        if short:
            f.refuse("tensor_efficiency_solo", "fraction", f"CTAs shared SMs in {', '.join(short)}; {how}")
        else:
            f.put("tensor_efficiency_solo", statistics.median(solo.values()) / peak, "fraction", how)


def _raw_flags(f: _Fields, raw: dict) -> None:
    """Flag the raw-only numbers (:data:`RAW_ONLY`) that cannot be what they claim; they stay in the raw block."""
    sms = _si(f.fields["sm_count"], "sm_count")
    peaks = {d: _si(f.fields[f"tensor_flops_{d}"], f"tensor_flops_{d}") for d in ("fp16", "fp8")
             if f"tensor_flops_{d}" in f.fields}
    for key in sorted(k for k in raw if k.startswith(RAW_ONLY)):
        value = raw[key]
        dtype = "fp8" if "_fp8_" in key and "fp8" in peaks else "fp16"  # an fp8 loop against the fp8 peak
        peak = peaks[dtype]
        ctas = re.search(r"_c(\d+)_ok_sms$", key)
        if ctas:
            if value < sms:
                f.flag(key, value, "SMs", f"only {value:.0f} of {sms:.0f} SMs ran exactly {ctas[1]} CTAs: "
                       "not the intended occupancy")
        elif not math.isfinite(value) or value <= 0:
            f.flag(key, value, "", f"measured {value:.4g}, not a positive number")
        elif key.startswith("tile_") and not key.endswith("_bytes_per_s") and value > peak:
            f.flag(key, value, "FLOP/s", f"{value / 1e12:.0f} TFLOP/s is above the datasheet tensor_flops_{dtype} "
                   f"{peak / 1e12:.1f} TFLOP/s")


def summary(rows) -> str:
    lines = [f"{'field':<20} {'base':>10} {'measured':>10}  unit      how"]
    for name, old, new, unit, how in rows:
        old_s = "-" if old is None else f"{old:.4g}"
        new_s = "-" if new is None else f"{new:.4g}"
        lines.append(f"{name:<20} {old_s:>10} {new_s:>10}  {unit:<9} {how}")
    return "\n".join(lines)


def _provenance(torch) -> dict:
    import triton
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        smi = []
    return {"gpu": torch.cuda.get_device_name(), "driver": smi[0].strip() if smi else None,
            "cuda": torch.version.cuda, "torch": str(torch.__version__), "triton": str(triton.__version__),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": list(getattr(sys, "orig_argv", sys.argv)),
            "hostname": socket.gethostname()}


def calibrate(base_profile_path, out_path, progress=print, only=None) -> dict:
    """Measure (``only``: those microbenchmark steps), write the calibrated profile to ``out_path``,
    print and return the summary rows."""
    torch = cuda_torch()
    base = read_profile_dict(base_profile_path)
    provenance = _provenance(torch)
    models = re.findall(r"[A-Z]\d{3}", base.get("name", ""))
    if models and not any(m in provenance["gpu"] for m in models):
        progress(f"warning: {base_profile_path} describes {base.get('name')}, this GPU is {provenance['gpu']}")
    raw = run_all(progress, only)
    profile, rows = calibrated_profile(base, raw, provenance)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_profile(profile, out_path, comment=(
        f"Calibrated by python3 -m iosim.kernels.calibrate on {provenance['gpu']}, {provenance['date']}.\n"
        "Fields whose source starts with 'measured: iosim calibrate' were measured; the rest are the base profile's."))
    progress(summary(rows))
    return {"rows": rows, "raw": raw}


def rederive(base_profile_path, calibrated_paths, out_path, progress=print) -> dict:
    """Write a calibrated profile from the raw numbers earlier runs recorded (no GPU): each raw number
    is its median over the ``calibrated_paths`` (calibrated profiles) that have it, so one run's noise
    does not become the profile; the provenance is the latest run's, with every run's date. Fields of
    those files the derivation does not make (e.g. measured by a probe) are kept, the latest file's."""
    base = read_profile_dict(base_profile_path)
    paths = [calibrated_paths] if isinstance(calibrated_paths, (str, Path)) else list(calibrated_paths)
    runs = [read_profile_dict(p) for p in paths]
    cals = [run.get("calibration") or {} for run in runs]
    for path, cal in zip(paths, cals):
        if not cal.get("raw"):
            raise HarnessError(f"{path}: no calibration.raw block to derive from")
    order = sorted(range(len(runs)), key=lambda n: str(cals[n].get("date", "")))
    raw = {}
    for key in sorted({k for cal in cals for k in cal["raw"]}):
        values = [cal["raw"][key] for cal in cals if isinstance(cal["raw"].get(key), (int, float))]
        raw[key] = statistics.median(values) if values else cals[order[-1]]["raw"].get(key)
    latest = cals[order[-1]]
    provenance = {k: v for k, v in latest.items() if k not in ("raw", "raw_units")}
    if len(runs) > 1:
        provenance["runs"] = [str(cals[n].get("date")) for n in order]
    profile, rows = calibrated_profile(base, raw, provenance)
    for n in order:  # fields measured apart from the microbenchmarks (probes) stay
        for name, fld in runs[n]["fields"].items():
            if name in _DIMENSIONS and name not in profile["fields"]:
                profile["fields"][name] = fld
    out_path = Path(out_path)
    write_profile(profile, out_path, comment=(
        f"Calibrated by python3 -m iosim.kernels.calibrate on {provenance.get('gpu')}: "
        + (f"the median of each raw number over {len(runs)} runs ({', '.join(provenance['runs'])}), "
           if len(runs) > 1 else f"{provenance.get('date')}, ")
        + f"fields derived by calibrate --from-raw on {datetime.now(timezone.utc).isoformat(timespec='seconds')}.\n"
        "Fields whose source starts with 'measured: iosim calibrate' were measured; the rest are the base profile's."))
    progress(summary(rows))
    return {"rows": rows, "raw": raw}


def fold(calibrated_path, run_path, out_path, progress=print) -> dict:
    """Add to a calibrated profile what a later run measured that it lacks (no GPU): the run's raw
    numbers missing from the profile's raw block, and the fields made from them alone. Everything the
    profile has keeps its value, bit for bit; ``calibration.added`` records the run."""
    profile = read_profile_dict(calibrated_path)
    run = read_profile_dict(run_path)
    cal, run_cal = profile.get("calibration") or {}, run.get("calibration") or {}
    for path, c in ((calibrated_path, cal), (run_path, run_cal)):
        if not c.get("raw"):
            raise HarnessError(f"{path}: no calibration.raw block")
    new = {k: v for k, v in run_cal["raw"].items() if k not in cal["raw"]}
    if not new:
        raise HarnessError(f"{run_path}: adds no raw number that {calibrated_path} lacks")
    provenance = {k: v for k, v in run_cal.items() if k not in ("raw", "raw_units")}
    made, rows = calibrated_profile({k: v for k, v in profile.items() if k != "calibration"}, new, provenance)
    added = [name for name in made["fields"] if made["fields"][name] != profile["fields"].get(name)]
    profile["fields"].update({name: made["fields"][name] for name in added})
    profile["calibration"] = dict(cal, raw=dict(sorted({**cal["raw"], **made["calibration"]["raw"]}.items())),
                                  added=list(cal.get("added", [])) + [dict(provenance, raw=sorted(new), fields=added)])
    header = [line[2:] for line in Path(calibrated_path).read_text().splitlines() if line.startswith("# ")]
    write_profile(profile, Path(out_path), comment="\n".join(header + [
        f"{', '.join(added) or 'Raw numbers'} added by calibrate --add-from from the run of {provenance.get('date')}."]))
    progress(summary(rows))
    return {"rows": rows, "raw": new}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m iosim.kernels.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, type=Path, help="the profile YAML to start from")
    parser.add_argument("--out", required=True, type=Path, help="where to write the calibrated profile YAML")
    parser.add_argument("--from-raw", type=Path, nargs="+", metavar="FILE",
                        help="derive the fields from the calibration.raw blocks of these calibrated profiles (each raw "
                             "number's median over them) instead of measuring; no GPU")
    args = parser.parse_args(argv)
    try:
        if args.from_raw:
            rederive(args.base, args.from_raw, args.out)
        else:
            calibrate(args.base, args.out)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
