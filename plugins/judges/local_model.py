"""Loading a local judge's causal LM (``local.py``): the device and dtype, one shared copy of
each (model, tokenizer) per process and configuration, the fingerprint of a local model
directory, and torch's CPU threads while a judge works.

torch and transformers are imported inside the functions, never at import.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
from pathlib import Path
from typing import Any

from crsbench.errors import UserError

_LOADED: dict[tuple, tuple[Any, Any]] = {}  # (source, gguf, device, dtype) -> (model, tokenizer)
_LOAD_LOCK = threading.Lock()


def resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    return str(device)


def transformers_at_least(major: int, minor: int) -> bool:
    import transformers

    parts = transformers.__version__.split(".")
    try:
        return (int(parts[0]), int(parts[1])) >= (major, minor)
    except (ValueError, IndexError):
        return True


def dir_fingerprint(path: Path) -> str:
    """Short hash of a local model directory's config and weight file names and sizes, so two
    different checkpoints in directories of the same name do not share cached scores."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(f"{path.name}:{path.stat().st_size}".encode())
    else:
        config = path / "config.json"
        if config.exists():
            h.update(config.read_bytes())
        for f in sorted(path.iterdir()):
            if f.suffix in (".safetensors", ".bin", ".gguf", ".pt"):
                h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:8]


def load_model(name: str, gguf_file: str | None, device: str, dtype_name: str, *, local_files_only: bool,
               trust_remote_code: bool, judge_name: str) -> tuple[Any, Any]:
    """(model, tokenizer) of ``name`` on ``device`` in ``dtype_name``, evaluated, loaded once per
    process and configuration (every judge of that configuration shares them)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = (name, gguf_file, device, dtype_name)
    with _LOAD_LOCK:
        if key not in _LOADED:
            kwargs: dict[str, Any] = {"local_files_only": local_files_only, "trust_remote_code": trust_remote_code}
            if gguf_file:
                kwargs["gguf_file"] = gguf_file
            try:
                tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
                dtype_kw = "dtype" if transformers_at_least(4, 56) else "torch_dtype"
                model = AutoModelForCausalLM.from_pretrained(name, **kwargs, **{dtype_kw: getattr(torch, dtype_name)})
            except (OSError, ValueError) as exc:
                raise UserError(f"judge {judge_name!r}: cannot load {name!r}: {exc}") from exc
            model.to(device).eval()
            _LOADED[key] = (model, tokenizer)
        return _LOADED[key]


@contextlib.contextmanager
def torch_threads(threads):
    """Torch's CPU thread count set to ``threads`` (if given) for the duration, then restored,
    so training elsewhere in the process keeps its threads."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
