"""The frozen causal LM that ECR's and UniCRS's prompts go into.

- a hub id or local path (the paper profile: ``microsoft/DialoGPT-small``): loaded as it is,
  ``<movie>``/``<pad>`` added (transformers' mean resizing), then frozen;
- ``scratch-gpt2`` (the CPU profile): no pretrained dialogue LM is available offline, so a
  small GPT-2 with a BPE tokenizer trained on the task's text is first trained as a dialogue
  LM on the training split (seeker turns as written, recommender turns with their movies
  masked as ``<movie>``), then frozen. This stands in for DialoGPT's Reddit pre-training;
  the prompt stages after it are the same code at every scale.
"""
from __future__ import annotations

from pathlib import Path


def dialogue_examples(train: list[dict], eos: str, turns: int | None) -> list[dict]:
    """One example per turn: the turns before it -> the turn (as UniCRS writes contexts)."""
    from crsbench_plugins.ecr.inputs import lm_context

    out, seen = [], set()
    for s in train:
        prompt = lm_context(s, turns, eos)
        out.append({"prompt": prompt, "target": f"System: {s['response_template']}"})
        if s["context"] and s["context_roles"][-1] == "seeker":
            earlier = dict(s, context=s["context"][:-1], context_roles=s["context_roles"][:-1])
            key = (s["dialog_id"], len(earlier["context"]))
            if key not in seen:
                seen.add(key)
                out.append({"prompt": lm_context(earlier, turns, eos), "target": f"User: {s['context'][-1]}"})
    return out


def frozen_lm(cfg: dict, train: list[dict], stage_dir: Path, seed: int, device, progress: bool):
    """``(lm, tokenizer, summary)``; the LM is on ``device`` and trained (if at all) once."""
    from crsbench_plugins.ecr.lm_build import build_backbone
    from crsbench_plugins.ecr.lm_train import train_lm
    from crsbench_plugins.ecr.templates import seeded_subset, shared_lm

    lcfg = dict(cfg["lm"], seed=seed, local_files_only=not cfg.get("allow_downloads", False))
    stage_dir = Path(stage_dir)
    if lcfg["backbone"] != "scratch-gpt2":
        model, tokenizer = build_backbone(lcfg)
        model.to(device)
        return model, tokenizer, {"backbone": lcfg["backbone"], "trained": False,
                                  "parameters": sum(p.numel() for p in model.parameters())}
    tokenizer = shared_lm(cfg, train, stage_dir.parent)
    model, tokenizer = build_backbone(lcfg, tokenizer)
    pcfg = dict(lcfg["pretrain"], seed=seed, cpu=str(device) == "cpu",
                mixed_precision=cfg.get("mixed_precision", "no"))
    examples = seeded_subset(dialogue_examples(train, tokenizer.eos_token, cfg["context_turns"]),
                             pcfg.get("max_train"), seed)
    summary = train_lm(model, tokenizer, examples, pcfg, stage_dir, progress=progress)
    model.to(device)
    return model, tokenizer, {"backbone": "scratch-gpt2", "trained": True, "n_examples": len(examples),
                              "parameters": sum(p.numel() for p in model.parameters()),
                              **{k: v for k, v in summary.items() if k not in ("losses", "model_dir")}}
