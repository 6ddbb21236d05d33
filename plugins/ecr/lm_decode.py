"""Greedy decoding of a causal LM: :func:`generate` decodes batches of prompts with left
padding and a KV cache; :func:`decode_loop`, :func:`greedy_step` and :class:`NgramIndex` are
the steps it shares with the prompted LM's decoding (``templates``)."""
from __future__ import annotations

from typing import Sequence

import torch

from crsbench_plugins.ecr.lm_common import (cache_kwarg, cache_of, device_of, max_positions, pad_id, positions_of,
                                            unwrap)


@torch.inference_mode()
def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 64, batch_size: int = 16,
             no_repeat_ngram_size: int = 3, prefixes=None, progress: bool = True,
             max_length: int | None = None) -> list[str]:
    """Greedy decoding, batched with left padding and a KV cache; returns decoded continuations.

    ``prefixes``: None, or per prompt a FloatTensor ``[P_i, d_model]`` (or None), or one
    ``[B, P, d_model]`` tensor; placed before the prompt tokens via ``inputs_embeds``.
    ``no_repeat_ngram_size`` bans n-grams already present in prompt + continuation (the
    ``transformers`` semantics, prompt padding excluded). Prompts are cut from the left to
    fit ``max_length`` (default: the model's positions) minus prefix and ``max_new_tokens``.
    Prompts are decoded longest-first; results come back in input order and do not depend
    on ``batch_size``. Special tokens are stripped (``<movie>``/``<sep>`` are kept).
    """
    from tqdm.auto import tqdm

    prompts = list(prompts)
    if not prompts:
        return []
    if prefixes is not None and len(prefixes) != len(prompts):
        raise ValueError(f"generate: {len(prefixes)} prefixes for {len(prompts)} prompts")
    net = unwrap(model)
    was_training = net.training
    net.eval()
    device = device_of(net)
    eos, pad = tokenizer.eos_token_id, pad_id(tokenizer)
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    limit = max_length or max_positions(net) or 1024
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    pre = [None] * len(prompts) if prefixes is None else [prefixes[i] for i in range(len(prompts))]
    n_pre = [0 if p is None else int(p.shape[0]) for p in pre]
    for i, ids in enumerate(encoded):
        room = limit - max_new_tokens - n_pre[i]
        if room < 1:
            raise ValueError(f"generate: max_length {limit} leaves no room for the prompt")
        ids = list(ids)[-room:]
        if not ids and n_pre[i] == 0:
            ids = [start_id]
        encoded[i] = ids
    order = sorted(range(len(prompts)), key=lambda i: -(len(encoded[i]) + n_pre[i]))
    out: list[str] = [""] * len(prompts)
    kw = cache_kwarg(net)
    try:
        for b in tqdm(range(0, len(order), batch_size), desc="generate", disable=not progress,
                      dynamic_ncols=True):
            rows = order[b: b + batch_size]
            gen = _greedy_batch(net, [encoded[i] for i in rows], [pre[i] for i in rows], device, pad, eos,
                                max_new_tokens, no_repeat_ngram_size, kw)
            for i, ids in zip(rows, gen):
                out[i] = tokenizer.decode(ids, skip_special_tokens=True,
                                          clean_up_tokenization_spaces=False).strip()
    finally:
        net.train(was_training)
    return out


def _greedy_batch(net, prompt_ids, prefixes, device, pad, eos, max_new_tokens, ngram, cache_kw):
    n = len(prompt_ids)
    n_pre = [0 if p is None else int(p.shape[0]) for p in prefixes]
    width = max(len(ids) + k for ids, k in zip(prompt_ids, n_pre))
    mask = torch.zeros((n, width), dtype=torch.long, device=device)
    ids_mat = torch.full((n, width), pad, dtype=torch.long, device=device)
    for r, (ids, k) in enumerate(zip(prompt_ids, n_pre)):
        start = width - len(ids) - k
        mask[r, start:] = 1
        if ids:
            ids_mat[r, width - len(ids):] = torch.tensor(ids, device=device)
    position_ids = positions_of(mask)
    if any(n_pre):
        emb = net.get_input_embeddings()(ids_mat)
        for r, p in enumerate(prefixes):
            if p is not None:
                start = width - len(prompt_ids[r]) - n_pre[r]
                emb[r, start: start + n_pre[r]] = p.to(device=device, dtype=emb.dtype)
        inputs = {"inputs_embeds": emb}
    else:
        inputs = {"input_ids": ids_mat}
    output = net(**inputs, attention_mask=mask, position_ids=position_ids, use_cache=True)
    cache = cache_of(output)
    banned = [NgramIndex(ngram, ids) for ids in prompt_ids] if ngram and ngram > 0 else None
    return decode_loop(net, output.logits[:, -1, :].float(), cache, mask, position_ids[:, -1:], max_new_tokens,
                       banned, pad, eos)


def decode_loop(net, logits, cache, mask, positions, max_new_tokens: int, banned, pad: int, eos: int):
    """Greedy decoding from the first step's ``logits`` [B, V] and the KV ``cache``; ``mask``
    covers everything in the cache, ``positions`` [B, 1] is each row's last position."""
    n = logits.shape[0]
    generated: list[list[int]] = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool, device=logits.device)
    for _ in range(max_new_tokens):
        next_tok = greedy_step(logits, banned, done, generated, pad, eos)
        done |= next_tok == eos
        if bool(done.all()):
            break
        mask = torch.cat([mask, mask.new_ones((n, 1))], 1)
        positions = positions + 1
        output = net(input_ids=next_tok[:, None], attention_mask=mask, position_ids=positions,
                     use_cache=True, **{cache_kwarg(net): cache})
        cache = cache_of(output)
        logits = output.logits[:, -1, :].float()
    return generated


def greedy_step(logits, banned, done, generated: list[list[int]], pad: int, eos: int):
    """One greedy step for a batch: ban repeated n-grams, take the argmax (pad for finished
    rows), append it to each unfinished row's output (eos excluded). Returns the tokens."""
    if banned is not None:
        for r in range(len(generated)):
            ban = banned[r].banned()
            if ban:
                logits[r, list(ban)] = float("-inf")
    next_tok = logits.argmax(-1)
    next_tok = torch.where(done, torch.full_like(next_tok, pad), next_tok)
    for r, t in enumerate(next_tok.tolist()):
        if not done[r]:
            if t != eos:
                generated[r].append(t)
            if banned is not None:
                banned[r].push(t)
    return next_tok


class NgramIndex:
    """Tokens that would repeat an n-gram of the sequence so far (``no_repeat_ngram_size``)."""

    def __init__(self, n: int, tokens: list[int]):
        self.n, self.tokens, self.seen = n, [], {}
        for t in tokens:
            self.push(t)

    def push(self, token: int) -> None:
        self.tokens.append(token)
        if len(self.tokens) >= self.n:
            gram = tuple(self.tokens[-self.n:])
            self.seen.setdefault(gram[:-1], set()).add(gram[-1])

    def banned(self) -> set[int]:
        if len(self.tokens) < self.n - 1:
            return set()
        key = tuple(self.tokens[len(self.tokens) - self.n + 1:]) if self.n > 1 else ()
        return self.seen.get(key, set())
