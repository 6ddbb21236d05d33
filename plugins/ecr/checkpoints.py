"""Epoch checkpoints for ECR's stages: weights in safetensors, optimizer state loaded with
``torch.load(weights_only=True)``, each written to a temp dir and renamed into place."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from crsbench.checkpoints import load_safetensors as load_file, load_torch  # a damaged file: one Error line

DONE = "done.json"


def _epoch_dirs(stage_dir: Path) -> list[tuple[int, Path]]:
    out = []
    for path in stage_dir.glob("epoch-*"):
        if path.is_dir() and (path / "state.json").exists():
            out.append((int(path.name.split("-")[1]), path))
    return sorted(out)


def save_epoch(stage_dir: Path, epoch: int, module: torch.nn.Module, optimizer, state: dict) -> None:
    """Write ``epoch-N`` atomically and drop older epoch dirs."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    tmp = stage_dir / f".epoch-{epoch}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, tmp / "model.safetensors")
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    final = stage_dir / f"epoch-{epoch}"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old, path in _epoch_dirs(stage_dir):
        if old < epoch:
            shutil.rmtree(path, ignore_errors=True)


def load_latest(stage_dir: Path, module: torch.nn.Module, optimizer) -> dict | None:
    """Restore the last complete epoch; returns its state dict (None when there is none)."""
    found = _epoch_dirs(stage_dir)
    if not found:
        return None
    _, path = found[-1]
    module.load_state_dict(load_file(path / "model.safetensors"))
    if optimizer is not None and (path / "optimizer.pt").exists():
        optimizer.load_state_dict(load_torch(path / "optimizer.pt"))
    return json.loads((path / "state.json").read_text())


BEST = "best.safetensors"


def save_best(stage_dir: Path, module: torch.nn.Module) -> None:
    """The weights of the best epoch so far (model selection), written atomically."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    tmp = stage_dir / f".{BEST}.tmp{os.getpid()}"
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, tmp)
    os.replace(tmp, stage_dir / BEST)


def load_best(stage_dir: Path, module: torch.nn.Module) -> None:
    module.load_state_dict(load_file(stage_dir / BEST))


def mark_done(stage_dir: Path, summary: dict) -> None:
    tmp = stage_dir / f".{DONE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(summary))
    os.replace(tmp, stage_dir / DONE)


def read_done(stage_dir: Path) -> dict | None:
    path = stage_dir / DONE
    return json.loads(path.read_text()) if path.exists() else None


REUSED_FROM = "reused_from.json"


def reuse_rl_twin(cfg: dict, context) -> str | None:
    """Copy the ECR stage checkpoints of a matching ``crsbench run ecr-rl`` (same ECR
    configuration, task, data and seed) into this ``ecr`` run, so that running ``ecr`` after
    the main job only predicts. The RL policies (``checkpoints/rl``) are not copied: the
    stages there are ECR's own, trained before RL. The source is kept in ``reused_from.json``
    so that a resumed run still reports it."""
    import logging

    from crsbench.runs import twin_run

    mine = Path(context.checkpoint_dir)
    marker = mine / REUSED_FROM
    if (mine / "stage2_recommendation" / DONE).exists():
        return json.loads(marker.read_text())["run"] if marker.exists() else None
    wanted = json.loads(json.dumps(cfg))  # as config.json stores it (tuples are lists)

    def same_ecr(config: dict) -> bool:
        other = {k: v for k, v in (config.get("model_config") or {}).items() if k != "rl_stage"}
        return other == wanted and config.get("seed") == context.seed

    other = twin_run(context.run_dir, "ecr", "ecr-rl", same_ecr)
    if other is None or not (other / "checkpoints" / "responses" / "done").exists():
        return None
    mine.mkdir(parents=True, exist_ok=True)
    tmp = mine / f".{REUSED_FROM}.tmp{os.getpid()}"  # first: a copy cut short still names its source
    tmp.write_text(json.dumps({"run": str(other)}))
    os.replace(tmp, marker)
    shutil.copytree(other / "checkpoints", mine, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("rl", REUSED_FROM))
    logging.getLogger("crsbench").info("reusing the ECR checkpoints of %s", other)
    return str(other)
