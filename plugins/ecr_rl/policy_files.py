"""ECR-RL policy optimisation: the model's files and positions (saving, loading, fitting prompts)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from crsbench.errors import UserError

DONE_FILE = "done.json"


def fit_prompts(tokenizer, prompts, n_positions, max_new_tokens) -> tuple[list[str], int]:
    """Cut prompts from the left so that prompt + completion fits the model's positions."""
    if not n_positions:
        return list(prompts), 0
    room = n_positions - max_new_tokens
    if room < 1:
        raise UserError(f"rl: max_new_tokens {max_new_tokens} leaves no room for a prompt "
                        f"({n_positions} positions)")
    out, cut = [], 0
    for p in prompts:
        ids = tokenizer(p)["input_ids"]
        if len(ids) <= room:
            out.append(p)
            continue
        cut += 1
        keep = room
        while True:
            text = tokenizer.decode(ids[-keep:], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            if len(tokenizer(text)["input_ids"]) <= room or keep <= 1:
                break
            keep -= 1
        out.append(text)
    return out, cut


def model_positions(model) -> int | None:
    cfg = model.config
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def device_dtype(model):
    p = next(model.parameters())
    return p.device, p.dtype


def save_atomic(target: Path, model, tokenizer, marker: dict | None = None) -> None:
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if marker is not None:
        (tmp / DONE_FILE).write_text(json.dumps(marker, indent=2, default=str))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def load_policy(policy_dir: Path, device, dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(policy_dir), dtype=dtype)
    return model.to(device).eval()
