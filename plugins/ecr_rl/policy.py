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
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from crsbench.errors import DegenerateRunError, UserError

log = logging.getLogger("crsbench")

LOG_FILE = "rl_log.jsonl"
CURVES_FILE = "rl_curves.png"
POLICY_DIR = "policy"
REFERENCE_DIR = "reference"
DONE_FILE = "done.json"
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


# ----------------------------------------------------------------------------------- config
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


# ----------------------------------------------------------------------------------- reward
class RewardRecorder:
    """The TRL reward function (``total``) around ``reward_fn``; keeps the last step's stats."""

    def __init__(self, reward_fn: Callable, originals: Sequence[str]):
        self.reward_fn = reward_fn
        self.originals = list(originals)
        self.last: dict | None = None
        self.calls = 0

        def total(prompts, completions, completion_ids=None, rl_index=None, log_metric=None, **kwargs):
            return self._score(prompts, completions, completion_ids, rl_index, log_metric)

        self.func = total

    def _score(self, prompts, completions, completion_ids, rl_index, log_metric) -> list[float]:
        n = len(completions)
        if rl_index is None:                      # TRL passes dataset columns as kwargs
            raise RuntimeError("rl: TRL did not pass the 'rl_index' column to the reward function")
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        originals = [self.originals[int(i)] for i in rl_index]
        out = self.reward_fn(originals, texts)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("rl: reward_fn must return (total, components)")
        total = np.asarray(out[0], dtype=float).reshape(-1)
        comps = {str(k): np.asarray(v, dtype=float).reshape(-1) for k, v in (out[1] or {}).items()}
        if len(total) != n or any(len(v) != n for v in comps.values()):
            raise ValueError(f"rl: reward_fn returned {len(total)} totals / "
                             f"{ {k: len(v) for k, v in comps.items()} } component values for {n} completions")
        bad = int((~np.isfinite(total)).sum())
        if bad:
            raise DegenerateRunError(f"reward_fn returned {bad} non-finite totals of {n} — fix the reward "
                                     f"before training on it")
        groups: dict[int, list[float]] = {}
        for i, r in zip(rl_index, total):
            groups.setdefault(int(i), []).append(float(r))
        group_std = float(np.mean([np.std(g) for g in groups.values()]))
        group_of = np.array([int(i) for i in rl_index])

        def within(values):  # mean over prompts of the std among that prompt's completions
            return float(np.mean([np.nanstd(values[group_of == g]) for g in np.unique(group_of)]))

        lengths = [len(ids) for ids in completion_ids] if completion_ids is not None else None
        self.calls += 1
        self.last = {
            "reward_mean": float(total.mean()), "reward_std": float(total.std()),
            "reward_group_std": group_std,
            "components": {k: {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v)), "group_std": within(v)}
                           for k, v in comps.items()},
            "distinct_completions": len(set(texts)), "n_completions": n,
            "completion_length_ids": float(np.mean(lengths)) if lengths else None,
            "example": texts[0],
        }
        if log_metric is not None:                # also visible in TRL's own logs
            log_metric("reward_group_std", group_std)
            log_metric("completions/distinct", float(len(set(texts))))
            for k, v in self.last["components"].items():
                log_metric(f"rewards/{k}/mean", v["mean"])
                log_metric(f"rewards/{k}/std", v["std"])
                log_metric(f"rewards/{k}/group_std", v["group_std"])
        return total.tolist()


# ----------------------------------------------------------------------------------- guards
def _callback_base():
    from transformers import TrainerCallback
    return TrainerCallback


class RLGuard(_callback_base()):
    """Writes one log line per step and stops degenerate runs (``control.should_training_stop``).

    ``reason`` is None, or the message naming the numbers that tripped a guard.
    """

    def __init__(self, recorder: RewardRecorder, cfg: dict, log_path: Path):
        self.recorder, self.cfg, self.log_path = recorder, cfg, Path(log_path)
        self.records: list[dict] = []
        self.reason: str | None = None
        self._flat = 0
        self._collapsed = 0
        self._t0: float | None = None
        self._seconds: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is not None:
            self._seconds = time.perf_counter() - self._t0

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "reward" not in logs or "train_runtime" in logs:   # the end-of-training summary
            return control
        rec = self.recorder.last or {}
        length = logs.get("completions/mean_length", rec.get("completion_length_ids"))
        record = {
            "step": int(state.global_step),
            "reward_mean": rec.get("reward_mean", logs.get("reward")),
            "reward_std": rec.get("reward_std", logs.get("reward_std")),
            "reward_group_std": rec.get("reward_group_std"),
            "components": rec.get("components", {}),
            "kl": _num(logs.get("kl")),
            "loss": _num(logs.get("loss")),
            "completion_length": _num(length),
            "distinct_completions": rec.get("distinct_completions"),
            "n_completions": rec.get("n_completions"),
            "entropy": _num(logs.get("entropy")),
            "grad_norm": _num(logs.get("grad_norm")),
            "learning_rate": _num(logs.get("learning_rate")),
            "seconds": self._seconds,
            "example": rec.get("example"),
        }
        self.records.append(record)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        reason = self.check(record)
        if reason and self.reason is None:
            self.reason = reason
            log.warning("rl: stopping at step %d: %s", record["step"], reason)
            control.should_training_stop = True
        return control

    def check(self, r: dict) -> str | None:
        c, step = self.cfg, r["step"]
        for key in ("loss", "kl"):
            v = r[key]
            if v is not None and not math.isfinite(v):
                return f"{key} is {v} at step {step} — training diverged"
        if c["max_kl"] is not None and r["kl"] is not None and r["kl"] > float(c["max_kl"]):
            return (f"KL to the reference {r['kl']:.4g} > max_kl {float(c['max_kl']):.4g} at step {step} "
                    f"— the policy drifted too far from the ECR generator (lower lr or raise beta)")
        std = r["reward_group_std"] if r["reward_group_std"] is not None else r["reward_std"]
        self._flat = self._flat + 1 if std is not None and std < c["min_reward_std"] else 0
        if self._flat >= c["patience"]:
            return (f"reward std < {c['min_reward_std']:.0e} for {self._flat} consecutive steps "
                    f"(last: within-prompt std {std:.4f}, batch std {r['reward_std']:.4f}, "
                    f"mean {r['reward_mean']:.4f}) — the reward cannot rank the samples")
        self._collapsed = self._collapsed + 1 if r["distinct_completions"] == 1 else 0
        if self._collapsed >= c["collapse_patience"]:
            return (f"all {r['n_completions']} completions identical for {self._collapsed} consecutive steps "
                    f"(last: {r['example']!r}) — the policy collapsed")
        return None


def _num(v):
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _quiet_progress_callback():
    """HF's progress bar without the dict it prints at every log event."""
    from transformers.trainer_callback import ProgressCallback

    class QuietProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and logs and "reward" in logs:
                self.training_bar.set_postfix(reward=f"{logs['reward']:.3f}", kl=f"{logs.get('kl') or 0:.3g}",
                                              refresh=False)

    return QuietProgress


# ----------------------------------------------------------------------------------- main
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
    device, dtype = _device_dtype(model)

    done = policy_dir / DONE_FILE
    if done.exists():
        summary = json.loads(done.read_text())
        if summary.get("fingerprint") != fingerprint:
            raise UserError(f"rl: {policy_dir} was trained with other options or prompts; delete it to retrain")
        log.info("rl: reusing the finished policy in %s", policy_dir)
        return dict(summary, model=_load_policy(policy_dir, device, dtype), resumed=True)

    # a fresh run: the reference on disk, the policy and reference loaded by TRL from it
    ref_dir = out_dir / REFERENCE_DIR
    _save_atomic(ref_dir, model, tokenizer)
    texts, n_cut = _fit_prompts(tokenizer, prompts, _n_positions(model), c["max_new_tokens"])
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
            trainer = _make_trainer(c, str(ref_dir), tokenizer, recorder.func, dataset, work_dir, guard, progress)
            trainer.train()
    finally:
        _plot(guard.records, curves_path, c["algorithm"])
        shutil.rmtree(work_dir, ignore_errors=True)
    elapsed = time.perf_counter() - t0
    if recorder.calls == 0 or not guard.records:
        raise DegenerateRunError(f"rl: TRL ran no step (reward calls: {recorder.calls}); see the trainer output")

    summary = _summary(guard.records, c, log_path, curves_path, policy_dir, fingerprint, elapsed)
    summary["stopped"] = guard.reason
    policy = trainer.accelerator.unwrap_model(trainer.model)
    if guard.reason:
        (out_dir / STOPPED_FILE).write_text(json.dumps(dict(summary, reason=guard.reason), indent=2))
        if c["on_guard"] == "raise":
            raise DegenerateRunError(f"RL stopped at step {summary['steps']}: {guard.reason} (log: {log_path})")
        policy.to(device=device, dtype=dtype).eval()
        return dict(summary, model=policy, resumed=False)
    _save_atomic(policy_dir, policy, tokenizer, marker=summary)
    del trainer, policy
    return dict(summary, model=_load_policy(policy_dir, device, dtype), resumed=False)


def _make_trainer(c, model_path, tokenizer, reward_func, dataset, work_dir, guard, progress):
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    proc = copy.deepcopy(tokenizer)
    proc.padding_side = "left"
    proc.truncation_side = "left"
    common = dict(
        output_dir=str(work_dir), max_steps=c["steps"], learning_rate=float(c["lr"]),
        lr_scheduler_type=c["lr_scheduler"], warmup_steps=0, max_grad_norm=float(c["max_grad_norm"]),
        per_device_train_batch_size=c["batch_size"] * c["num_generations"], gradient_accumulation_steps=1,
        num_generations=c["num_generations"], max_completion_length=c["max_new_tokens"],
        temperature=float(c["temperature"]), top_p=float(c["top_p"]), beta=float(c["beta"]),
        num_iterations=1, seed=int(c["seed"]), bf16=False, fp16=False, use_vllm=False,
        disable_dropout=True, report_to="none", logging_steps=1,
        save_strategy="no", log_completions=False, remove_unused_columns=False,
        disable_tqdm=not progress, dataloader_pin_memory=False,
    )
    if c["algorithm"] == "grpo":
        from trl import GRPOConfig as config_cls, GRPOTrainer as cls
        if c["loss_type"]:
            common["loss_type"] = c["loss_type"]
        if c["scale_rewards"] is not None:
            common["scale_rewards"] = c["scale_rewards"]
    else:
        from trl import RLOOConfig as config_cls, RLOOTrainer as cls
    # no activation (gradient) checkpointing: TRL turns it on by default; transformers 5 renamed it
    fields = {f.name for f in dataclasses.fields(config_cls)}
    common["activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"] = False
    args = config_cls(**common)
    trainer = cls(model=model_path, reward_funcs=[reward_func], args=args, train_dataset=dataset,
                  processing_class=proc, callbacks=[guard])
    if getattr(trainer, "ref_model", None) is None:
        raise RuntimeError(f"rl: {cls.__name__} built no reference model (beta={c['beta']})")
    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_quiet_progress_callback()())
    return trainer


# ----------------------------------------------------------------------------------- helpers
def _summary(records, c, log_path, curves_path, policy_dir, fingerprint, elapsed) -> dict:
    k = min(5, len(records))

    def window(rs):
        keys = ("reward_mean", "reward_std", "reward_group_std", "kl", "loss", "completion_length",
                "distinct_completions")
        out = {key: _mean([r[key] for r in rs]) for key in keys}
        names = sorted({n for r in rs for n in r["components"]})
        out["components"] = {n: _mean([r["components"].get(n, {}).get("mean") for r in rs]) for n in names}
        return out

    secs = [r["seconds"] for r in records if r["seconds"] is not None]
    return {
        "algorithm": c["algorithm"], "steps": len(records), "log": str(log_path), "curves": str(curves_path),
        "policy_dir": str(policy_dir), "first": window(records[:k]), "final": window(records[-k:]),
        "seconds_per_step": float(np.median(secs)) if secs else None, "seconds": elapsed,
        "config": c, "fingerprint": fingerprint, "stopped": None,
    }


def _mean(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def _fit_prompts(tokenizer, prompts, n_positions, max_new_tokens) -> tuple[list[str], int]:
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


def _n_positions(model) -> int | None:
    cfg = model.config
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _device_dtype(model):
    p = next(model.parameters())
    return p.device, p.dtype


def _save_atomic(target: Path, model, tokenizer, marker: dict | None = None) -> None:
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if marker is not None:
        (tmp / DONE_FILE).write_text(json.dumps(marker, indent=2, default=str))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def _load_policy(policy_dir: Path, device, dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(policy_dir), dtype=dtype)
    return model.to(device).eval()


def _plot(records: list[dict], path: Path, algorithm: str) -> None:
    if not records:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    panels = [("reward (total)", "reward_mean"), ("KL to reference", "kl"), ("loss", "loss"),
              ("completion length (tokens)", "completion_length")]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), dpi=100)
    for ax, (title, key) in zip(axes.flat, panels):
        ys = [np.nan if r[key] is None else r[key] for r in records]
        ax.plot(steps, ys, marker="." if len(steps) < 50 else None, label=key)
        if key == "reward_mean":
            names = sorted({n for r in records for n in r["components"]})
            for n in names:
                ax.plot(steps, [r["components"].get(n, {}).get("mean", np.nan) for r in records],
                        alpha=0.6, lw=1, label=n)
            ax.legend(fontsize=7, loc="best")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"ECR-RL policy optimisation ({algorithm.upper()})", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
