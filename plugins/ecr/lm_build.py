"""The tokenizer and the causal-LM backbone of the ECR stages.

- :func:`train_tokenizer` trains a byte-level BPE tokenizer on the task's training text.
- :func:`build_backbone` builds a small GPT-2 from scratch (CPU profile) or loads a
  pretrained causal LM such as ``microsoft/DialoGPT-small`` (paper profile).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable

import torch

from crsbench_plugins.ecr.lm_common import BOS, EOS, MOVIE, PAD, SEP, UNK


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike):
    """Train a byte-level BPE tokenizer on ``texts`` and save it to ``out_dir``.

    Special tokens (ids 0-3): ``<pad> <bos> <eos> <unk>``; then ``<movie>`` (4) and
    ``<sep>`` (5), which are atomic but *not* special, so decoding with
    ``skip_special_tokens=True`` keeps them. Deterministic for the same texts.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=[PAD, BOS, EOS, UNK, MOVIE, SEP],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((t for t in texts if t), trainer)
    # The trainer registers every special token as special; re-register the two placeholders
    # as plain (non-stripped) added tokens. They keep ids 4 and 5.
    tok.add_tokens([AddedToken(MOVIE, special=False, normalized=False),
                    AddedToken(SEP, special=False, normalized=False)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        clean_up_tokenization_spaces=False)
    # Saved to a temp dir, then renamed: a run killed mid-save leaves no tokenizer.json that a
    # rerun would load without the files written after it.
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return tokenizer


# --------------------------------------------------------------------------- backbone

def build_backbone(cfg: dict, tokenizer=None):
    """Return ``(model, tokenizer)`` for ``cfg["backbone"]``.

    - ``"scratch-gpt2"``: a randomly initialised GPT-2 (``n_layer``, ``n_head``, ``n_embd``,
      ``n_positions``, ``dropout`` from cfg) over ``tokenizer``'s vocabulary, seeded by
      ``cfg["seed"]``.
    - anything else: a hub id or local directory loaded with ``AutoModelForCausalLM`` /
      ``AutoTokenizer``; ``<pad>``, ``<movie>`` and ``<sep>`` are added when missing and the
      embeddings resized (new rows: transformers' mean resizing, seeded).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config

    seed = int(cfg.get("seed", 42))
    name = cfg.get("backbone", "scratch-gpt2")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "scratch-gpt2":
            if tokenizer is None:
                raise ValueError("build_backbone: 'scratch-gpt2' needs a tokenizer (see train_tokenizer)")
            dropout = float(cfg.get("dropout", 0.1))
            config = GPT2Config(
                vocab_size=len(tokenizer), n_positions=int(cfg.get("n_positions", 256)),
                n_embd=int(cfg.get("n_embd", 256)), n_layer=int(cfg.get("n_layer", 4)),
                n_head=int(cfg.get("n_head", 4)), resid_pdrop=dropout, embd_pdrop=dropout,
                attn_pdrop=dropout, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
            model = AutoModelForCausalLM.from_config(config)
        else:
            local_only = bool(cfg.get("local_files_only", False))
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
            model = AutoModelForCausalLM.from_pretrained(name, local_files_only=local_only)
            added = tokenizer.add_tokens([t for t in (MOVIE, SEP) if t not in tokenizer.get_vocab()])
            if tokenizer.pad_token is None:
                added += tokenizer.add_special_tokens({"pad_token": PAD})
            if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
                model.resize_token_embeddings(len(tokenizer))
            model.config.pad_token_id = tokenizer.pad_token_id
            if getattr(model, "generation_config", None) is not None:
                model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
