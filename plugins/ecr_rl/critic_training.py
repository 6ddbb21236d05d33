"""Training the critic: ``train_critic`` fits it on judge-scored (context, response) pairs.

The scored pairs are split **by context** (``groups``: the replies of one context stay on one
side) with a seeded permutation into training (the MLP head keeps some contexts for early
stopping; the ridge penalty is chosen by grouped cross-validation) and a held-out part
(default 20% of the contexts) that only the report sees. The report holds, per head and for
the mean of the heads, held-out Spearman across contexts and R^2, and the within-context
pairwise accuracy, each with a bootstrap CI over held-out contexts (critic_stats.py).
Files: those of the critic (critic_model.py) and ``report.json``.
"""
from __future__ import annotations

import copy
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from crsbench.errors import DegenerateRunError, UserError
from crsbench_plugins.ecr_rl.critic_features import context_tail, default_encoder, encode_texts, pair_features
from crsbench_plugins.ecr_rl.critic_model import HEADS, Critic
from crsbench_plugins.ecr_rl.critic_ridge import fit_ridge
from crsbench_plugins.ecr_rl.critic_stats import pairwise_accuracy, r2, spearman, spearman_ci

REPORT_FILE = "report.json"

DEFAULTS: dict[str, Any] = {
    "metrics": None,          # None: the scores' metrics, else the registered rubric's (judge_metrics())
    "hidden": 64,             # hidden units per head
    "context_turns": 2,       # context turns before the response that the critic sees
    "score_min": 0.0,         # judge scale, mapped to [0, 1]
    "score_max": 9.0,
    "heldout": 0.2,           # held-out share, never trained on
    "val": 0.1,               # share of the training part used for early stopping
    "epochs": 300,
    "patience": 30,           # epochs without validation improvement before stopping
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "dropout": 0.1,
    "batch_size": 256,
    "encode_batch_size": 64,
    "cache_embeddings": True,  # training texts through the ECR EmbeddingCache (encoders with a cache_id)
    "min_pairs": 10,
    "head": "mlp",            # mlp | ridge
    "surface_features": False,  # append response length/repetition/punctuation features
    "ridge_alphas": [0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0],
    "ridge_folds": 5,
}


def judge_metrics(scores=None) -> list[str]:
    """The metrics of per-pair ``{metric: score}`` dicts (in order of first appearance), else
    those of the registered judge rubric (when exactly one is registered)."""
    from crsbench.rubric import resolve_rubric

    if isinstance(scores, Sequence) and scores and all(isinstance(s, Mapping) for s in scores if s is not None):
        found = list(dict.fromkeys(m for s in scores if s is not None for m in s))
        if found:
            return found
    return list(resolve_rubric(None).metrics)


def _split_pairs(pairs) -> tuple[list, list[str]]:
    contexts, responses = [], []
    for pair in pairs:
        if isinstance(pair, Mapping):
            contexts.append(pair.get("context"))
            responses.append(str(pair.get("response") or ""))
        else:
            context, response = pair
            contexts.append(context)
            responses.append("" if response is None else str(response))
    return contexts, responses


def _score_matrix(scores, metrics: list[str], n: int) -> np.ndarray:
    """(n, M) float array with NaN where a score is missing."""
    if isinstance(scores, Mapping):
        missing = [m for m in metrics if m not in scores]
        if missing:
            raise UserError(f"critic scores lack metric(s) {', '.join(missing)}")
        table = np.column_stack([np.asarray([np.nan if v is None else v for v in scores[m]], dtype=float)
                                 for m in metrics])
    elif len(scores) and isinstance(scores[0], Mapping):
        table = np.array([[np.nan if row.get(m) is None else float(row.get(m)) for m in metrics]
                          for row in scores], dtype=float)
    else:
        table = np.asarray(scores, dtype=float)
        if table.ndim == 1 and len(metrics) == 1:
            table = table[:, None]
    if table.shape != (n, len(metrics)):
        raise UserError(f"critic scores have shape {table.shape}, expected ({n}, {len(metrics)}) "
                        f"for {n} pairs and metrics {metrics}")
    return table


class CriticReport(dict):
    """The training report (a plain JSON-ready dict) with the trained critic as ``.critic``."""

    def __init__(self, report: Mapping[str, Any], critic: Critic):
        super().__init__(report)
        self.critic = critic


def _resolve_cfg(cfg: Mapping[str, Any] | None) -> dict:
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise UserError(f"critic config: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(DEFAULTS))})")
    out = {**DEFAULTS, **cfg}
    if not 0 < out["heldout"] < 1:
        raise UserError(f"critic config: heldout must be in (0, 1), got {out['heldout']}")
    if not 0 <= out["val"] < 1:
        raise UserError(f"critic config: val must be in [0, 1), got {out['val']}")
    if out["head"] not in HEADS:
        raise UserError(f"critic config: head must be one of {', '.join(HEADS)}, got {out['head']!r}")
    return out


def _group_index(groups, contexts) -> np.ndarray:
    """One integer per row: its context group (``groups``, else the context itself)."""
    keys = list(groups) if groups is not None else [json.dumps(c, sort_keys=True, default=str) for c in contexts]
    if len(keys) != len(contexts):
        raise UserError(f"critic: {len(keys)} group ids for {len(contexts)} pairs")
    index: dict = {}
    return np.array([index.setdefault(k, len(index)) for k in keys], dtype=int)


def train_critic(pairs: Sequence, scores, cfg: Mapping[str, Any] | None, out_dir: str | os.PathLike | None,
                 seed: int, encoder=None, groups: Sequence | None = None, kinds: Sequence[str] | None = None) -> dict:
    """Train a critic on judge-scored (context, response) pairs, save it, return the report.

    pairs: ``(context, response)`` tuples (context: list of turns or a string) or dicts with
    those keys. scores: per-pair ``{metric: score}`` dicts, ``{metric: [scores]}``, or an
    (N, M) array in ``cfg["metrics"]`` order; None/NaN marks a missing score. ``out_dir``:
    where ``critic.safetensors``, ``critic.json`` and ``report.json`` go (None: not saved).
    groups: one context id per pair (default: the context itself); the held-out split, the
    early-stopping slice and the ridge folds never separate the replies of one context.
    kinds: optional label per pair (e.g. ``ground_truth``/``ecr_sample``) for the report.
    Returns the report, a JSON-ready dict whose ``.critic`` attribute is the trained Critic.
    """
    import torch

    cfg = _resolve_cfg(cfg)
    metrics = list(cfg["metrics"] or judge_metrics(scores))
    contexts, responses = _split_pairs(pairs)
    n = len(responses)
    raw = _score_matrix(scores, metrics, n)
    if n < cfg["min_pairs"]:
        raise DegenerateRunError(f"critic: {n} scored pairs, need at least {cfg['min_pairs']} to train and validate")
    span = cfg["score_max"] - cfg["score_min"]
    targets = np.clip((raw - cfg["score_min"]) / span, 0.0, 1.0)  # NaN stays NaN

    # seeded split by context: held-out | validation | train (a context's replies stay together)
    group = _group_index(groups, contexts)
    n_groups = int(group.max()) + 1 if n else 0
    if n_groups < 3:
        raise DegenerateRunError(f"critic: the {n} scored pairs come from {n_groups} context(s); need at least 3 "
                                 "to train on some and validate on others")
    order = np.random.default_rng(seed).permutation(n_groups)
    n_held_groups = min(n_groups - 2, max(1, int(round(cfg["heldout"] * n_groups))))
    held_groups, rest_groups = order[:n_held_groups], order[n_held_groups:]
    n_val_groups = int(round(cfg["val"] * len(rest_groups))) if len(rest_groups) >= 10 else 0
    val_groups, train_groups = rest_groups[:n_val_groups], rest_groups[n_val_groups:]

    def rows_of(chosen):
        return np.flatnonzero(np.isin(group, chosen))

    held, rest = rows_of(held_groups), rows_of(rest_groups)
    val, train = rows_of(val_groups), rows_of(train_groups)
    n_held, n_val = len(held), len(val)

    enc = encoder if encoder is not None else default_encoder()
    tails = [context_tail(c, cfg["context_turns"]) for c in contexts]
    unique = list(dict.fromkeys(tails + responses))
    emb = encode_texts(enc, unique, batch_size=cfg["encode_batch_size"], cache=cfg["cache_embeddings"])
    index = {t: i for i, t in enumerate(unique)}
    c = emb[[index[t] for t in tails]]
    r = emb[[index[t] for t in responses]]
    features_all = pair_features(c, r, responses, cfg["surface_features"])
    if cfg["head"] == "ridge":  # closed form, penalty by cross-validation: no early-stopping slice needed
        train, val, n_val = rest, rest[:0], 0

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = Critic(metrics, emb.shape[1], hidden=cfg["hidden"], dropout=cfg["dropout"],
                        context_turns=cfg["context_turns"], score_min=cfg["score_min"],
                        score_max=cfg["score_max"], encoder=enc, head=cfg["head"],
                        surface=cfg["surface_features"])
        train_idx = torch.as_tensor(train)
        critic.feat_mean = features_all[train_idx].mean(0)
        std = features_all[train_idx].std(0, unbiased=False)
        # a feature constant in training is centred, not scaled (1e-6 would blow up new values)
        critic.feat_std = torch.where(std < 1e-6, torch.ones_like(std), std)

        y = torch.as_tensor(targets, dtype=torch.float32)
        mask = ~torch.isnan(y)
        y = torch.nan_to_num(y, nan=0.0)
        optimiser = torch.optim.AdamW(critic.heads.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        gen = torch.Generator().manual_seed(seed)

        def masked_mse(pred, idx):
            m = mask[idx].float()
            return ((pred - y[idx]) ** 2 * m).sum() / m.sum().clamp(min=1.0)

        best = (math.inf, None, 0)
        epochs_run = 0
        ridge = {}
        if cfg["head"] == "ridge":
            x = ((features_all[train_idx] - critic.feat_mean) / critic.feat_std).double().numpy()
            for k, m in enumerate(metrics):
                rows = ~np.isnan(targets[train, k])
                w, b, alpha, cv = fit_ridge(x[rows], targets[train, k][rows], cfg["ridge_alphas"],
                                            cfg["ridge_folds"], seed, group[train][rows])
                with torch.no_grad():
                    critic.heads[m].weight.copy_(torch.as_tensor(w, dtype=torch.float32)[None])
                    critic.heads[m].bias.fill_(b)
                ridge[m] = {"alpha": alpha, "cv_mse": cv}
        for epoch in range(cfg["epochs"] if cfg["head"] == "mlp" else 0):
            critic.heads.train()
            order = train_idx[torch.randperm(len(train_idx), generator=gen)]
            for start in range(0, len(order), cfg["batch_size"]):
                idx = order[start:start + cfg["batch_size"]]
                loss = masked_mse(critic.forward(features_all[idx]), idx)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            epochs_run = epoch + 1
            if n_val:
                critic.heads.eval()
                with torch.no_grad():
                    vidx = torch.as_tensor(val)
                    vloss = float(masked_mse(critic.forward(features_all[vidx]), vidx))
                if vloss < best[0] - 1e-7:
                    best = (vloss, copy.deepcopy(critic.heads.state_dict()), epoch + 1)
                elif epoch + 1 - best[2] >= cfg["patience"]:
                    break
        if best[1] is not None:
            critic.heads.load_state_dict(best[1])
        critic.heads.eval()

    # held-out evaluation, on contexts the critic never saw
    predicted = critic.predict_features(features_all[torch.as_tensor(held)])
    truth = targets[held]
    held_group = group[held]
    held_kinds = None if kinds is None else [kinds[i] for i in held]
    heads = {}
    for k, m in enumerate(metrics):
        ok = ~np.isnan(truth[:, k])
        train_col = targets[train, k]
        heads[m] = {"spearman": spearman(predicted[ok, k], truth[ok, k]), "r2": r2(predicted[ok, k], truth[ok, k]),
                    "n_heldout": int(ok.sum()),
                    "within_context_accuracy": pairwise_accuracy(held_group, predicted[:, k], truth[:, k], seed,
                                                                 n_boot=200)["accuracy"],
                    "train_target_std": float(np.nanstd(train_col)) if np.any(~np.isnan(train_col)) else 0.0}
    full = ~np.isnan(truth).any(axis=1)
    train_full = targets[train][~np.isnan(targets[train]).any(axis=1)]
    pred_c = np.where(full, predicted.mean(1), np.nan)
    truth_c = np.where(full, truth.mean(1), np.nan)
    combined = {"spearman": spearman(pred_c[full], truth_c[full]),
                "r2": r2(pred_c[full], truth_c[full]), "n_heldout": int(full.sum()),
                "across_contexts": spearman_ci(held_group, pred_c, truth_c, seed),
                "within_context": pairwise_accuracy(held_group, pred_c, truth_c, seed, kinds=held_kinds),
                "train_target_std": float(train_full.mean(1).std()) if len(train_full) else 0.0}
    report = {"seed": int(seed), "metrics": metrics, "n_pairs": n, "n_train": len(train), "n_val": n_val,
              "n_heldout": n_held, "n_contexts": n_groups, "n_contexts_heldout": int(len(held_groups)),
              "split": "by context", "epochs_run": epochs_run, "best_epoch": best[2] or epochs_run,
              "encoder": critic.encoder_name, "embed_dim": critic.embed_dim, "head": cfg["head"],
              "surface_features": bool(cfg["surface_features"]), "ridge": ridge or None,
              "heads": heads, "combined": combined,
              "config": {k: v for k, v in cfg.items() if k != "metrics"}}
    critic.report = report
    if out_dir is not None:
        out = critic.save(out_dir)
        (out / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return CriticReport(report, critic)
