"""The conversation stage (UniCRS train_conv): prompts that make the frozen LM write the
recommender's reply with every movie masked as ``<movie>``.

A copy of the pre-trained prompt encoder, with its conversation prefix, turns the context's
token states and entities into the LM's past keys and values; the LM reads the context and
``System:`` and is trained (through the prompt only) on the template. Its output feeds the
recommendation stage and, with the slots filled, is the reply.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

log = logging.getLogger("crsbench")
IGNORE = -100


def shared_lm(cfg: dict, train: list[dict], ckpt: Path):
    """The BPE tokenizer of a scratch LM, trained once on the task's training text."""
    from crsbench_plugins.ecr.lm_build import train_tokenizer

    from transformers import PreTrainedTokenizerFast

    from crsbench import distributed

    tok_dir = Path(ckpt) / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        if distributed.is_main():  # one writer; other processes load what it wrote
            texts = [t for s in train for t in s["context"]] + [s["response"] for s in train] + \
                    [s["response_template"] for s in train]
            train_tokenizer(texts, cfg["lm"]["vocab_size"], tok_dir)
        distributed.barrier()
    return PreTrainedTokenizerFast.from_pretrained(str(tok_dir))


def _target_ids(tokenizer, templates: list[str], max_len: int) -> list[list[int]]:
    ids = tokenizer([" " + t for t in templates], add_special_tokens=False)["input_ids"]
    return [list(x)[:max_len - 1] + [tokenizer.eos_token_id] for x in ids]


def conv_loss(encoder, lm, batch: dict, n_target: list[int]) -> torch.Tensor:
    """Mean next-token cross-entropy over the template tokens (the last columns of each row)."""
    from crsbench_plugins.ecr.prompt_model import prompted_forward

    kv, prompt_mask, _ = encoder(batch["entities"], batch["tokens"], batch["token_mask"], "conv")
    width = max(n_target)
    logits = prompted_forward(lm, kv, prompt_mask, batch["input_ids"], batch["attention_mask"],
                              logits_to_keep=width + 1).logits[:, :-1].float()       # predicts the last `width`
    labels = batch["input_ids"][:, -width:].clone()
    for row, n in enumerate(n_target):
        labels[row, :width - n] = IGNORE
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)


class TemplateGenerator:
    def __init__(self, encoder, state, cfg, summary):
        self.encoder, self.state, self.cfg, self.summary = encoder.eval(), state, cfg, summary

    @classmethod
    def fit(cls, cfg, train, valid, state, encoder, stage_dir: Path, progress=True):
        from crsbench import distributed
        from crsbench_plugins.ecr.inputs import Inputs, n_batches
        from crsbench_plugins.ecr.train_stage import train_stage

        tcfg = cfg["templates"]
        tok, lm = state.lm_tokenizer, state.lm
        examples = seeded_subset([s for s in train if s["response_template"].strip()], tcfg.get("max_train"),
                                 state.seed)
        inputs = Inputs(state, examples, None, cached=True)
        system = tok("System:", add_special_tokens=False)["input_ids"]
        targets = _target_ids(tok, [s["response_template"] for s in examples], cfg["response_max_length"])

        def batches(epoch):
            order = np.random.default_rng([state.seed, 7, epoch]).permutation(len(examples))
            for start in range(0, len(order), tcfg["batch_size"]):
                whole = order[start:start + tcfg["batch_size"]].tolist()
                idx = distributed.shard(whole)  # all of it with one process
                scale = sum(len(targets[i]) for i in idx) / sum(len(targets[i]) for i in whole)
                if not idx:
                    idx, scale = whole[:1], 0.0
                batch = inputs.batch(idx, state, extra_ids=[system + targets[i] for i in idx])
                batch["n_target"] = [len(targets[i]) for i in idx]
                batch["scale"] = scale
                yield batch

        summary = train_stage("templates", encoder, batches,
                              lambda module, batch: conv_loss(module, lm, batch, batch["n_target"]),
                              tcfg, Path(stage_dir), steps_per_epoch=n_batches(len(examples), tcfg["batch_size"]),
                              progress=progress)
        return cls(encoder, state, cfg, dict(summary, n_examples=len(examples)))

    @torch.no_grad()
    def generate(self, samples: list[dict]) -> list[str]:
        from crsbench_plugins.ecr.inputs import Inputs

        state, tok = self.state, self.state.lm_tokenizer
        system = tok("System:", add_special_tokens=False)["input_ids"]
        out: list[str] = []
        bs = self.cfg["decode"]["batch_size"]
        for start in range(0, len(samples), bs):
            chunk = samples[start:start + bs]
            inputs = Inputs(state, chunk, None, cached=False)
            batch = inputs.batch(range(len(chunk)), state, extra_ids=[system] * len(chunk))
            kv, prompt_mask, _ = self.encoder(batch["entities"], batch["tokens"], batch["token_mask"], "conv")
            ids = greedy_with_prompt(state.lm, kv, prompt_mask, batch["input_ids"], batch["attention_mask"],
                                     eos=tok.eos_token_id, pad=tok.pad_token_id,
                                     max_new_tokens=self.cfg["templates"]["max_new_tokens"],
                                     no_repeat_ngram_size=self.cfg["decode"]["no_repeat_ngram_size"])
            out += [" ".join(tok.decode(x, skip_special_tokens=True, clean_up_tokenization_spaces=False).split())
                    for x in ids]
        return out


def greedy_with_prompt(lm, kv, prompt_mask, input_ids, attention_mask, eos: int, pad: int,
                       max_new_tokens: int, no_repeat_ngram_size: int = 3) -> list[list[int]]:
    """Greedy decoding after the prompt's keys/values and the (left-padded) inputs, with a KV
    cache; n-grams already in a row's input or output are not repeated (transformers'
    ``no_repeat_ngram_size``)."""
    from crsbench_plugins.ecr.lm_common import cache_of
    from crsbench_plugins.ecr.lm_decode import NgramIndex, decode_loop
    from crsbench_plugins.ecr.prompt_model import prompted_forward

    n = input_ids.shape[0]
    rows = [input_ids[r][attention_mask[r].bool()].tolist() for r in range(n)]
    banned = [NgramIndex(no_repeat_ngram_size, ids) for ids in rows] if no_repeat_ngram_size else None
    out = prompted_forward(lm, kv, prompt_mask, input_ids, attention_mask, use_cache=True, logits_to_keep=1)
    mask = torch.cat([prompt_mask.to(attention_mask.dtype), attention_mask], 1)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -1:]
    return decode_loop(lm, out.logits[:, -1].float(), cache_of(out), mask, positions, max_new_tokens, banned,
                       pad, eos)


def seeded_subset(examples: list, n: int | None, seed: int) -> list:
    """At most ``n`` examples, drawn with the run's seed (order kept)."""
    if not n or n >= len(examples):
        return examples
    keep = np.random.default_rng([seed, 11]).choice(len(examples), size=n, replace=False)
    return [examples[i] for i in sorted(keep.tolist())]


def stage_summary(summary: dict) -> dict:
    """The stage summary for the result file (per-epoch numbers, not every step)."""
    return {k: v for k, v in summary.items() if k != "losses"}
