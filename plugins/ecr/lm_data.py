"""Prompted-LM examples as training batches, and their loss.

:class:`PromptedLM` turns ``{"prompt", "target", optional "prefix"}`` examples into training
sequences ``[prefix][prompt][target eos]`` with the loss on ``target eos`` only;
:func:`lm_inputs` and :func:`lm_loss_sum` run a model on its batches.

Token layout. Prompt and target are tokenized *separately* (``add_special_tokens=False``)
and concatenated; :func:`crsbench_plugins.ecr.lm_decode.generate` tokenizes prompts the same
way, so training and decoding see the same token boundary. Put the separator (e.g.
``"<sep>"`` or ``"System:"``) at the end of the prompt and start the target with a space if
the text should read naturally.

Soft prompts. An example's ``"prefix"`` (a FloatTensor ``[P, d_model]``) is placed *before*
the prompt tokens through ``inputs_embeds``; it takes positions ``0..P-1``. ``train_lm``'s
``prefix_fn(examples) -> [B, P, d_model]`` computes prefixes per micro-batch instead (e.g. a
trainable prompt encoder over entity embeddings); if it is an ``nn.Module`` its trainable
parameters are optimized and checkpointed with the model. When both are present the
``prefix_fn`` output comes first.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from crsbench_plugins.ecr.lm_common import IGNORE, accepts, device_of, pad_id, positions_of, unwrap


class PromptedLM(Dataset):
    """Tokenized ``[prefix][prompt][target eos]`` sequences; loss on ``target eos`` only.

    ``examples``: dicts with ``"prompt"``, ``"target"`` and optionally ``"prefix"``
    (FloatTensor ``[P, d_model]``). The target (with eos) is cut to ``max_target_length``
    from the right, then the prompt is cut from the *left* so that
    ``P + prefix_tokens + len(prompt) + len(target) <= max_length``.
    Items: ``{"input_ids", "labels", "prefix", "index"}`` (1-D LongTensors, labels
    ``-100`` on prompt tokens); batch them with :meth:`collate`.
    """

    def __init__(self, examples: Sequence[dict], tokenizer, max_length: int = 256,
                 max_target_length: int | None = 128, prefix_tokens: int = 0):
        self.examples = examples
        self.pad_id = pad_id(tokenizer)
        eos = tokenizer.eos_token_id
        prompts = tokenizer([ex["prompt"] for ex in examples], add_special_tokens=False)["input_ids"]
        targets = tokenizer([ex["target"] for ex in examples], add_special_tokens=False)["input_ids"]
        self.prompt_ids, self.target_ids = [], []
        for ex, p, t in zip(examples, prompts, targets):
            n_prefix = prefix_tokens + (0 if ex.get("prefix") is None else int(ex["prefix"].shape[0]))
            t = (list(t) + [eos])[: max_target_length or None]
            room = max_length - n_prefix
            if room < 1:
                raise ValueError(f"max_length {max_length} leaves no room after a {n_prefix}-token prefix")
            t = t[:room]
            keep = room - len(t)
            self.prompt_ids.append(list(p)[len(p) - keep:] if keep > 0 else [])
            self.target_ids.append(t)

    def __len__(self) -> int:
        return len(self.examples)

    def n_target_tokens(self, i: int) -> int:
        return len(self.target_ids[i])

    def __getitem__(self, i: int) -> dict:
        p, t = self.prompt_ids[i], self.target_ids[i]
        return {"input_ids": torch.tensor(p + t, dtype=torch.long),
                "labels": torch.tensor([IGNORE] * len(p) + t, dtype=torch.long),
                "prefix": self.examples[i].get("prefix"), "index": i}

    def collate(self, items: list[dict]) -> dict:
        """Left-pad to a batch: ``input_ids``, ``labels``, ``attention_mask`` ``[B, L]`` and
        ``prefixes`` (list of ``[P_i, d]`` tensors or None). Left padding ends every row's
        target at the last column, so the loss needs logits for the last columns only."""
        width = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            if n:
                ids[row, -n:], labels[row, -n:], mask[row, -n:] = it["input_ids"], it["labels"], 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask,
                "prefixes": [it["prefix"] for it in items], "index": [it["index"] for it in items]}


def lm_inputs(model, batch: dict, extra_prefix: torch.Tensor | None = None):
    """Model kwargs and labels for a (left-padded) :meth:`PromptedLM.collate` batch.

    Without prefixes: ``input_ids``, ``attention_mask`` and ``position_ids`` (counted from
    each row's first real token). With prefixes (the batch's per-example ones and/or
    ``extra_prefix`` ``[B, P, d]``, which goes first) the rows become ``inputs_embeds``
    ``[pad][prefix_i][tokens_i]`` and the labels get ``-100`` on prefix positions.
    """
    device = device_of(model)
    ids, labels, mask = (batch[k].to(device) for k in ("input_ids", "labels", "attention_mask"))
    prefixes = _merge_prefixes(batch.get("prefixes"), extra_prefix, len(ids))
    if prefixes is None:
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions_of(mask)}, labels
    tok_emb = unwrap(model).get_input_embeddings()(ids)
    lengths = mask.sum(1).tolist()
    n_prefix = [0 if p is None else int(p.shape[0]) for p in prefixes]
    width = max(p + n for p, n in zip(n_prefix, lengths))
    new_mask = mask.new_zeros((len(ids), width))
    new_labels = labels.new_full((len(ids), width), IGNORE)
    rows = []
    for row, (pre, n_pre, n) in enumerate(zip(prefixes, n_prefix, lengths)):
        pad = width - n_pre - n
        parts = [tok_emb.new_zeros((pad, tok_emb.shape[-1]))] if pad else []
        if pre is not None:
            parts.append(pre.to(device=device, dtype=tok_emb.dtype))
        if n:
            parts.append(tok_emb[row, -n:])
            new_labels[row, -n:] = labels[row, -n:]
        rows.append(torch.cat(parts, 0))
        new_mask[row, pad:] = 1
    return ({"inputs_embeds": torch.stack(rows, 0), "attention_mask": new_mask,
             "position_ids": positions_of(new_mask)}, new_labels)


def _merge_prefixes(batch_prefixes, extra_prefix, n_rows):
    have_batch = batch_prefixes is not None and any(p is not None for p in batch_prefixes)
    if extra_prefix is None and not have_batch:
        return None
    out = []
    for row in range(n_rows):
        parts = []
        if extra_prefix is not None:
            parts.append(extra_prefix[row])
        if have_batch and batch_prefixes[row] is not None:
            parts.append(batch_prefixes[row].to(parts[0]) if parts else batch_prefixes[row])
        out.append(torch.cat(parts, 0) if len(parts) > 1 else (parts[0] if parts else None))
    return out


def lm_loss_sum(model, batch: dict, extra_prefix: torch.Tensor | None = None):
    """Summed next-token cross-entropy over the label positions, and their count.

    Logits are computed only from the first column holding a label onwards (the LM head
    over an 8k-50k vocabulary is a large share of a small model's cost).
    """
    kwargs, labels = lm_inputs(model, batch, extra_prefix)
    width = labels.shape[1]
    has_label = (labels[:, 1:] != IGNORE).any(0)
    first = int(has_label.nonzero()[0]) + 1 if bool(has_label.any()) else width - 1
    keep = width - first + 1  # logits at first-1 .. width-1
    if accepts(model, "logits_to_keep"):
        logits = model(**kwargs, use_cache=False, logits_to_keep=keep).logits
    else:
        logits = model(**kwargs, use_cache=False).logits[:, width - keep:]
    logits, labels = logits[:, :-1], labels[:, first:]
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")
    return loss, int((labels != IGNORE).sum())
