"""Training ``minilm-human`` and ``minilm-human-a`` / ``-b`` (``train_learned.py`` describes
the protocols): ridge heads on CRSArena-Eval's human turn labels, validated out of fold
(grouped by conversation, and leaving one system out), or trained on one part of a two-part
split of the conversations (:func:`ab_split`) and validated on the other.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from crsbench_plugins.judges.learned import MiniLMHumanJudge
from crsbench_plugins.judges.train_data import encoder_id, log, make_validation_record, turn_units, unit_features
from crsbench_plugins.judges.train_ridge import (K_FOLDS, SEED, combine_heads, grouped_folds, out_of_fold, ridge_fit,
                                                 select_ridge, spearman)

HUMAN_SPLIT = (f"grouped {K_FOLDS}-fold cross-validation by conversation (seed {SEED}), out-of-fold predictions; "
               "ridge penalty chosen by an inner grouped CV of each training part")
AB_PARTS = ("a", "b")
AB_RULE = ("CRSArena-Eval ReDial conversations by system (sorted), within a system by sha256('crsbench-ab:{seed}:' "
           "+ conv_id), dealt alternately to a and b")
AB_SPLIT = ("trained on part {part} of a two-part split of the conversations (stratified by system, seed {seed}), "
            "validated on part {other} only; ridge penalty chosen by a grouped CV of part {part}")


# -- minilm-human -----------------------------------------------------------------------------
def train_human(out_dir: Path, k: int = K_FOLDS, seed: int = SEED, features: np.ndarray | None = None,
                n_bootstrap: int = 1000, leave_one_system_out: bool = True) -> dict:
    """Cross-validate, train on everything, save the weights; returns the validation record
    (also ``record["_oof"]``: the out-of-fold predictions, for tests). ``features``: the
    units' features if already computed; ``leave_one_system_out=False`` skips that protocol."""
    from crsbench_plugins.judges.learned_features import FEATURE_VERSION, n_scalars

    benchmark, data, units = turn_units()
    X = unit_features(units) if features is None else features
    ns = n_scalars()
    groups = [u.group for u in units]
    systems = [u.system for u in units]
    aspects = list(benchmark.aspects["turn"])
    fold = grouped_folds(groups, k, seed)
    oof: dict = {}
    loso: dict = {}
    chosen: dict = {}
    heads = []
    label_max = []
    for aspect in aspects:
        have = np.array([aspect in u.labels for u in units])
        Xa, ya = X[have], np.array([u.labels[aspect] for u in units if aspect in u.labels])
        ga, sa, fa = [g for g, h in zip(groups, have) if h], [s for s, h in zip(systems, have) if h], fold[have]
        started = time.perf_counter()
        pred, picks = out_of_fold(Xa, ya, ga, [fa == f for f in range(k)], ns, seed)
        by_system, picks_loso = (out_of_fold(Xa, ya, ga, [np.array(sa) == s for s in sorted(set(sa))], ns, seed)
                                 if leave_one_system_out else (np.full(len(ya), np.nan), None))
        keys = [u.key for u in units if aspect in u.labels]
        for key, p, q in zip(keys, pred, by_system):
            oof.setdefault(key, {})[aspect] = float(p)
            loso.setdefault(key, {})[aspect] = float(q)
        alpha, sp = select_ridge(Xa, ya, ga, ns, seed + 1, folds=k)
        chosen[aspect] = {"kfold": picks, "leave_one_system_out": picks_loso, "final": {"alpha": alpha,
                                                                                      "scalar_penalty": sp}}
        mean, std, w, b = ridge_fit(Xa, ya, alpha, sp, ns)
        heads.append((mean, std, w, b))
        label_max.append(float(ya.max()))
        log(f"minilm-human {aspect}: out-of-fold Spearman {spearman(pred, ya):.3f}, "
            f"leave-one-system-out {f'{spearman(by_system, ya):.3f}' if leave_one_system_out else 'skipped'}, "
            f"final alpha {alpha:g} scalar penalty {sp:g} "
            f"({time.perf_counter() - started:.0f} s)")
    model = combine_heads(X, heads, aspects, label_max)
    stem = out_dir / MiniLMHumanJudge.weights_stem
    meta = {"judge": MiniLMHumanJudge.name, "model_version": 1, "head": "ridge", "encoder": encoder_id(),
            "feature_version": FEATURE_VERSION,
            "training_data": {"name": data.name, "sha256": data.sha256, "n_turns": len(units),
                              "labels": aspects},
            "hyperparameters": chosen, "label_max": dict(zip(aspects, label_max)),
            "command": "python -m crsbench_plugins.judges.train_learned human"}
    model.save(stem, meta)
    judge = MiniLMHumanJudge(weights=str(stem))
    scale = {a: 9.0 / mx for a, mx in zip(aspects, label_max)}
    scaled = {key: {a: v * scale[a] for a, v in row.items()} for key, row in oof.items()}
    record = make_validation_record(judge, benchmark, data, units, scaled, HUMAN_SPLIT, {
        "training": {"labels": "the same data's human turn labels", "folds": k, "seed": seed,
                     "hyperparameters": chosen, "command": meta["command"]}}, n_bootstrap=n_bootstrap)
    if leave_one_system_out:
        loso_record = make_validation_record(judge, benchmark, data, units, loso, "leave one system out", {},
                                             n_bootstrap=n_bootstrap)
        record["leave_one_system_out"] = {
            "protocol": "trained on four systems (penalty by an inner grouped CV), tested on the fifth",
            "aspects": loso_record["aspects"],
            "per_system_spearman": {a: per_system(units, loso, a) for a in aspects}}
    record["_oof"] = oof
    return record


# -- minilm-human-a / minilm-human-b ----------------------------------------------------------
def ab_split(units, seed: int = SEED) -> dict[str, str]:
    """Conversation -> part ``"a"`` or ``"b"`` of the two-part split: the systems in sorted order,
    within each its conversations sorted by ``sha256(f"crsbench-ab:{seed}:{conv_id}")``, the
    whole sequence dealt alternately a, b, a, b, ... So each system's conversations are halved
    (the parts differ by at most one per system and one in all), the split depends only on the
    conversation ids and the seed (not on their order or numpy), and no conversation is in both."""
    system_of: dict[str, str] = {}
    for u in units:
        if system_of.setdefault(u.group, u.system) != u.system:
            raise ValueError(f"conversation {u.group!r} has turns of two systems")
    key = {g: hashlib.sha256(f"crsbench-ab:{seed}:{g}".encode()).hexdigest() for g in system_of}
    order = sorted(system_of, key=lambda g: (system_of[g], key[g], g))
    return {g: AB_PARTS[i % 2] for i, g in enumerate(order)}


def conversations_sha256(groups) -> str:
    return hashlib.sha256("\n".join(sorted(set(groups))).encode()).hexdigest()


def train_part(out_dir: Path, part: str, seed: int = SEED, features: np.ndarray | None = None,
               n_bootstrap: int = 1000) -> dict:
    """``minilm-human-<part>``: minilm-human's design (features, ridge, penalty by a grouped
    ``K_FOLDS``-fold CV of the training data) trained on the conversations of ``part`` only,
    validated on the other part only. Saves the weights; returns the validation record (also
    ``record["_heldout"]``: the held-out conversation ids, and ``record["_predictions"]``)."""
    from crsbench.judge_validation import BenchmarkData
    from crsbench_plugins.judges.learned import AB_JUDGES
    from crsbench_plugins.judges.learned_features import FEATURE_VERSION, n_scalars

    judge_class = AB_JUDGES[part]
    other = AB_PARTS[1 - AB_PARTS.index(part)]
    benchmark, data, units = turn_units()
    X = unit_features(units) if features is None else features
    part_of = ab_split(units, seed)
    train = np.array([part_of[u.group] == part for u in units])
    ns = n_scalars()
    aspects = list(benchmark.aspects["turn"])
    heads, label_max, chosen = [], [], {}
    for aspect in aspects:
        have = train & np.array([aspect in u.labels for u in units])
        ya = np.array([units[i].labels[aspect] for i in np.flatnonzero(have)])
        ga = [units[i].group for i in np.flatnonzero(have)]
        alpha, sp = select_ridge(X[have], ya, ga, ns, seed + 1, folds=K_FOLDS)
        chosen[aspect] = {"alpha": alpha, "scalar_penalty": sp}
        heads.append(ridge_fit(X[have], ya, alpha, sp, ns))
        label_max.append(float(ya.max()))
    model = combine_heads(X[train], heads, aspects, label_max)
    trained = sorted({u.group for u, t in zip(units, train) if t})
    meta = {"judge": judge_class.name, "model_version": 1, "head": "ridge", "encoder": encoder_id(),
            "feature_version": FEATURE_VERSION,
            "training_data": {"name": data.name, "sha256": data.sha256, "labels": aspects, "part": part,
                              "split_rule": AB_RULE.format(seed=seed), "n_conversations": len(trained),
                              "conversations_sha256": conversations_sha256(trained), "n_turns": int(train.sum())},
            "hyperparameters": chosen, "label_max": dict(zip(aspects, label_max)),
            "command": f"python -m crsbench_plugins.judges.train_learned human-{part}"}
    stem = out_dir / judge_class.weights_stem
    model.save(stem, meta)
    judge = judge_class(weights=str(stem))
    test_units = [u for u, t in zip(units, train) if not t]
    scores = model.scores(X[~train])  # what the judge itself returns for these turns (0-9, clipped)
    predictions = {u.key: dict(zip(aspects, map(float, row))) for u, row in zip(test_units, scores)}
    held_out = {u.group for u in test_units}
    heldout_data = BenchmarkData(data.name, data.sha256, {lv: [u for u in us if u.group in held_out]
                                                         for lv, us in data.units.items()})
    record = make_validation_record(judge, benchmark, heldout_data, test_units, predictions,
                                    AB_SPLIT.format(part=part, other=other, seed=seed), {
                                        "training": {"labels": f"the human turn labels of part {part} only",
                                                     "part": part, "seed": seed, "hyperparameters": chosen,
                                                     "command": meta["command"]}}, n_bootstrap=n_bootstrap)
    record["data"].update(subset=other, subset_rule=AB_RULE.format(seed=seed),
                          conversations_sha256=conversations_sha256(held_out))
    record["published"] = {}  # the paper's numbers are on the whole half, not on these turns
    record["_heldout"], record["_predictions"] = held_out, predictions
    return record


def per_system(units, predictions, aspect) -> dict:
    out = {}
    for system in sorted({u.system for u in units}):
        have = [u for u in units if u.system == system and aspect in u.labels]
        out[system] = round(spearman([predictions[u.key][aspect] for u in have], [u.labels[aspect] for u in have]), 6)
    return out
