"""The install and the architecture: one top-level package, data found through the package, data flowing one way."""
from __future__ import annotations

import ast
import configparser
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SETUP = configparser.ConfigParser()
SETUP.read(REPO / "setup.cfg")

# What each layer may import (besides itself and the plain utilities below). The flow is
# profile + problem -> schedule -> engine -> counts -> priced result -> report/plot; validation joins a
# measurement file and a priced result; the GPU side (iosim.kernels) shares only plain data.
UTILITIES = {"iosim.files", "iosim.schema", "iosim.sizes"}  # leaf modules (they import no iosim module)
ALLOWED = {
    "iosim.schedule": {"iosim.schedule"},
    "iosim.hardware": {"iosim.hardware"},
    "iosim.costs": {"iosim.costs", "iosim.schedule"},
    "iosim.results": {"iosim.results", "iosim.schedule", "iosim.hardware", "iosim.costs"},
    "iosim.engine": {"iosim.engine", "iosim.schedule", "iosim.hardware", "iosim.costs", "iosim.results"},
    "iosim.simulate": {"iosim.schedule", "iosim.engine", "iosim.hardware", "iosim.results"},
    "iosim.sweep": {"iosim.schedule", "iosim.hardware", "iosim.results", "iosim.simulate"},
    "iosim.measure": {"iosim.measure", "iosim.schedule", "iosim.hardware", "iosim.costs", "iosim.results",
                      "iosim.simulate"},
    "iosim.figures": {"iosim.figures", "iosim.schedule", "iosim.costs", "iosim.results", "iosim.measure"},
    "iosim.kernels": {"iosim.kernels", "iosim.schedule.problem", "iosim.schedule.tiling", "iosim.measure.measurement",
                      "iosim.hardware", "iosim.costs.sass", "iosim.costs.code", "iosim.costs.issue",
                      "iosim.schedule.build"},
}


def _packages() -> set[str]:
    return {line.strip() for line in SETUP["options"]["packages"].splitlines() if line.strip()}


def _package_dirs() -> dict[str, Path]:
    """Package name -> folder, following setup.cfg's package_dir mapping."""
    mapping = {}
    for line in SETUP["options"]["package_dir"].splitlines():
        if "=" in line:
            name, folder = (x.strip() for x in line.split("="))
            mapping[name] = REPO / folder
    out = {}
    for name in _packages():
        root = next((n for n in sorted(mapping, key=len, reverse=True) if name == n or name.startswith(n + ".")), None)
        if root:
            out[name] = mapping[root].joinpath(*name[len(root) + 1:].split(".")) if name != root else mapping[root]
        else:
            out[name] = REPO.joinpath(*name.split("."))
    return out


def test_every_package_is_installed_and_nothing_else():
    """A subpackage forgotten in setup.cfg would be missing from the wheel; nothing outside ``iosim``."""
    dirs = _package_dirs()
    assert all(name == "iosim" or name.startswith("iosim.") for name in dirs)
    assert all((folder / "__init__.py").is_file() for folder in dirs.values()), dirs
    found = {"iosim." + ".".join(p.parent.relative_to(REPO / "iosim").parts) if p.parent != REPO / "iosim" else "iosim"
             for p in (REPO / "iosim").rglob("__init__.py")}
    assert found <= set(dirs), f"not listed in setup.cfg: {sorted(found - set(dirs))}"


def test_the_gpu_side_installs_inside_the_namespace(tmp_path):
    """``kernels/`` is ``iosim.kernels``; outside the checkout (whose folder Python would find) no ``kernels``."""
    spec = importlib.util.find_spec("iosim.kernels")
    assert spec is not None and Path(spec.origin).parent == REPO / "kernels"
    code = "import importlib.util; print(importlib.util.find_spec('kernels'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.strip() == "None"


def test_built_in_data_is_package_data():
    from iosim.hardware.profile import builtin_profiles, profile_dir
    from iosim.measure.measurement import committed_set

    assert {"a100-sxm4-80gb", "h100-sxm", "h200-sxm", "h200-calibrated", "rtx4090"} <= set(builtin_profiles())
    assert profile_dir().resolve() == (REPO / "hardware_profiles").resolve()
    assert committed_set("h100").resolve() == (REPO / "experiments/measurements/h100/measurements.json").resolve()


@pytest.mark.parametrize("module", ["iosim", "iosim.cli", "iosim.simulate", "iosim.sweep", "iosim.measure.validate"])
def test_the_simulator_imports_neither_torch_triton_nor_matplotlib(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'triton', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _imports(path: Path, package: str) -> set[str]:
    """Absolute names of the iosim modules a file imports (relative imports resolved)."""
    modules = _modules()
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return {m for m in out if m == "iosim" or m.startswith("iosim.")}


def _modules() -> set[str]:
    """Every installed module and package name."""
    out = set()
    for name, folder in _package_dirs().items():
        out.add(name)
        out |= {f"{name}.{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__"}
    return out


def _layer(module: str) -> str | None:
    return next((layer for layer in sorted(ALLOWED, key=len, reverse=True)
                 if module == layer or module.startswith(layer + ".")), None)


def test_data_flows_one_way():
    """No back-edges: e.g. the schedule never imports the engine, the engine never the measurement side."""
    bad = []
    for name, folder in _package_dirs().items():
        for path in folder.glob("*.py"):
            module = name if path.stem == "__init__" else f"{name}.{path.stem}"
            layer = _layer(module)
            if layer is None:
                continue
            for target in _imports(path, name):
                if target in UTILITIES or any(target == a or target.startswith(a + ".") for a in ALLOWED[layer]):
                    continue
                if target == "iosim":
                    continue
                bad.append(f"{module} imports {target}")
    assert not bad, "\n".join(bad)
