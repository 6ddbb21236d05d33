"""The forward passes of the local judge (``local.py``): the next-token log-probabilities at
the end of every (pair, metric) prompt, either each prompt in full or in three stages on
a shared KV cache (common part, pair parts, metric questions); both give the same numbers
(tests/test_judges.py checks they agree within 1e-4). ``encoded`` is a list of
``(common ids, pair ids, [question ids per metric])``.
"""
from __future__ import annotations


def forward(model, cache_kw: str, input_ids, attention_mask, position_ids, cache=None):
    """The last position's logits (float) and the KV cache; ``cache_kw`` is the name the
    model's ``forward`` gives the cache argument."""
    device = model.device
    kwargs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
              "position_ids": position_ids.to(device), "use_cache": True, "logits_to_keep": 1}
    if cache is not None:
        kwargs[cache_kw] = cache
    out = model(**kwargs)
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    return out.logits[:, -1].float(), cache


def pad_left(sequences: list[list[int]], pad: int):
    import torch

    width = max(1, max(len(s) for s in sequences))
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for r, s in enumerate(sequences):
        if s:
            ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[r, width - len(s):] = 1
    return ids, mask


def last_logprobs_full(model, cache_kw: str, pad: int, encoded):
    """Reference path: every (pair, metric) prompt in full, left-padded, no cache reuse."""
    import torch

    rows = [common + middle + suffix for common, middle, suffixes in encoded for suffix in suffixes]
    ids, mask = pad_left(rows, pad)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits, _ = forward(model, cache_kw, ids, mask, positions)
    return torch.log_softmax(logits, dim=-1).cpu()


def last_logprobs_shared(model, cache_kw: str, pad: int, encoded):
    """Three stages, each on the KV cache of the previous one: the common part (chat
    header + rubric) once; the pairs' conversation+reply parts, left-padded, on the common
    cache repeated per pair; the metric questions, left-padded, on that cache repeated per
    metric. Padding thus sits between the parts; it is masked out, and position ids
    continue from each row's real length, so the result equals the full computation."""
    import torch

    common = encoded[0][0]
    if any(e[0] != common for e in encoded):  # cannot happen for one judge; stay correct anyway
        encoded = [([], c + m, s) for c, m, s in encoded]
        common = []
    n_pairs, n_metrics = len(encoded), len(encoded[0][2])
    cache, common_len = None, len(common)
    if common:
        ids = torch.tensor([common], dtype=torch.long)
        _, cache = forward(model, cache_kw, ids, torch.ones_like(ids), torch.arange(common_len)[None])
        cache.batch_repeat_interleave(n_pairs)
    # stage 2: conversation + reply of each pair
    mid_ids, mid_mask = pad_left([m for _, m, _ in encoded], pad)
    mask = torch.cat([torch.ones(n_pairs, common_len, dtype=torch.long), mid_mask], dim=-1)
    positions = common_len + (mid_mask.cumsum(-1) - 1).clamp(min=0)
    _, cache = forward(model, cache_kw, mid_ids, mask, positions, cache=cache)
    cache.batch_repeat_interleave(n_metrics)
    # stage 3: the metric questions
    suf_ids, suf_mask = pad_left([s for _, _, suffixes in encoded for s in suffixes], pad)
    done = (common_len + mid_mask.sum(-1)).repeat_interleave(n_metrics)  # real tokens so far
    mask = torch.cat([mask.repeat_interleave(n_metrics, dim=0), suf_mask], dim=-1)
    positions = done[:, None] + (suf_mask.cumsum(-1) - 1).clamp(min=0)
    logits, _ = forward(model, cache_kw, suf_ids, mask, positions, cache=cache)
    return torch.log_softmax(logits, dim=-1).cpu()
