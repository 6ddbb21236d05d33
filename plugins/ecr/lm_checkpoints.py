"""Per-epoch training checkpoints of :func:`crsbench_plugins.ecr.lm_train.train_lm`: weights,
optimizer and scheduler state, every process's RNG state, written atomically."""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from crsbench_plugins.ecr.lm_common import device_of, unwrap


def save_checkpoint(acc, stage_dir: Path, state: dict, model, prefix_module, optimizer, scheduler,
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
        if prefix_module is not None and has_params(prefix_module):
            save_module(prefix_module, tmp / "prefix.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   tmp / "optimizer.pt")
        write_json(tmp / "trainer_state.json", state)
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


def latest_checkpoint(stage_dir: Path, max_epoch: int) -> Path | None:
    found = [(e, p) for e, p in _epoch_dirs(stage_dir) if e <= max_epoch] if stage_dir.exists() else []
    return max(found)[1] if found else None


def load_weights(ckpt: Path, model, prefix_module) -> None:
    from safetensors.torch import load_model

    load_model(unwrap(model), str(ckpt / "model.safetensors"), device=str(device_of(model)))
    if prefix_module is not None and (ckpt / "prefix.safetensors").exists():
        load_model(unwrap(prefix_module), str(ckpt / "prefix.safetensors"),
                   device=str(device_of(prefix_module, device_of(model))))


def save_module(module, path: Path) -> None:
    from safetensors.torch import save_model
    save_model(unwrap(module), str(path))


def has_params(module) -> bool:
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


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])

def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def write_json(path: Path, obj) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)
