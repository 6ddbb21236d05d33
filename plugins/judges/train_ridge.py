"""The ridge machinery of the learned judges' training (``train_learned.py``): grouped folds
by conversation, closed-form ridge on standardised features with the penalty chosen by a
grouped cross-validation, out-of-fold predictions, and the per-aspect heads combined into
one ``LinearModel``. Seeded and deterministic.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from crsbench_plugins.judges.learned import LinearModel

K_FOLDS = 5
INNER_FOLDS = 4
SEED = 0
# Fixed a priori; the inner grouped CV picks from them.
RIDGE_ALPHAS = (100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0)
SCALAR_PENALTIES = (1.0, 0.1)   # penalty of the scalar features relative to the embedding dimensions


# -- splits -----------------------------------------------------------------------------------
def grouped_folds(groups: Sequence[str], k: int, seed: int) -> np.ndarray:
    """Fold id (0..k-1) of each unit; all units of a group (conversation) share one fold.
    Groups are dealt round-robin over a seeded permutation (sorted first: order-independent)."""
    unique = sorted(set(groups))
    if len(unique) < k:
        raise ValueError(f"{len(unique)} groups cannot fill {k} folds")
    perm = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[j]: i % k for i, j in enumerate(perm)}
    return np.array([fold_of[g] for g in groups], dtype=int)


# -- ridge ------------------------------------------------------------------------------------
def standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    std = X.std(axis=0)
    return X.mean(axis=0), np.where(std > 1e-8, std, 1.0)


class Ridge:
    """Ridge regression on standardised features, solved in closed form for any penalty:
    ``fit(alpha, scalar_penalty)`` -> (mean, std, w, b). The last ``n_scalars`` features are
    penalised ``scalar_penalty`` times as much as the others (the Gram matrix is computed once)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, n_scalars: int):
        self.mean, self.std = standardiser(X)
        Z = (X - self.mean) / self.std
        self.b = float(y.mean())
        self.gram, self.target = Z.T @ Z, Z.T @ (y - self.b)
        self.n_scalars = n_scalars

    def fit(self, alpha: float, scalar_penalty: float):
        penalty = np.ones(len(self.target))
        penalty[len(penalty) - self.n_scalars:] = scalar_penalty
        w = np.linalg.solve(self.gram + alpha * np.diag(penalty), self.target)
        return self.mean, self.std, w, self.b


def ridge_fit(X: np.ndarray, y: np.ndarray, alpha: float, scalar_penalty: float, n_scalars: int):
    return Ridge(X, y, n_scalars).fit(alpha, scalar_penalty)


def ridge_predict(params, X: np.ndarray) -> np.ndarray:
    mean, std, w, b = params
    return ((X - mean) / std) @ w + b


def spearman(pred, gold) -> float:
    from crsbench.judge_validation import correlations

    value = correlations(pred, gold, ["g"] * len(gold), ["s"] * len(gold))["spearman"]
    return -1.0 if value is None else value


def select_ridge(X, y, groups, n_scalars: int, seed: int, folds: int = INNER_FOLDS) -> tuple[float, float]:
    """(alpha, scalar penalty) with the best pooled Spearman of a grouped CV on (X, y)."""
    fold = grouped_folds(groups, folds, seed)
    parts = [(Ridge(X[fold != f], y[fold != f], n_scalars), fold == f) for f in range(folds)]
    best = None
    for alpha in RIDGE_ALPHAS:
        for sp in SCALAR_PENALTIES:
            pred = np.empty(len(y))
            for ridge, test in parts:
                pred[test] = ridge_predict(ridge.fit(alpha, sp), X[test])
            score = spearman(pred, y)
            if best is None or score > best[0] + 1e-12:
                best = (score, alpha, sp)
    return best[1], best[2]


def out_of_fold(X, y, groups, test_mask_of, n_scalars: int, seed: int):
    """Predictions for every unit from models that never saw its conversation (or system):
    ``test_mask_of``: a list of boolean masks, one per held-out part. Returns (pred, chosen)."""
    pred = np.full(len(y), np.nan)
    chosen = []
    for test in test_mask_of:
        train = ~test
        alpha, sp = select_ridge(X[train], y[train], [g for g, t in zip(groups, train) if t], n_scalars, seed + 1)
        chosen.append({"alpha": alpha, "scalar_penalty": sp})
        pred[test] = ridge_predict(ridge_fit(X[train], y[train], alpha, sp, n_scalars), X[test])
    return pred, chosen


def combine_heads(X: np.ndarray, heads: list, aspects: Sequence[str], label_max: Sequence[float]) -> LinearModel:
    """One ``scaled`` LinearModel of per-aspect ridge heads ``(mean, std, w, b)``: each head's
    linear map re-expressed on one standardisation (the mean/std of ``X``)."""
    mean, std = standardiser(X)
    W, B = [], []
    for (m, s, w, b) in heads:
        W.append(w * (std / s))
        B.append(b + float(((mean - m) / s) @ w))
    return LinearModel(mean, std, np.vstack(W), np.array(B), list(aspects), "scaled", np.array(label_max))
