"""Device names, and a device-placement check for models' tests.

``check_device_name(device)`` checks a ``--device`` value before a run starts. The
placement check: every module call's tensor inputs must be on the device of that module's
own parameters.

``with check_devices() as seen: ...`` installs a global forward pre-hook (torch imports
only when it is used); a call whose input tensor sits on another device than the module's
parameters raises ``DeviceMismatch`` naming the module and both devices. ``seen`` collects
the devices of every checked call, so a test can also assert where the work ran.
"""
from __future__ import annotations

from contextlib import contextmanager


class DeviceMismatch(RuntimeError):
    pass


def _tensors(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


@contextmanager
def check_devices():
    from torch.nn.modules.module import register_module_forward_pre_hook

    seen: set = set()

    def hook(module, args, kwargs):
        own = next(module.parameters(recurse=False), None)
        if own is None:
            own = next(module.buffers(recurse=False), None)
        if own is None:
            return None
        for t in _tensors((args, kwargs)):
            # 0-dim CPU tensors are scalars that torch moves itself
            if t.device != own.device and not (t.dim() == 0 and t.device.type == "cpu"):
                raise DeviceMismatch(f"{type(module).__name__} has its parameters on {own.device} "
                                     f"but got an input on {t.device}")
        seen.add(str(own.device))
        return None

    handle = register_module_forward_pre_hook(lambda m, a: hook(m, a, {}))
    try:
        yield seen
    finally:
        handle.remove()


DEVICE_NAMES = "auto, cpu, cuda, cuda:N, mps"


def check_device_name(device: str) -> str:
    """``--device`` checked before anything runs: a name torch knows for a device this
    machine has (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``), else a UserError."""
    import re

    from crsbench.errors import UserError

    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise UserError(f"--device {device!r}: not a device name (use {DEVICE_NAMES})")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is available on this machine")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if device == "mps":
        import torch

        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError("--device mps: no MPS device is available on this machine")
    return device
