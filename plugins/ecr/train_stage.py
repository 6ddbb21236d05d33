"""The training loop of ECR's recommender stages, readable top to bottom.

Resumable: an interrupted stage restarts from its last complete epoch; batches of epoch
``e`` depend only on (seed, e), so a resumed run ends with the same weights.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

from crsbench.plots import plot_curves
from crsbench_plugins.ecr.checkpoints import load_latest, mark_done, read_done, save_epoch

log = logging.getLogger("crsbench")


def train_stage(name: str, module: torch.nn.Module, batches: Callable[[int], Iterable[dict]],
                loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor], cfg: dict, stage_dir: Path,
                validate: Callable[[torch.nn.Module], dict] | None = None, progress: bool = True) -> dict:
    """Train ``module`` for ``cfg['epochs']`` epochs; returns the stage summary."""
    from tqdm.auto import tqdm

    stage_dir = Path(stage_dir)
    done = read_done(stage_dir)
    if done is not None:
        load_latest(stage_dir, module, None)
        log.info("%s: already trained, loaded from %s", name, stage_dir)
        return done

    optimizer = torch.optim.AdamW(module.parameters(), lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
    state = load_latest(stage_dir, module, optimizer)
    if state is not None:
        log.info("%s: resuming after epoch %d", name, state["epoch"])
    state = state or {"epoch": 0, "losses": [], "epoch_loss": [], "valid": [], "seconds": 0.0}

    for epoch in range(state["epoch"], cfg["epochs"]):
        started = time.perf_counter()
        module.train()
        losses = []
        for batch in tqdm(list(batches(epoch)), desc=f"{name} epoch {epoch + 1}/{cfg['epochs']}",
                          disable=not progress, leave=False):
            loss = loss_fn(module, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
        module.eval()
        scores = validate(module) if validate else {}
        state["epoch"] = epoch + 1
        state["losses"] += losses
        state["epoch_loss"].append(sum(losses) / max(1, len(losses)))
        state["valid"].append(scores)
        state["seconds"] += time.perf_counter() - started
        log.info("%s epoch %d: loss %.4f %s", name, epoch + 1, state["epoch_loss"][-1],
                 " ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        save_epoch(stage_dir, epoch + 1, module, optimizer, state)
        if epoch + 1 < cfg["epochs"]:  # test hook: a pause between epochs, to kill a run mid-stage
            time.sleep(float(os.environ.get("CRSBENCH_TEST_EPOCH_DELAY") or 0))

    plot_curves({f"{name} loss": state["losses"]}, stage_dir / "loss.png", title=name,
                smooth=max(1, len(state["losses"]) // 20))
    summary = {"epochs": state["epoch"], "epoch_loss": state["epoch_loss"], "valid": state["valid"],
               "seconds": round(state["seconds"], 2), "steps": len(state["losses"])}
    mark_done(stage_dir, summary)
    return summary
