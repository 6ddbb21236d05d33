"""Reading checkpoint files that a killed run, a full disk or a copy may have damaged.

Plugins load their checkpoints through these two functions, so a truncated or corrupt file
ends the run with one ``Error:`` line naming the file and what to do, not a traceback from
safetensors or torch. Both import torch / safetensors only when called.
"""
from __future__ import annotations

from pathlib import Path

from crsbench.errors import DataError


def _damaged(path: Path, exc: BaseException) -> DataError:
    return DataError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); it is damaged or "
                     f"truncated: delete its directory {Path(path).parent} and rerun the same command, which "
                     "trains again what that directory held")


def load_safetensors(path, device: str = "cpu") -> dict:
    """``safetensors.torch.load_file``, with a damaged file as a DataError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, EOFError) as exc:
        raise _damaged(Path(path), exc) from None


def load_torch(path, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` (tensors and plain containers only), with a
    damaged file as a DataError."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise _damaged(Path(path), exc) from None
