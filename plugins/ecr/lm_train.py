"""Training a causal LM on prompted examples (:func:`train_lm`).

A plain training loop (AdamW, linear warmup/decay, gradient accumulation and clipping) on
:class:`accelerate.Accelerator`, with per-epoch checkpoints (``lm_checkpoints``) and exact
resumption; the examples and their loss are ``lm_data``'s.

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
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from crsbench_plugins.ecr.lm_checkpoints import (has_params, latest_checkpoint, load_weights, read_json,
                                                 save_checkpoint, save_module, set_rng_state, write_json)
from crsbench_plugins.ecr.lm_common import max_positions
from crsbench_plugins.ecr.lm_data import PromptedLM, lm_loss_sum

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

    n_positions = max_positions(model)
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
    state = read_json(stage_dir / "trainer_state.json") if (stage_dir / "done").exists() else None
    if state is not None:
        _check_fingerprint(state, fingerprint, stage_dir)
        load_weights(stage_dir / f"epoch-{state['epoch']}", model, prefix_module)
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
    last = latest_checkpoint(stage_dir, epochs)
    if last is not None:
        ck_state = read_json(last / "trainer_state.json")
        _check_fingerprint(ck_state, fingerprint, stage_dir)
        load_weights(last, model, prefix_module)
        opt_state = torch.load(last / "optimizer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(opt_state["optimizer"])
        scheduler.load_state_dict(opt_state["scheduler"])
        rng_file = last / f"rng-{rank}.pt"
        if rng_file.exists():
            set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
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
        save_checkpoint(acc, stage_dir, state, model, prefix_module, optimizer, scheduler,
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
        if prefix_module is not None and has_params(prefix_module):
            save_module(prefix_module, tmp / "prefix.safetensors")
        shutil.rmtree(model_dir, ignore_errors=True)
        os.replace(tmp, model_dir)
        write_json(stage_dir / "trainer_state.json", state)
        plot_losses(history["losses"], history["epoch_loss"], stage_dir / "loss.png", steps_per_epoch)
        write_json(stage_dir / "done", {"epoch": state["epoch"], "fingerprint": fingerprint})
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
