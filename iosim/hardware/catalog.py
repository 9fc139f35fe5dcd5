"""Where profiles are found: the built-in ones (package data), their aliases, or a file of the user's.

Kept apart from loading (:mod:`iosim.hardware.profile`, which validates with pydantic) so that
listing or naming a profile, as ``iosim simulate --help`` does, costs no validation machinery.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

# A GPU's short name is its best model: the profile calibrated on that GPU where one is built in (what
# ``iosim validate`` simulates a measurement of it with), else its datasheet profile.
ALIASES = {"a100": "a100-sxm4-80gb", "h100": "h100-sxm-calibrated", "h200": "h200-calibrated", "4090": "rtx4090"}


class ProfileError(ValueError):
    """A profile that cannot be used; the one-line message names the file and the field."""

    def __init__(self, message: str, file: str | None = None, field: str | None = None):
        super().__init__(": ".join(p for p in (file, field, message) if p))
        self.file, self.field = file, field


def profile_dir() -> Path:
    """The built-in profiles: the package data ``iosim.hardware_profiles`` (``hardware_profiles/`` in the repository)."""
    return Path(str(resources.files("iosim.hardware_profiles")))


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in profile_dir().glob("*.yaml"))


def resolve_profile_path(name_or_path: str | Path) -> Path:
    """A built-in id or alias (``h100``), or a path to a YAML file (anything with / or .yaml)."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml")):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ProfileError("no such profile file", file=text)
        return path.resolve()
    key = ALIASES.get(text.lower(), text.lower())
    path = profile_dir() / f"{key}.yaml"
    if not path.is_file():
        aliases = ", ".join(f"{a} -> {b}" for a, b in ALIASES.items())
        raise ProfileError(f"unknown profile {text!r}; available: {', '.join(builtin_profiles())} "
                           f"(aliases: {aliases}) or a path to a .yaml file")
    return path


def label(path: Path) -> str:
    """How errors name a profile file: a built-in by its file name, any other by its path."""
    return path.name if path.parent == profile_dir() else str(path)
