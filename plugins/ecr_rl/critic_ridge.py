"""The critic's ridge head: closed-form ridge regression, its penalty chosen by k-fold
cross-validation over whole contexts inside the training part."""
from __future__ import annotations

import numpy as np


def ridge_solve(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Weights and intercept of ridge regression (dual form: cheap when rows < columns)."""
    mean = float(y.mean())
    gram = x @ x.T
    dual = np.linalg.solve(gram + alpha * np.eye(len(x)), y - mean)
    return x.T @ dual, mean


def fit_ridge(x: np.ndarray, y: np.ndarray, alphas, folds: int, seed: int,
              group: np.ndarray | None = None) -> tuple[np.ndarray, float, float, dict]:
    """Ridge on standardised features; the penalty with the lowest k-fold MSE (training rows
    only; with ``group``, the folds hold whole contexts)."""
    group = np.arange(len(x)) if group is None else np.asarray(group)
    ids = np.unique(group)
    shuffled = np.random.default_rng([seed, 7]).permutation(ids)
    order = np.arange(len(x))
    parts = [np.flatnonzero(np.isin(group, chunk))
             for chunk in np.array_split(shuffled, max(2, min(folds, len(ids))))]
    cv = {}
    for alpha in alphas:
        errors = []
        for part in parts:
            fit = np.setdiff1d(order, part)
            w, b = ridge_solve(x[fit], y[fit], alpha)
            errors.append(np.mean((np.clip(x[part] @ w + b, 0, 1) - y[part]) ** 2))
        cv[float(alpha)] = float(np.mean(errors))
    best = min(cv, key=cv.get)
    w, b = ridge_solve(x, y, best)
    return w, b, best, cv
