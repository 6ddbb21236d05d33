"""Names and small helpers shared by the causal-LM modules (``lm_build``, ``lm_data``,
``lm_train``, ``lm_checkpoints``, ``lm_decode``): special tokens, the ignored-label id, model
unwrapping and the transformers-version differences of the KV cache."""
from __future__ import annotations

import inspect

import torch

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
MOVIE, SEP = "<movie>", "<sep>"
IGNORE = -100


def unwrap(model):
    """The model inside DDP / ``torch.compile`` wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def device_of(module, default=None):
    for p in module.parameters():
        return p.device
    return default or torch.device("cpu")


def max_positions(model) -> int | None:
    """The longest sequence the model's position embeddings allow, if its config says."""
    config = getattr(unwrap(model), "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if value:
            return int(value)
    return None


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def accepts(model, name: str) -> bool:
    return name in inspect.signature(unwrap(model).forward).parameters


def cache_kwarg(model) -> str:
    """``cache`` (transformers >= 5.x) or ``past_key_values`` (older)."""
    return "cache" if accepts(model, "cache") else "past_key_values"


def cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: counted from each row's first real token."""
    return (mask.cumsum(-1) - 1).clamp(min=0)
