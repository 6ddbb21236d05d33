"""The critic's inputs: the encoder, the context tail and the features of a (context, response) pair.

The encoder is injectable: any object with ``encode(texts) -> [N, D]`` (a torch tensor or a
numpy array). The default is the ECR plugin's all-MiniLM-L6-v2 ``TextEncoder``. The features
of a pair are ``[c, r, c * r]`` (context tail and response embeddings) plus, optionally, the
countable properties of the response in :data:`SURFACE_FEATURES`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

SURFACE_FEATURES = ("log_words", "log_chars", "type_token_ratio", "top_token_share", "log_sentences",
                    "alpha_share", "ends_with_punct", "has_year", "has_exclamation", "has_question")


def encoder_id(encoder) -> str:
    for attr in ("cache_id", "name", "model_id"):
        value = getattr(encoder, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(encoder).__name__


def default_encoder():
    from crsbench_plugins.ecr.text_encoder import get_encoder

    return get_encoder()


def encode_texts(encoder, texts: list[str], batch_size: int = 64, cache: bool = True):
    """``encoder.encode(texts)`` as a float32 tensor [N, D]; through the ECR embedding cache
    when ``cache`` and the encoder has a ``cache_id`` (the real TextEncoder)."""
    import torch

    if cache and isinstance(getattr(encoder, "cache_id", None), str):
        from crsbench_plugins.ecr.text_encoder import EmbeddingCache

        emb = EmbeddingCache(encoder).embed(texts, batch_size=batch_size)
    else:
        try:
            emb = encoder.encode(texts, batch_size=batch_size)
        except TypeError:  # a minimal encoder: encode(texts) only
            emb = encoder.encode(texts)
    emb = emb if isinstance(emb, torch.Tensor) else torch.as_tensor(np.asarray(emb))
    emb = emb.detach().float().cpu()
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(f"encoder returned shape {tuple(emb.shape)} for {len(texts)} texts")
    return emb


def context_tail(context: str | Sequence[str] | None, turns: int) -> str:
    if context is None:
        return ""
    if isinstance(context, str):
        return context
    return "\n".join(str(t) for t in list(context)[-turns:]) if turns > 0 else ""


def surface_features(response: str) -> list[float]:
    """Countable properties of a reply (see SURFACE_FEATURES); a small judge leans on them."""
    import re

    words = response.split()
    n = len(words)
    lowered = [w.lower() for w in words]
    top = max((lowered.count(w) for w in set(lowered)), default=0)
    return [math.log1p(n), math.log1p(len(response)), len(set(lowered)) / n if n else 0.0, top / n if n else 0.0,
            math.log1p(len(re.findall(r"[.!?]+", response))),
            sum(w.isalpha() for w in words) / n if n else 0.0,
            float(response.rstrip().endswith((".", "!", "?"))), float(bool(re.search(r"\((19|20)\d\d\)", response))),
            float("!" in response), float("?" in response)]


def pair_features(c, r, responses, surface: bool):
    """[context, response, context * response (, surface features)] from the two embeddings."""
    import torch

    parts = [c, r, c * r]
    if surface:
        parts.append(torch.tensor([surface_features(t) for t in responses], dtype=torch.float32).reshape(len(responses), -1))
    return torch.cat(parts, dim=1)
