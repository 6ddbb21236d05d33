"""Generator machinery shared by the ECR stages: tokenizer, backbone, prompted-LM training, decoding.

Everything here is model-agnostic causal-LM plumbing; the ECR-specific parts (which prompts,
which targets, which knowledge prefixes) live in the stages.

- :func:`train_tokenizer` trains a byte-level BPE tokenizer on the task's training text.
- :func:`build_backbone` builds a small GPT-2 from scratch (CPU profile) or loads a
  pretrained causal LM such as ``microsoft/DialoGPT-small`` (paper profile).
- :class:`PromptedLM` turns ``{"prompt", "target", optional "prefix"}`` examples into training
  sequences ``[prefix][prompt][target eos]`` with the loss on ``target eos`` only.
- :func:`train_lm` is a plain training loop (AdamW, linear warmup/decay, gradient
  accumulation and clipping) on :class:`accelerate.Accelerator`, with per-epoch checkpoints
  and exact resumption.
- :func:`generate` does batched greedy decoding with a KV cache and left padding.

Token layout. Prompt and target are tokenized *separately* (``add_special_tokens=False``)
and concatenated; :func:`generate` tokenizes prompts the same way, so training and decoding
see the same token boundary. Put the separator (e.g. ``"<sep>"`` or ``"System:"``) at the
end of the prompt and start the target with a space if the text should read naturally.

Soft prompts. An example's ``"prefix"`` (a FloatTensor ``[P, d_model]``) is placed *before*
the prompt tokens through ``inputs_embeds``; it takes positions ``0..P-1``. ``train_lm``'s
``prefix_fn(examples) -> [B, P, d_model]`` computes prefixes per micro-batch instead (e.g. a
trainable prompt encoder over entity embeddings); if it is an ``nn.Module`` its trainable
parameters are optimized and checkpointed with the model. When both are present the
``prefix_fn`` output comes first.

Distributed training. ``cfg["batch_size"]`` is the *global* micro-batch: with ``N``
processes each takes every ``N``-th example of it. Each process's loss is its summed token
loss divided by the number of target tokens in the whole global optimizer step (known on
every process, since all share the (seed, epoch) order), times ``N`` because DDP averages
gradients. So a 1-process and an N-process run compute the same gradient up to float
summation order (dropout masks differ, of course).
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
MOVIE, SEP = "<movie>", "<sep>"
IGNORE = -100

TRAIN_DEFAULTS: dict[str, Any] = {
    "seed": 42,
    "epochs": 1,
    "batch_size": 8,            # global micro-batch (split across processes)
    "grad_accum": 1,            # micro-batches per optimizer step
    "lr": 5e-4,
    "min_lr_ratio": 0.0,        # linear decay from lr to lr * min_lr_ratio
    "warmup_steps": None,       # int, or None -> warmup_ratio * total steps
    "warmup_ratio": 0.05,
    "warmup": None,             # alias: a float < 1 is warmup_ratio, an int >= 1 is warmup_steps
    "weight_decay": 0.01,       # on >= 2-D parameters only (nanoGPT convention)
    "betas": (0.9, 0.95),
    "eps": 1e-8,
    "max_grad_norm": 1.0,       # None or 0 disables clipping
    "max_length": 256,          # prefix + prompt + target, capped at the model's positions
    "max_target_length": 128,   # target tokens incl. eos (truncated from the right)
    "prefix_tokens": 0,         # positions reserved for prefix_fn outputs when truncating
    "mixed_precision": "no",    # "no" | "bf16" | "fp16" (accelerate)
    "cpu": False,               # force CPU even if an accelerator is visible
    "keep_checkpoints": 1,      # epoch-N directories to keep (the newest ones)
}
# Training keys that do not change the trained weights. The fingerprint of a run covers the
# other TRAIN_DEFAULTS keys and the tokenized data; keys unknown to train_lm (a stage's decoding
# settings, say) are ignored.
_NON_FINGERPRINT = {"cpu", "keep_checkpoints"}


# --------------------------------------------------------------------------- tokenizer

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


# --------------------------------------------------------------------------- data

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
        self.pad_id = _pad_id(tokenizer)
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
    device = _device_of(model)
    ids, labels, mask = (batch[k].to(device) for k in ("input_ids", "labels", "attention_mask"))
    prefixes = _merge_prefixes(batch.get("prefixes"), extra_prefix, len(ids))
    if prefixes is None:
        return {"input_ids": ids, "attention_mask": mask, "position_ids": _positions(mask)}, labels
    tok_emb = _unwrap(model).get_input_embeddings()(ids)
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
             "position_ids": _positions(new_mask)}, new_labels)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


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
    if _accepts(model, "logits_to_keep"):
        logits = model(**kwargs, use_cache=False, logits_to_keep=keep).logits
    else:
        logits = model(**kwargs, use_cache=False).logits[:, width - keep:]
    logits, labels = logits[:, :-1], labels[:, first:]
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")
    return loss, int((labels != IGNORE).sum())


# --------------------------------------------------------------------------- training

def train_lm(model, tokenizer, examples: Sequence[dict], cfg: dict, stage_dir: str | os.PathLike,
             progress: bool = True, prefix_fn: Callable | None = None,
             on_epoch_end: Callable[[int, dict], None] | None = None) -> dict:
    """Train ``model`` on prompted examples; checkpoint each epoch; resume exactly.

    ``cfg`` keys: see :data:`TRAIN_DEFAULTS`. Writes under ``stage_dir``: ``epoch-N/``
    (``model.safetensors``, ``prefix.safetensors`` if ``prefix_fn`` has parameters,
    ``optimizer.pt`` with optimizer + scheduler state, ``rng-<rank>.pt``,
    ``trainer_state.json``), then at the end ``model/`` (``save_pretrained`` + tokenizer),
    ``loss.png``, ``trainer_state.json`` and the ``done`` marker.

    Restarting with the same data and cfg resumes after the newest complete epoch; the
    final weights equal those of an uninterrupted run (the example order of epoch ``e``
    depends only on ``(seed, e)``, dropout is reseeded from ``(seed, e, rank)`` at each epoch
    start, and optimizer/scheduler/RNG state are restored). If ``done`` is present the stored
    weights are loaded and the stored history returned without training. A ``stage_dir``
    holding a run with different data or cfg is an error.

    ``on_epoch_end(epoch, state)`` (1-based epoch) is called on every process after the
    checkpoint is written; raising from it stops training (used by tests to simulate a crash).

    Returns ``{"losses": per-step loss, "epoch_loss": per-epoch token-weighted mean,
    "seconds": training seconds (summed over resumed runs), "steps", "resumed_from",
    "model_dir"}``.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    cfg = {**TRAIN_DEFAULTS, **cfg}
    stage_dir = Path(stage_dir)
    acc = Accelerator(cpu=bool(cfg["cpu"]), mixed_precision=cfg["mixed_precision"])
    world, rank = acc.num_processes, acc.process_index
    seed = int(cfg["seed"])

    n_positions = _n_positions(model)
    max_length = min(int(cfg["max_length"]), n_positions) if n_positions else int(cfg["max_length"])
    data = PromptedLM(examples, tokenizer, max_length, cfg["max_target_length"], int(cfg["prefix_tokens"]))
    if len(data) == 0:
        raise ValueError("train_lm: no examples")
    fingerprint = _fingerprint(cfg, data, examples)

    bs, accum, epochs = int(cfg["batch_size"]), int(cfg["grad_accum"]), int(cfg["epochs"])
    per_step = bs * accum
    steps_per_epoch = math.ceil(len(data) / per_step)
    total_steps = steps_per_epoch * epochs
    if cfg["warmup_steps"] is not None:
        warmup = int(cfg["warmup_steps"])
    elif cfg["warmup"] is not None and float(cfg["warmup"]) >= 1:
        warmup = int(cfg["warmup"])
    else:
        ratio = cfg["warmup"] if cfg["warmup"] is not None else cfg["warmup_ratio"]
        warmup = int(float(ratio) * total_steps)
    warmup = min(warmup, max(0, total_steps - 1))  # an absolute count past the end would leave the rate rising

    prefix_module = prefix_fn if isinstance(prefix_fn, torch.nn.Module) else None
    model.to(acc.device)
    if prefix_module is not None:
        prefix_module.to(acc.device)

    # ---- finished already?
    state = _read_json(stage_dir / "trainer_state.json") if (stage_dir / "done").exists() else None
    if state is not None:
        _check_fingerprint(state, fingerprint, stage_dir)
        _load_weights(stage_dir / f"epoch-{state['epoch']}", model, prefix_module)
        return _result(state, stage_dir, resumed_from=state["epoch"])

    # ---- optimizer, schedule
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if prefix_module is not None:
        named += [(f"prefix.{n}", p) for n, p in prefix_module.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("train_lm: nothing to train (no parameter requires grad)")
    params = [p for _, p in named]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": float(cfg["weight_decay"])},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=float(cfg["lr"]),
                                  betas=tuple(cfg["betas"]), eps=float(cfg["eps"]))
    min_ratio = float(cfg["min_lr_ratio"])

    def lr_factor(step: int) -> float:  # step = optimizer steps taken so far
        if step < warmup:
            return (step + 1) / (warmup + 1)
        frac = (step - warmup) / max(1, total_steps - warmup)
        return max(min_ratio, 1.0 - (1.0 - min_ratio) * frac)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    # ---- resume
    history = {"losses": [], "epoch_loss": [], "seconds": 0.0}
    start_epoch = 0
    last = _latest_checkpoint(stage_dir, epochs)
    if last is not None:
        ck_state = _read_json(last / "trainer_state.json")
        _check_fingerprint(ck_state, fingerprint, stage_dir)
        _load_weights(last, model, prefix_module)
        opt_state = torch.load(last / "optimizer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(opt_state["optimizer"])
        scheduler.load_state_dict(opt_state["scheduler"])
        rng_file = last / f"rng-{rank}.pt"
        if rng_file.exists():
            _set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
        start_epoch = int(ck_state["epoch"])
        state = ck_state
        history = {k: ck_state[k] for k in ("losses", "epoch_loss", "seconds")}
    if acc.is_main_process:
        stage_dir.mkdir(parents=True, exist_ok=True)
        for stale in stage_dir.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    acc.wait_for_everyone()

    # ---- wrap for (distributed) training
    if any(p.requires_grad for p in model.parameters()):
        model, optimizer = acc.prepare(model, optimizer)
    else:
        optimizer = acc.prepare(optimizer)
    if prefix_module is not None and any(p.requires_grad for p in prefix_module.parameters()):
        prefix_fn = acc.prepare(prefix_fn)
    ddp_modules = [m for m in (model, prefix_fn) if isinstance(m, torch.nn.Module)]

    bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, desc=f"train {stage_dir.name}",
               disable=not progress or not acc.is_local_main_process, dynamic_ncols=True)
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        for m in ddp_modules:
            m.train()
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(_derive(seed, epoch))).tolist()
        torch.manual_seed(_derive(seed, epoch, rank + 1))  # dropout etc.: a function of (seed, epoch, rank)
        epoch_sum, epoch_tokens = 0.0, 0
        for step in range(steps_per_epoch):
            idx = order[step * per_step: (step + 1) * per_step]
            n_tokens = sum(data.n_target_tokens(i) for i in idx)
            micro = [idx[i: i + bs] for i in range(0, len(idx), bs)]
            step_loss = torch.zeros((), device=acc.device)
            for k, mb in enumerate(micro):
                mine, weight = mb[rank::world], 1.0
                if not mine:  # this process has nothing in a short last micro-batch: dummy, zero weight
                    mine, weight = mb[:1], 0.0
                batch = data.collate([data[i] for i in mine])
                sync = k == len(micro) - 1
                with contextlib.ExitStack() as stack:
                    if not sync:
                        for m in ddp_modules:
                            stack.enter_context(acc.no_sync(m))
                    with acc.autocast():
                        extra = prefix_fn([examples[i] for i in mine]) if prefix_fn is not None else None
                        loss_sum, _ = lm_loss_sum(model, batch, extra)
                    acc.backward(loss_sum * (weight * world / n_tokens))
                step_loss += loss_sum.detach() * weight
            if cfg["max_grad_norm"]:
                acc.clip_grad_norm_(params, float(cfg["max_grad_norm"]))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            total = float(acc.reduce(step_loss, reduction="sum"))
            history["losses"].append(total / n_tokens)
            epoch_sum += total
            epoch_tokens += n_tokens
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / n_tokens:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        history["epoch_loss"].append(epoch_sum / epoch_tokens)
        history["seconds"] += time.perf_counter() - t0
        state = {"epoch": epoch + 1, "global_step": (epoch + 1) * steps_per_epoch,
                 "fingerprint": fingerprint, **history}
        _save_checkpoint(acc, stage_dir, state, model, prefix_module, optimizer, scheduler,
                         int(cfg["keep_checkpoints"]))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, dict(state))
    bar.close()

    # ---- final artifacts
    if acc.is_main_process:
        model_dir = stage_dir / "model"
        tmp = stage_dir / ".tmp-model"
        shutil.rmtree(tmp, ignore_errors=True)
        acc.unwrap_model(model).save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if prefix_module is not None and _has_params(prefix_module):
            _save_module(prefix_module, tmp / "prefix.safetensors")
        shutil.rmtree(model_dir, ignore_errors=True)
        os.replace(tmp, model_dir)
        _write_json(stage_dir / "trainer_state.json", state)
        plot_losses(history["losses"], history["epoch_loss"], stage_dir / "loss.png", steps_per_epoch)
        _write_json(stage_dir / "done", {"epoch": state["epoch"], "fingerprint": fingerprint})
    acc.wait_for_everyone()
    return _result(state, stage_dir, resumed_from=start_epoch or None)


def _result(state: dict, stage_dir: Path, resumed_from) -> dict:
    return {"losses": list(state["losses"]), "epoch_loss": list(state["epoch_loss"]),
            "seconds": float(state["seconds"]), "steps": len(state["losses"]),
            "resumed_from": resumed_from, "model_dir": str(stage_dir / "model")}


def plot_losses(losses: list[float], epoch_loss: list[float], path: Path, steps_per_epoch: int) -> None:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, lw=0.8, alpha=0.7, label="step loss")
    ax.plot([steps_per_epoch * (e + 1) for e in range(len(epoch_loss))], epoch_loss, "o-", label="epoch mean")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("token cross-entropy")
    ax.legend()
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# ---- checkpoint helpers

def _save_checkpoint(acc, stage_dir: Path, state: dict, model, prefix_module, optimizer, scheduler,
                     keep: int) -> None:
    """Write ``epoch-N`` atomically: fill ``.tmp-epoch-N`` (every rank its RNG file), rename."""
    from safetensors.torch import save_model

    epoch = state["epoch"]
    tmp, final = stage_dir / f".tmp-epoch-{epoch}", stage_dir / f"epoch-{epoch}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    torch.save(_get_rng_state(), tmp / f"rng-{acc.process_index}.pt")
    if acc.is_main_process:
        save_model(acc.unwrap_model(model), str(tmp / "model.safetensors"))
        if prefix_module is not None and _has_params(prefix_module):
            _save_module(prefix_module, tmp / "prefix.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   tmp / "optimizer.pt")
        _write_json(tmp / "trainer_state.json", state)
    acc.wait_for_everyone()
    if acc.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(_epoch_dirs(stage_dir))[:-max(1, keep)]:
            shutil.rmtree(old[1], ignore_errors=True)
    acc.wait_for_everyone()


def _epoch_dirs(stage_dir: Path) -> list[tuple[int, Path]]:
    out = []
    for p in stage_dir.glob("epoch-*"):
        suffix = p.name.split("-", 1)[1]
        if suffix.isdigit() and (p / "trainer_state.json").exists():
            out.append((int(suffix), p))
    return out


def _latest_checkpoint(stage_dir: Path, max_epoch: int) -> Path | None:
    found = [(e, p) for e, p in _epoch_dirs(stage_dir) if e <= max_epoch] if stage_dir.exists() else []
    return max(found)[1] if found else None


def _load_weights(ckpt: Path, model, prefix_module) -> None:
    from safetensors.torch import load_model

    load_model(_unwrap(model), str(ckpt / "model.safetensors"), device=str(_device_of(model)))
    if prefix_module is not None and (ckpt / "prefix.safetensors").exists():
        load_model(_unwrap(prefix_module), str(ckpt / "prefix.safetensors"),
                   device=str(_device_of(prefix_module, _device_of(model))))


def _save_module(module, path: Path) -> None:
    from safetensors.torch import save_model
    save_model(_unwrap(module), str(path))


def _has_params(module) -> bool:
    return any(True for _ in module.parameters())


def _get_rng_state() -> dict:
    """RNG states as tensors / plain lists so that ``torch.load(weights_only=True)`` reads them."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {"python": [version, list(mt), gauss],
             "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                       float(np_gauss)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fingerprint(cfg: dict, data: PromptedLM, examples: Sequence[dict]) -> str:
    h = hashlib.sha256()
    relevant = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(cfg.items())
                if k in TRAIN_DEFAULTS and k not in _NON_FINGERPRINT}
    h.update(json.dumps(relevant, sort_keys=True, default=str).encode())
    for i in range(len(data)):
        h.update(json.dumps([data.prompt_ids[i], data.target_ids[i]]).encode())
        pre = examples[i].get("prefix")
        if pre is not None:
            h.update(pre.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _check_fingerprint(state: dict, fingerprint: str, stage_dir: Path) -> None:
    if state.get("fingerprint") != fingerprint:
        from crsbench.errors import UserError

        raise UserError(
            f"{stage_dir} holds a checkpoint of a different run (data or training config changed: "
            f"{state.get('fingerprint')} != {fingerprint}); delete it or use another stage directory")


def _derive(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and Python versions)."""
    digest = hashlib.sha256(",".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _write_json(path: Path, obj) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- decoding

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
    net = _unwrap(model)
    was_training = net.training
    net.eval()
    device = _device_of(net)
    eos, pad = tokenizer.eos_token_id, _pad_id(tokenizer)
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    limit = max_length or _n_positions(net) or 1024
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
    position_ids = _positions(mask)
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


# --------------------------------------------------------------------------- small utilities

def _unwrap(model):
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def _device_of(module, default=None):
    for p in module.parameters():
        return p.device
    return default or torch.device("cpu")


def _n_positions(model) -> int | None:
    config = getattr(_unwrap(model), "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if value:
            return int(value)
    return None


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(_unwrap(model).forward).parameters


def cache_kwarg(model) -> str:
    """``cache`` (transformers >= 5.x) or ``past_key_values`` (older)."""
    return "cache" if _accepts(model, "cache") else "past_key_values"


def cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)
