"""The ``iosim`` command: a thin click group; each command parses, calls the library, prints."""
from __future__ import annotations

import importlib
import sys

import click

from iosim.hardware.catalog import ProfileError
from iosim.schedule.problem import ConfigError

# Library field names whose option is spelled differently.
OPTION_OF = {"seq_q": "seq-len", "seq_k": "seq-k", "host_tensors": "host", "seq_lens": "seq-lens", "page_size": "page-size",
             "tiling": "block-m/--block-n/--stages"}  # shared memory per CTA: the three together decide it


# Each command's module is imported only when that command runs (or when the group's help lists
# them), so ``iosim simulate --help`` never pays for matplotlib, simpy or the GPU side.
COMMANDS = {
    "simulate": "iosim.cli.simulate_cmd:simulate",
    "plot": "iosim.cli.plot_cmd:plot",
    "sweep": "iosim.cli.sweep_cmd:sweep",
    "validate": "iosim.cli.validate_cmd:validate",
    "profiles": "iosim.cli.profiles_cmd:profiles",
    "measure": "iosim.cli.measure_cmd:measure",
    "calibrate": "iosim.cli.measure_cmd:calibrate",
}


class Group(click.Group):
    """Loads commands on first use; turns the library's validation errors into one-line usage errors
    (exit code 2, no traceback)."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConfigError as e:
            name = e.field.split(".")[-1]
            option = OPTION_OF.get(name, name.replace("_", "-"))
            raise click.UsageError(f"--{option}: {str(e).split(': ', 1)[1]}") from None
        except ProfileError as e:
            raise click.UsageError(str(e)) from None
        except ValueError as e:  # the library's own one-line errors (measurement, validation, plot files)
            if type(e).__module__.startswith("iosim."):
                raise click.UsageError(str(e)) from None
            raise


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="iosim")
def main():
    """Bytes moved per memory level, predicted time, and hardware validation for attention kernels.

    \b
      iosim simulate              standard vs FlashAttention-2 on the A100, N = 1K..16K
      iosim simulate --gpu h100 --algo flash1,flash2 --seq-len 4k --json
      iosim profiles              list GPU profiles; iosim profiles show h100
    """


if __name__ == "__main__":
    sys.exit(main())
