"""``iosim profiles``: the GPU profiles iosim knows, and every number in one with its source."""
from __future__ import annotations

import click

from iosim.hardware.profile import builtin_profiles, load_profile


@click.group(invoke_without_command=True)
@click.pass_context
def profiles(ctx):
    """List built-in GPU profiles; ``iosim profiles show NAME|FILE`` prints one with sources."""
    if ctx.invoked_subcommand is None:
        for name in builtin_profiles():
            p = load_profile(name)
            click.echo(f"{name:16s} {p.name}  ({p.sm_count} SMs, L2 {p.l2_bytes / 2**20:.0f} MiB, "
                       f"{p.hbm_bandwidth / 1e12:.2f} TB/s)")


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
