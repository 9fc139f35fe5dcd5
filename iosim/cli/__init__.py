"""The ``iosim`` command: a thin click group; each command parses, calls the library, prints."""
from __future__ import annotations

import sys

import click

from iosim.schedule.problem import ConfigError
from iosim.hardware.profile import ProfileError


# Library field names whose option is spelled differently.
OPTION_OF = {"seq_q": "seq-len", "seq_k": "seq-len", "host_tensors": "host"}


class Group(click.Group):
    """Turns the library's validation errors into one-line usage errors (exit code 2, no traceback)."""

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


def _register():
    from iosim.cli import profiles_cmd, simulate_cmd

    main.add_command(simulate_cmd.simulate)
    main.add_command(profiles_cmd.profiles)
    for module, name in (("measure_cmd", "measure"), ("validate_cmd", "validate"), ("plot_cmd", "plot")):
        try:
            mod = __import__(f"{__name__}.{module}", fromlist=[name])
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith(__name__):
                continue
            raise
        for cmd in getattr(mod, "COMMANDS", ()):
            main.add_command(cmd)


_register()

if __name__ == "__main__":
    sys.exit(main())
