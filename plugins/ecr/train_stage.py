"""The training loop of ECR's prompt-encoder stages (pre-training, conversation, recommendation),
readable top to bottom.

AdamW without weight decay on biases and norms, linear warm-up then linear decay to zero
(transformers' ``get_linear_schedule_with_warmup``, as the official scripts use), gradient
clipping only where ``max_grad_norm`` is set (the official scripts pass none). Only the prompt
encoder trains; the LM and the text encoder stay frozen. With ``select`` (a validation key and
``min``/``max``), the epoch with the best validation value is the one kept, as the official
train_rec.py keeps its ``best`` directory (by validation loss).

Resumable: an interrupted stage restarts from its last complete epoch with its optimizer and
schedule; batches of epoch ``e`` depend only on (seed, e), so a resumed run ends with the
same weights.
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

from crsbench import distributed
from crsbench.plots import plot_curves
from crsbench_plugins.ecr.checkpoints import load_best, load_latest, mark_done, read_done, save_best, save_epoch

log = logging.getLogger("crsbench")


class _OptimizerAndSchedule:
    """Saved and restored together, so a resumed stage continues the same schedule."""

    def __init__(self, optimizer, scheduler):
        self.optimizer, self.scheduler = optimizer, scheduler

    def state_dict(self):
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") or "norm" in name.lower() else decay).append(p)
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}) if g["params"]]


def warmup_steps(cfg: dict, total_steps: int) -> int:
    """``warmup`` (a fraction of the total steps: the profiles) or ``warmup_steps`` (an
    absolute count, a user's override; at least one step of decay is left)."""
    if cfg.get("warmup_steps") is not None:
        steps = int(cfg["warmup_steps"])
        if steps >= total_steps:
            log.warning("warmup_steps=%d >= the %d steps of the stage: the learning rate would only rise; "
                        "use warmup=<fraction>", steps, total_steps)
        return min(steps, max(0, total_steps - 1))
    return int(float(cfg.get("warmup", 0.0)) * total_steps)


def is_better(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value < best if mode == "min" else value > best)


def train_stage(name: str, module: torch.nn.Module, batches: Callable[[int], Iterable[dict]],
                loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor], cfg: dict, stage_dir: Path,
                steps_per_epoch: int, validate: Callable[[torch.nn.Module], dict] | None = None,
                progress: bool = True, select: tuple[str, str] | None = None) -> dict:
    """Train ``module`` for ``cfg['epochs']`` epochs; returns the stage summary. ``select``:
    ``(validation key, "min" | "max")``, the epoch kept (default: the last)."""
    from tqdm.auto import tqdm

    stage_dir = Path(stage_dir)
    done = read_done(stage_dir)
    if done is not None:
        load_latest(stage_dir, module, None)
        if done.get("kept_epoch") and done["kept_epoch"] != done.get("epochs"):
            load_best(stage_dir, module)
        log.info("%s: already trained, loaded from %s", name, stage_dir)
        return done

    total = max(1, steps_per_epoch * cfg["epochs"])
    warmup = warmup_steps(cfg, total)
    optimizer = torch.optim.AdamW(param_groups(module, cfg.get("weight_decay", 0.0)), lr=cfg["lr"])

    def lr_factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    opt = _OptimizerAndSchedule(optimizer, scheduler)
    state = load_latest(stage_dir, module, opt)
    if state is not None:
        log.info("%s: resuming after epoch %d", name, state["epoch"])
    state = state or {"epoch": 0, "losses": [], "epoch_loss": [], "valid": [], "seconds": 0.0}

    for epoch in range(state["epoch"], cfg["epochs"]):
        started = time.perf_counter()
        module.train()
        losses = []
        for batch in tqdm(batches(epoch), total=steps_per_epoch, desc=f"{name} epoch {epoch + 1}/{cfg['epochs']}",
                          disable=not progress, leave=False):
            # several processes: each has its share of the batch, scaled so the summed
            # gradients equal the one-process gradient of the whole batch
            loss = loss_fn(module, batch) * batch.get("scale", 1.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.all_reduce_gradients(module)
            batch_loss = distributed.all_reduce_sum(loss.detach().clone()).item()
            if not math.isfinite(batch_loss):
                from crsbench.errors import DegenerateRunError

                raise DegenerateRunError(f"{name}: the loss became {batch_loss} at epoch {epoch + 1} step "
                                         f"{len(losses) + 1}; lower {name}.lr (now {cfg['lr']})")
            if cfg.get("max_grad_norm"):
                torch.nn.utils.clip_grad_norm_(module.parameters(), float(cfg["max_grad_norm"]))
            optimizer.step()
            scheduler.step()
            losses.append(batch_loss)
        module.eval()
        scores = validate(module) if validate else {}
        state["epoch"] = epoch + 1
        state["losses"] += losses
        state["epoch_loss"].append(sum(losses) / max(1, len(losses)))
        state["valid"].append(scores)
        state["seconds"] += time.perf_counter() - started
        log.info("%s epoch %d: loss %.4f %s", name, epoch + 1, state["epoch_loss"][-1],
                 " ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        better = select is not None and is_better(scores[select[0]], state.get("best_value"), select[1])
        if better:
            state["best_epoch"], state["best_value"] = epoch + 1, scores[select[0]]
        if distributed.is_main():  # one writer; the others wait until the epoch is on disk
            if better:
                save_best(stage_dir, module)
            save_epoch(stage_dir, epoch + 1, module, opt, state)
        distributed.barrier()
        if epoch + 1 < cfg["epochs"]:  # test hook: a pause between epochs, to kill a run mid-stage
            time.sleep(float(os.environ.get("CRSBENCH_TEST_EPOCH_DELAY") or 0))

    kept = state.get("best_epoch") or state["epoch"]
    if kept != state["epoch"]:
        load_best(stage_dir, module)
        log.info("%s: keeping epoch %d (best %s)", name, kept, select[0])
    summary = {"epochs": state["epoch"], "epoch_loss": state["epoch_loss"], "valid": state["valid"],
               "seconds": round(state["seconds"], 2), "steps": len(state["losses"]), "warmup_steps": warmup,
               "kept_epoch": kept, "selected_by": f"{select[1]} {select[0]}" if select else "last epoch"}
    if distributed.is_main():
        plot_curves({f"{name} loss": state["losses"]}, stage_dir / "loss.png", title=name,
                    smooth=max(1, len(state["losses"]) // 20))
        mark_done(stage_dir, summary)
    distributed.barrier()
    return summary
