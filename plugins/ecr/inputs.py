"""What ECR's stages share about their inputs: the LM's view of a context, the prompt text,
the per-batch tensors (:class:`Inputs`), the template slot and batch counts.

A leaf of the ECR plugin: ``pipeline.py`` and the stage modules it runs (``templates.py``,
``responses.py``, ``backbone.py``) import it, and it imports none of them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from crsbench_plugins.ecr import features as feat

if TYPE_CHECKING:
    from crsbench_plugins.ecr.pipeline import ECRState

PLACEHOLDER = "<movie>"


def lm_context(sample: dict, turns: int | None, eos: str) -> str:
    """The context as the LM reads it (UniCRS): ``User: ...<eos>System: ...<eos>``."""
    ctx, roles = sample["context"], sample["context_roles"]
    if turns:
        ctx, roles = ctx[-turns:], roles[-turns:]
    return "".join(f"{'User' if r == 'seeker' else 'System'}: {t}{eos}" for t, r in zip(ctx, roles))


def prompt_text(sample: dict, turns: int | None, sep: str | None = None) -> str:
    return feat.context_text(sample, turns or len(sample["context"]) or 1, sep)


class Inputs:
    """Everything a batch of samples needs, computed once: the text encoder's token states,
    the LM's token ids (context [+ appended text], cut from the left), the context entities
    and the seeker's emotions toward them."""

    def __init__(self, state: ECRState, samples: list[dict], appended: list[str] | None, cached: bool,
                 with_response: bool = False):
        cfg = state.config
        tok = state.lm_tokenizer
        eos = tok.eos_token
        texts, lm_texts = [], []
        sep = state.encoder.sep_token
        for k, s in enumerate(samples):
            text, lm_text = prompt_text(s, cfg["context_turns"], sep), lm_context(s, cfg["context_turns"], eos)
            if with_response:  # pre-training reads the response too (UniCRS train_pre)
                speaker = "User" if s.get("response_role") == "seeker" else "System"
                text += f"{speaker}: {s['response']}{sep}" if sep else f" {speaker}: {s['response']}"
                lm_text += f"{speaker}: {s['response']}{eos}"
            if appended is not None:  # text after the context (the official --use_resp; off by default)
                lm_text += f"System: {appended[k] or ''}"
            texts.append(text)
            lm_texts.append(lm_text)
        self.tokens = state.encoder.token_states(texts, cached=cached)
        ids = tok(lm_texts, add_special_tokens=False)["input_ids"]
        self.lm_ids = [list(x)[-cfg["context_max_length"]:] or [tok.eos_token_id] for x in ids]
        self.entities = feat.pad_entities([s["context_entities"] for s in samples], cfg["max_context_entities"])
        m = self.entities.shape[1]
        self.emotions = np.zeros((len(samples), m, feat.N_EMOTIONS), dtype=np.float32)
        if state.emotions is not None:
            emotion_of = state.emotions.vectors(feat.seeker_texts(samples))
            for i, s in enumerate(samples):
                e = feat.entity_emotions(s, feat.turn_emotions(s, emotion_of))[-m:]
                self.emotions[i, :len(e)] = e

    def __len__(self) -> int:
        return len(self.lm_ids)

    def batch(self, idx, state: ECRState, extra_ids: list[list[int]] | None = None) -> dict:
        """Tensors on ``state.device``; ``extra_ids`` are appended to the LM input (targets)."""
        device = state.device
        tokens, token_mask = self.tokens.batch(idx, device)
        ids = [self.lm_ids[i] + (extra_ids[k] if extra_ids else []) for k, i in enumerate(idx)]
        width = max(len(x) for x in ids)
        pad = state.lm_tokenizer.pad_token_id
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):  # left padding: every row ends at the last column
            input_ids[row, width - len(x):] = torch.as_tensor(x)
            mask[row, width - len(x):] = 1
        rows = np.asarray(list(idx), dtype=np.int64)
        return {"tokens": tokens, "token_mask": token_mask,
                "entities": torch.as_tensor(self.entities[rows], device=device),
                "entity_emotions": torch.as_tensor(self.emotions[rows], device=device),
                "input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def n_batches(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size


def fill_template(template: str, names: list[str]) -> tuple[str, list[str]]:
    """Replace each ``<movie>`` slot with the next recommended title; returns the names used."""
    parts = template.split(PLACEHOLDER)
    used = []
    text = parts[0]
    for k, part in enumerate(parts[1:]):
        name = names[k] if k < len(names) else names[-1] if names else "a movie"
        used.append(name)
        text += name + part
    return " ".join(text.split()), used
