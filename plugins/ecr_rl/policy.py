"""Policy optimisation for ECR-RL: TRL GRPO (or RLOO) on the stage-3 generator, KL to ECR's.

``rl_finetune(model, tokenizer, prompts, reward_fn, cfg, out_dir)`` trains a causal LM on
plain-text prompts with TRL's ``GRPOTrainer`` (``cfg["algorithm"] = "grpo"``, default) or
``RLOOTrainer`` (``"rloo"``). Nothing here implements the algorithms; this module only wires
TRL to the harness: configuration, the reward wrapper, per-step logging, guards, saving.

- Reference. The starting model is saved to ``out_dir/reference`` (safetensors) and TRL loads
  both the policy and the frozen reference from there, so the reference is the generator
  exactly as it was before RL. ``beta`` (the KL coefficient) must be > 0, otherwise TRL
  would not build a reference at all. GRPO adds ``beta * KL`` (k3 estimator, per token) to
  the loss; RLOO subtracts ``beta * KL`` (summed log-ratio per sequence) from the reward.
- Reward. ``reward_fn(prompts, completions) -> (total, components)`` is called once per
  step on all ``batch_size * num_generations`` completions. It is handed to TRL as one reward
  function named ``total`` (weight 1); the components are logged, not optimised separately.
  ``prompts`` are the caller's original strings even where a prompt had to be cut from the
  left to fit the model's positions.
- Log. One JSON line per optimizer step in ``out_dir/rl_log.jsonl`` (keys in
  :data:`LOG_KEYS`) and ``out_dir/rl_curves.png`` (reward, KL, loss, completion length).
- Guards (:class:`RLGuard`, a ``TrainerCallback``): a flat reward (within-prompt std of the
  total below ``min_reward_std`` for ``patience`` steps: no sample can be ranked above its
  siblings, so every advantage is 0), a KL above ``max_kl``, a non-finite loss or KL, and a
  collapsed policy (one distinct completion in the whole batch for ``collapse_patience``
  steps). A guard stops training; the logs and plot are written and then
  :class:`~crsbench.errors.DegenerateRunError` is raised with the numbers
  (``on_guard = "return"`` returns with ``"stopped"`` set instead).
- Output. ``out_dir/policy`` (``save_pretrained``: safetensors + tokenizer) with
  ``done.json``; a later call with the same configuration and prompts loads it and skips
  training. Runs on CPU (no bf16/fp16, no vLLM, ``report_to="none"``).

The TRL wiring is split by job: policy_reward.py (the reward wrapper), policy_guard.py (log
and guards), policy_trainer.py (the trainer), policy_files.py (saving, loading, prompt
fitting) and policy_summary.py (summary and curves); this module holds the options and
``rl_finetune``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from crsbench.errors import DegenerateRunError, UserError
from crsbench_plugins.ecr_rl.policy_files import (DONE_FILE, device_dtype, fit_prompts, load_policy,
                                                   model_positions, save_atomic)
from crsbench_plugins.ecr_rl.policy_guard import RLGuard
from crsbench_plugins.ecr_rl.policy_reward import RewardRecorder
from crsbench_plugins.ecr_rl.policy_summary import plot_curves, run_summary
from crsbench_plugins.ecr_rl.policy_trainer import make_trainer

log = logging.getLogger("crsbench")

LOG_FILE = "rl_log.jsonl"
CURVES_FILE = "rl_curves.png"
POLICY_DIR = "policy"
REFERENCE_DIR = "reference"
STOPPED_FILE = "stopped.json"

DEFAULTS: dict[str, Any] = {
    "algorithm": "grpo",        # "grpo" (TRL GRPOTrainer) or "rloo" (TRL RLOOTrainer)
    "steps": 40,                # optimizer steps (TRL max_steps); one generation round each
    "batch_size": 8,            # prompts per step
    "num_generations": 4,       # completions per prompt (the group)
    "lr": 2e-5,
    "lr_scheduler": "constant",
    "beta": 0.05,               # KL coefficient towards the reference; must be > 0
    "max_new_tokens": 32,       # TRL max_completion_length
    "temperature": 1.0,
    "top_p": 1.0,
    "loss_type": None,          # GRPO only; None: TRL's default
    "scale_rewards": None,      # GRPO only: "group", "batch" or "none"; None: TRL's default ("group")
    "max_grad_norm": 1.0,
    "seed": 42,
    # guards
    "min_reward_std": 1e-4,     # within-prompt std of the total reward ...
    "patience": 5,              # ... below min_reward_std for this many consecutive steps stops the run
    "max_kl": None,             # KL to the reference above this stops the run (None: no bound)
    "collapse_patience": 5,     # steps in a row with one distinct completion in the batch
    "on_guard": "raise",        # "raise" DegenerateRunError, or "return" with "stopped" set
}
# keys the ECR-RL pipeline passes along that are not ours
_PASSTHROUGH = {"n_prompts"}

# every line of rl_log.jsonl has these keys (``components`` maps name -> {"mean", "std", "group_std"})
LOG_KEYS = ("step", "reward_mean", "reward_std", "reward_group_std", "components", "kl", "loss",
            "completion_length", "distinct_completions", "n_completions", "entropy", "grad_norm",
            "learning_rate", "seconds")


def resolve_config(cfg: dict) -> dict:
    unknown = set(cfg) - set(DEFAULTS) - _PASSTHROUGH
    if unknown:
        raise UserError(f"rl: unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    c = {**DEFAULTS, **{k: v for k, v in cfg.items() if k in DEFAULTS}}
    c["algorithm"] = str(c["algorithm"]).lower()
    if c["algorithm"] not in ("grpo", "rloo"):
        raise UserError(f"rl: algorithm must be 'grpo' or 'rloo', got {c['algorithm']!r}")
    for key in ("steps", "batch_size", "max_new_tokens", "patience", "collapse_patience"):
        if int(c[key]) < 1:
            raise UserError(f"rl: {key} must be >= 1, got {c[key]}")
        c[key] = int(c[key])
    c["num_generations"] = int(c["num_generations"])
    if c["num_generations"] < 2:
        raise UserError(f"rl: num_generations must be >= 2 (the group baseline needs siblings), "
                        f"got {c['num_generations']}")
    if not float(c["beta"]) > 0:
        raise UserError(f"rl: beta (the KL coefficient) must be > 0 so that the policy is held to the "
                        f"reference generator, got {c['beta']}")
    if not float(c["temperature"]) > 0:
        raise UserError(f"rl: temperature must be > 0, got {c['temperature']}")
    if not float(c["lr"]) > 0:
        raise UserError(f"rl: lr must be > 0, got {c['lr']}")
    if c["on_guard"] not in ("raise", "return"):
        raise UserError(f"rl: on_guard must be 'raise' or 'return', got {c['on_guard']!r}")
    if c["max_kl"] is not None and not float(c["max_kl"]) > 0:
        raise UserError(f"rl: max_kl must be > 0 or null, got {c['max_kl']}")
    if c["scale_rewards"] not in (None, "group", "batch", "none"):
        raise UserError(f"rl: scale_rewards must be 'group', 'batch', 'none' or null, got {c['scale_rewards']!r}")
    c["min_reward_std"] = float(c["min_reward_std"] or 0.0)
    return c


def _fingerprint(c: dict, prompts: Sequence[str]) -> str:
    h = hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode())
    for p in prompts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def rl_finetune(model, tokenizer, prompts: list[str], reward_fn: Callable, cfg: dict, out_dir: Path,
                progress: bool = True) -> dict:
    """Train ``model`` with TRL against ``reward_fn``, KL-penalised towards its starting weights.

    Returns ``{"steps", "log", "curves", "final", "first", "stopped", "seconds_per_step",
    "algorithm", "policy_dir", "model", "resumed"}``; ``"model"`` is the trained policy (loaded
    from ``out_dir/policy``, on ``model``'s device). Raises ``DegenerateRunError`` when a guard
    stops the run (after writing the logs), ``UserError`` for bad options.
    """
    c = resolve_config(dict(cfg))
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise UserError("rl: no prompts")
    if any(not p for p in prompts):
        raise UserError("rl: empty prompt(s); every prompt needs at least one token")
    if c["batch_size"] > len(prompts):
        raise UserError(f"rl: batch_size {c['batch_size']} > number of prompts {len(prompts)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path, curves_path = out_dir / LOG_FILE, out_dir / CURVES_FILE
    policy_dir = out_dir / POLICY_DIR
    fingerprint = _fingerprint(c, prompts)
    device, dtype = device_dtype(model)

    done = policy_dir / DONE_FILE
    if done.exists():
        summary = json.loads(done.read_text())
        if summary.get("fingerprint") != fingerprint:
            raise UserError(f"rl: {policy_dir} was trained with other options or prompts; delete it to retrain")
        log.info("rl: reusing the finished policy in %s", policy_dir)
        return dict(summary, model=load_policy(policy_dir, device, dtype), resumed=True)

    # a fresh run: the reference on disk, the policy and reference loaded by TRL from it
    ref_dir = out_dir / REFERENCE_DIR
    save_atomic(ref_dir, model, tokenizer)
    texts, n_cut = fit_prompts(tokenizer, prompts, model_positions(model), c["max_new_tokens"])
    if n_cut:
        log.warning("rl: %d of %d prompts cut from the left to fit the model's positions", n_cut, len(prompts))
    for p in (log_path, curves_path, out_dir / STOPPED_FILE):
        p.unlink(missing_ok=True)

    from datasets import Dataset

    recorder = RewardRecorder(reward_fn, prompts)
    guard = RLGuard(recorder, c, log_path)
    dataset = Dataset.from_dict({"prompt": texts, "rl_index": list(range(len(texts)))})
    work_dir = out_dir / "trl"
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # TRL 1.x still calls transformers' deprecated is_gradient_checkpointing; not ours to fix
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            trainer = make_trainer(c, str(ref_dir), tokenizer, recorder.func, dataset, work_dir, guard, progress)
            trainer.train()
    finally:
        plot_curves(guard.records, curves_path, c["algorithm"])
        shutil.rmtree(work_dir, ignore_errors=True)
    elapsed = time.perf_counter() - t0
    if recorder.calls == 0 or not guard.records:
        raise DegenerateRunError(f"rl: TRL ran no step (reward calls: {recorder.calls}); see the trainer output")

    summary = run_summary(guard.records, c, log_path, curves_path, policy_dir, fingerprint, elapsed)
    summary["stopped"] = guard.reason
    policy = trainer.accelerator.unwrap_model(trainer.model)
    if guard.reason:
        (out_dir / STOPPED_FILE).write_text(json.dumps(dict(summary, reason=guard.reason), indent=2))
        if c["on_guard"] == "raise":
            raise DegenerateRunError(f"RL stopped at step {summary['steps']}: {guard.reason} (log: {log_path})")
        policy.to(device=device, dtype=dtype).eval()
        return dict(summary, model=policy, resumed=False)
    save_atomic(policy_dir, policy, tokenizer, marker=summary)
    del trainer, policy
    return dict(summary, model=load_policy(policy_dir, device, dtype), resumed=False)
