"""Training ``minilm-contrast`` (``train_learned.py`` describes the protocol): contrasts of
real ReDial replies against negatives in the same context, a pairwise logistic head per
aspect with the penalty chosen on ReDial's valid split, validated on CRSArena-Eval.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from crsbench_plugins.judges.learned import LinearModel, MiniLMContrastJudge
from crsbench_plugins.judges.train_data import log, make_validation_record, turn_units
from crsbench_plugins.judges.train_ridge import SEED, standardiser

LOGISTIC_ALPHAS = (1.0, 10.0, 100.0, 1000.0)
GENERIC_REPLIES = ("I don't know.", "Hi!", "Okay.", "Hello, how are you?", "Thanks, bye!", "Sure.",
                   "I'm not sure.", "Yes.", "No.", "What do you mean?")
NEGATIVES = ("other_dialogue", "same_dialogue", "repeat_previous", "fragment", "generic")
HEAD_NEGATIVES = {"relevance": NEGATIVES, "interestingness": ("repeat_previous", "fragment", "generic")}
CONTRAST_SPLIT = MiniLMContrastJudge.validation_split


# -- minilm-contrast --------------------------------------------------------------------------
def build_contrasts(rows: Sequence[dict], seed: int):
    """``(pairs, labels, kinds)``: every real reply (kind ``real``, label 1) and its negatives
    (label 0, kinds in ``NEGATIVES``) as ``learned_features.Pair`` objects."""
    from crsbench_plugins.judges.learned_features import is_user, split_pair

    rng = np.random.default_rng(seed)
    rows = [r for r in rows if str(r["response"]).strip()]
    by_dialog: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_dialog.setdefault(r["dialog_id"], []).append(i)
    pairs, labels, kinds = [], [], []

    def add(row, reply, label, kind):
        pairs.append(split_pair(list(row["context"]), reply, list(row["context_roles"])))
        labels.append(label)
        kinds.append(kind)

    for i, row in enumerate(rows):
        reply = str(row["response"])
        add(row, reply, 1, "real")
        while True:
            j = int(rng.integers(len(rows)))
            if rows[j]["dialog_id"] != row["dialog_id"]:
                break
        add(row, str(rows[j]["response"]), 0, "other_dialogue")
        same = [j for j in by_dialog[row["dialog_id"]] if str(rows[j]["response"]) != reply]
        if same:
            add(row, str(rows[same[int(rng.integers(len(same)))]]["response"]), 0, "same_dialogue")
        earlier = [t for t, role in zip(row["context"], row["context_roles"]) if not is_user(role)]
        if earlier and earlier[-1].strip() and earlier[-1] != reply:
            add(row, earlier[-1], 0, "repeat_previous")
        words = reply.split()
        if len(words) > 3:
            add(row, " ".join(words[:3]), 0, "fragment")
        add(row, GENERIC_REPLIES[int(rng.integers(len(GENERIC_REPLIES)))], 0, "generic")
    return pairs, np.array(labels, dtype=float), np.array(kinds)


def contrast_pairs(kinds: np.ndarray, allowed: Sequence[str]) -> np.ndarray:
    """[P, 2] indices (real reply, negative) of the same context, negatives of the kinds allowed
    (``build_contrasts`` writes each real reply followed by its negatives)."""
    real = np.flatnonzero(kinds == "real")
    ends = np.r_[real[1:], len(kinds)]
    return np.array([(r, j) for r, e in zip(real, ends) for j in range(r + 1, e) if kinds[j] in allowed], dtype=int)


def pairwise_fit(Z: np.ndarray, pairs: np.ndarray, alpha: float) -> np.ndarray:
    """w of an L2-penalised pairwise logistic loss, mean over pairs of ``log(1 + exp(-(z_real -
    z_negative)))`` with ``z = Z @ w`` (standardised features), fitted by L-BFGS from zero
    (deterministic)."""
    from scipy.optimize import minimize

    diff = Z[pairs[:, 0]] - Z[pairs[:, 1]]
    n = len(diff)

    def loss(w):
        margin = diff @ w
        value = float(np.mean(np.logaddexp(0.0, -margin))) + 0.5 * alpha * float(w @ w) / n
        grad = -(diff.T @ (1.0 / (1.0 + np.exp(np.clip(margin, -50, 50))))) / n + alpha * w / n
        return value, grad

    return minimize(loss, np.zeros(Z.shape[1]), jac=True, method="L-BFGS-B",
                    options={"maxiter": 2000, "gtol": 1e-7}).x


def pairwise_loss(Z: np.ndarray, pairs: np.ndarray, w: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, -((Z[pairs[:, 0]] - Z[pairs[:, 1]]) @ w))))


def pair_accuracy(Z: np.ndarray, kinds: np.ndarray, w: np.ndarray) -> dict:
    """Per negative kind: the share of contexts whose real reply outscores that negative."""
    z = Z @ w
    out = {}
    for kind in NEGATIVES:
        pairs = contrast_pairs(kinds, (kind,))
        if len(pairs):
            d = z[pairs[:, 0]] - z[pairs[:, 1]]
            out[kind] = round(float(np.mean((d > 0) + 0.5 * (d == 0))), 4)
    return out


def train_contrast(out_dir: Path, seed: int = SEED, n_bootstrap: int = 1000) -> dict:
    from crsbench.plugins import lookup
    from crsbench_plugins.ecr.text_encoder import get_encoder
    from crsbench_plugins.judges.learned_features import FEATURE_VERSION, featurize

    task = lookup("tasks", "redial").obj()
    splits = task.load().splits
    train_rows, valid_rows = splits["train"].to_list(), splits["valid"].to_list()  # the test split is never read
    encoder = get_encoder()
    started = time.perf_counter()
    pairs, y, kinds = build_contrasts(train_rows, seed)
    vpairs, vy, vkinds = build_contrasts(valid_rows, seed + 1)
    X = featurize(pairs, encoder, cache=True)
    VX = featurize(vpairs, encoder, cache=True)
    log(f"minilm-contrast: {int(y.sum())} real replies, {int((1 - y).sum())} negatives (train), "
        f"{int(vy.sum())} / {int((1 - vy).sum())} (valid); features in {time.perf_counter() - started:.0f} s")
    mean, std = standardiser(X)
    Z, VZ = (X - mean) / std, (VX - mean) / std
    del X, VX
    aspects = ["relevance", "interestingness"]
    W, B, report = [], [], {}
    for aspect in aspects:
        pairs, vpairs = contrast_pairs(kinds, HEAD_NEGATIVES[aspect]), contrast_pairs(vkinds, HEAD_NEGATIVES[aspect])
        fits = {}
        for alpha in LOGISTIC_ALPHAS:
            w = pairwise_fit(Z, pairs, alpha)
            fits[alpha] = (pairwise_loss(VZ, vpairs, w), w)
            log(f"  {aspect} alpha {alpha:g}: valid pairwise log-loss {fits[alpha][0]:.4f}")
        best = min(LOGISTIC_ALPHAS, key=lambda a: (fits[a][0], a))
        w = fits[best][1]
        W.append(w)
        B.append(-float(np.mean(Z @ w)))  # centres the training contrasts' scores at 4.5
        report[aspect] = {"alpha": best, "valid_pairwise_log_loss": {str(a): round(v[0], 6) for a, v in fits.items()},
                          "negatives": list(HEAD_NEGATIVES[aspect]), "n_train_pairs": int(len(pairs)),
                          "valid_pair_accuracy": pair_accuracy(VZ, vkinds, w)}
        log(f"minilm-contrast {aspect}: alpha {best:g}, valid pair accuracy {report[aspect]['valid_pair_accuracy']}")
    model = LinearModel(mean, std, np.vstack(W), np.array(B), aspects, "sigmoid")
    stem = out_dir / MiniLMContrastJudge.weights_stem
    meta = {"judge": MiniLMContrastJudge.name, "model_version": 1, "head": "pairwise-logistic", "encoder": encoder.model_id,
            "feature_version": FEATURE_VERSION,
            "training_data": {"name": f"{task.name} ({task.variant}) train split, contrasts; valid split for the penalty",
                              "sha256": task.data_sha256, "n_real": int(y.sum()), "n_negative": int((1 - y).sum()),
                              "negatives": list(NEGATIVES), "generic_replies": list(GENERIC_REPLIES), "seed": seed},
            "report": report, "command": "python -m crsbench_plugins.judges.train_learned contrast"}
    model.save(stem, meta)
    return validate_contrast(stem, report, n_bootstrap)


def validate_contrast(stem: Path, report: dict, n_bootstrap: int = 1000) -> dict:
    from crsbench.judge_validation import score_units

    benchmark, data, units = turn_units()
    judge = MiniLMContrastJudge(weights=str(stem))
    predictions, failed = score_units(judge, units, 64, False, "turns")
    if failed:
        raise RuntimeError(f"minilm-contrast failed on {len(failed)} turns")
    return make_validation_record(judge, benchmark, data, units, predictions, CONTRAST_SPLIT, {
        "training": {"labels": "none: contrasts from ReDial's training dialogues", **report}},
        n_bootstrap=n_bootstrap)
