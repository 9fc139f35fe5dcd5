"""The GPU a user's launcher sees while it is captured on a machine without one.

Launchers in the wild ask the device before they launch: whether there is one and its compute capability
to pick a config (``torch.cuda.get_device_capability()``, FlagAttention's ``get_fwd_config``; sglang's prefill
kernel asks when its module is imported), its SM count to size a
split-KV or persistent grid (``get_device_properties(...).multi_processor_count``), Triton's target to
tell CUDA from HIP (``triton.runtime.driver.active.get_current_target()``), or they enter
``torch.cuda.device(q.device)``. On a machine without a GPU each of those raises, and the capture
(:func:`iosim.kernels.user_codes.capture`) would stop before the kernel it wants. Inside
:func:`simulated_device` they answer as the simulated GPU would (its architecture, and its SM count
where the caller knows the profile), so the launcher picks the config it picks on that GPU.
Nothing is patched where a GPU is present: there the real device answers.
"""
from __future__ import annotations

import contextlib
from types import SimpleNamespace


class _NoDevice(contextlib.nullcontext):
    """``torch.cuda.device(x)`` / ``torch.cuda.device_of(x)``: entering it selects nothing."""

    def __init__(self, *args, **kwargs):
        super().__init__()


class _Driver:
    """The part of Triton's active driver launchers read: the target, the torch device, device properties."""

    def __init__(self, arch: int, sms: int | None):
        from triton.backends.compiler import GPUTarget

        self._target = GPUTarget("cuda", arch, 32)
        self.utils = SimpleNamespace(get_device_properties=lambda device=0: _driver_properties(sms))

    def get_current_target(self):
        return self._target

    def get_active_torch_device(self):
        import torch

        return torch.device("cpu")  # the capture's tensors live there

    def get_current_device(self) -> int:
        return 0


def _driver_properties(sms: int | None) -> dict:
    if sms is None:
        raise RuntimeError("the SM count of the simulated GPU is not known here (pass the GPU's profile)")
    return {"multiprocessor_count": sms}


class _Properties(SimpleNamespace):
    """``torch.cuda.get_device_properties()`` of the simulated GPU."""

    def __getattr__(self, name):  # only for fields not set: say which GPU fact the launcher wanted
        raise AttributeError(f"the simulated GPU's properties have no {name!r} (they hold name, major, minor, "
                             f"multi_processor_count where known, warp_size)")


@contextlib.contextmanager
def simulated_device(arch: int, sms: int | None = None):
    """Inside the block, ``torch.cuda``'s device queries and Triton's active driver answer as an
    sm_``arch`` GPU with ``sms`` SMs (None: a launcher that reads the SM count gets a one-line error);
    where a GPU is present nothing changes."""
    import torch

    if torch.cuda.is_available():
        yield
        return
    import triton

    major, minor = divmod(arch, 10)
    props = {"name": f"simulated sm_{arch}", "major": major, "minor": minor, "warp_size": 32}
    if sms is not None:
        props["multi_processor_count"] = sms
    properties = _Properties(**props)
    cuda = torch.cuda
    replacements = {
        "is_available": lambda: True,  # a module that asks at import time (sglang's) picks the GPU's config
        "get_device_capability": lambda device=None: (major, minor),
        "get_device_properties": lambda device=None: properties,
        "get_device_name": lambda device=None: properties.name,
        "current_device": lambda: 0,
        "device_count": lambda: 1,
        "set_device": lambda device: None,
        "synchronize": lambda device=None: None,
        "device": _NoDevice,
        "device_of": _NoDevice,
    }
    saved = {key: getattr(cuda, key) for key in replacements}
    driver = triton.runtime.driver
    active = driver._active  # reset_active() would create the real driver, which fails without a GPU
    for key, value in replacements.items():
        setattr(cuda, key, value)
    driver.set_active(_Driver(arch, sms))
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(cuda, key, value)
        driver._active = active


__all__ = ["simulated_device"]
