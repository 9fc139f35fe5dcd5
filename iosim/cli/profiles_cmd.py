"""``iosim profiles``: the GPU profiles iosim knows, and every number in one with its source."""
from __future__ import annotations

from pathlib import Path

import click

from iosim.files import unwritable
from iosim.hardware.profile import ALIASES, builtin_profiles, load_profile, read_profile_dict, write_profile


@click.group(invoke_without_command=True)
@click.pass_context
def profiles(ctx):
    """List built-in GPU profiles; ``iosim profiles show NAME|FILE`` prints one with sources.

    A GPU's short name (h100, h200) is the profile calibrated on that GPU where one is built in;
    its datasheet profile keeps its full name (h100-sxm, h200-sxm)."""
    if ctx.invoked_subcommand is None:
        names = {}
        for alias, target in ALIASES.items():
            names.setdefault(target, []).append(alias)
        for name in builtin_profiles():
            p = load_profile(name)
            short = f"  [{', '.join(names[name])}]" if name in names else ""
            kind = "calibrated" if p.calibration else "datasheet"
            click.echo(f"{name:20s} {p.name}  ({p.sm_count} SMs, L2 {p.l2_bytes / 2**20:.0f} MiB, "
                       f"{p.hbm_bandwidth / 1e12:.2f} TB/s; {kind}){short}")


@profiles.command()
@click.argument("name")
def show(name):
    """Every field of profile NAME (a built-in name or a YAML file) with its value and source."""
    p = load_profile(name)
    click.echo(f"{p.name}  [{p.path}]")
    rows = p.summary_rows()
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for field, value, source in rows:
        click.echo(f"  {field:{w0}s}  {value:>{w1}s}  {source}")


@profiles.command()
@click.option("--base", default="h100-sxm", show_default=True, metavar="NAME|FILE",
              help="The profile to start from: a built-in name or a YAML file.")
@click.option("--name", "title", default=None, help="The GPU's name in the new file. [default: the base's, marked as a copy]")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The new profile file (.yaml); it is not overwritten if it exists.")
def new(base, title, output):
    """Write a profile to edit: every field of --base with its value, unit and source, one per line.

    Change the values your GPU differs in and say where each came from in its ``source``; then
    ``iosim simulate --gpu FILE`` uses it (``iosim profiles show FILE`` checks it).
    """
    if output.suffix not in (".yaml", ".yml"):
        raise click.BadParameter(f"{output}: a profile file ends in .yaml", param_hint="--output")
    problem = "exists; choose another name or remove it" if output.exists() else unwritable(output)
    if problem:
        raise click.BadParameter(f"{output}: {problem}", param_hint="--output")
    raw = read_profile_dict(base)
    raw["name"] = title or f"{raw['name']} (edited copy)"
    raw.pop("calibration", None)
    base_id = load_profile(base).id
    write_profile(raw, output, comment=(
        f"A GPU profile for iosim, started from {base_id}: edit the values your GPU differs in and name\n"
        "each one's source (a datasheet section, or 'measured: <file/command>'). Units per field: see\n"
        "`iosim profiles show` and iosim/hardware/units.py. Check it with: iosim profiles show THIS_FILE"))
    click.echo(f"wrote {output} (from {base_id}); edit it, then: iosim simulate --gpu {output}")
