"""Train the learned judges (``learned.py``) and write their validation records.

    python -m crsbench_plugins.judges.train_learned all --publish   # both judges, records, tables
    python -m crsbench_plugins.judges.train_learned human          # minilm-human only (about 1 min)
    python -m crsbench_plugins.judges.train_learned contrast       # minilm-contrast only
    python -m crsbench_plugins.judges.train_learned human-a        # minilm-human-a (human-b: the mirror)

Measured on the busy 2-core machine: ``human`` about 1 min; ``contrast`` about 10 min with a
cold embedding cache (encoding some 30,000 ReDial texts with MiniLM), 2 min with a warm one.

Writes ``plugins/judges/data/minilm_{human,contrast,human_a,human_b}.{npz,json}`` (``--out DIR`` elsewhere)
and, with ``--publish``, the validation records under ``leaderboards/results/judges/``
(``--root``), then rebuilds the leaderboard tables. Everything is seeded and computed in
closed form or by a deterministic optimiser, so a rerun reproduces the weights (up to float
rounding of the encoder).

``minilm-human`` (ridge, one head per aspect) on the bundled CRSArena-Eval ReDial half:

- **grouped K-fold cross-validation by conversation** (default 5 folds, seed 0): every
  conversation's turns are predicted by a model that never saw that conversation; the
  ridge penalty and the scalar features' relative penalty are chosen inside each training
  part by a second grouped cross-validation (nested), never on the held-out fold;
- **leave one system out**: trained on four systems, tested on the fifth (again nested);
- the shipped weights are trained on all the data with the penalty chosen by grouped CV.
The record carries the out-of-fold numbers (``split`` says so) and the leave-one-system-out
numbers under ``leave_one_system_out``.

``minilm-human-a`` / ``minilm-human-b``: minilm-human's design (same features, ridge, penalty
by a grouped 5-fold CV of the training data) trained on one of two disjoint parts of the
conversations (``ab_split``: stratified by system, sha256-seeded, deterministic) and validated
on the other part only; the record's ``data`` counts are those of the held-out part. ECR-RL
can reward with one and evaluate with the other.

``minilm-contrast`` (pairwise logistic regression, one head per aspect) on contrasts built
from the bundled ReDial task's TRAIN split only: each real recommender reply against, in the
same context, negatives: the reply of a random turn of another dialogue, of another turn of
the same dialogue, the recommender's previous turn repeated, the reply's first three words,
and a generic reply. The loss asks the real reply to outscore each negative. The relevance
head sees every kind of negative, the interestingness head the dull ones (fragment, generic,
repeat). The L2 penalty is chosen by the pairwise log-loss on the same contrasts built from
ReDial's VALID split; the test split is never read. The intercept centres the training
contrasts' scores at 4.5 (0-9 through a sigmoid). Validated on every labelled turn of
CRSArena-Eval's ReDial half.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from crsbench_plugins.judges.learned import DATA_DIR, RUBRIC, LinearModel, MiniLMContrastJudge, MiniLMHumanJudge

K_FOLDS = 5
INNER_FOLDS = 4
SEED = 0
# Fixed a priori; the inner grouped CV picks from them.
RIDGE_ALPHAS = (100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0)
SCALAR_PENALTIES = (1.0, 0.1)   # penalty of the scalar features relative to the embedding dimensions
LOGISTIC_ALPHAS = (1.0, 10.0, 100.0, 1000.0)
GENERIC_REPLIES = ("I don't know.", "Hi!", "Okay.", "Hello, how are you?", "Thanks, bye!", "Sure.",
                   "I'm not sure.", "Yes.", "No.", "What do you mean?")
NEGATIVES = ("other_dialogue", "same_dialogue", "repeat_previous", "fragment", "generic")
HEAD_NEGATIVES = {"relevance": NEGATIVES, "interestingness": ("repeat_previous", "fragment", "generic")}
HUMAN_SPLIT = (f"grouped {K_FOLDS}-fold cross-validation by conversation (seed {SEED}), out-of-fold predictions; "
               "ridge penalty chosen by an inner grouped CV of each training part")
CONTRAST_SPLIT = MiniLMContrastJudge.validation_split
AB_PARTS = ("a", "b")
AB_RULE = ("CRSArena-Eval ReDial conversations by system (sorted), within a system by sha256('crsbench-ab:{seed}:' "
           "+ conv_id), dealt alternately to a and b")
AB_SPLIT = ("trained on part {part} of a two-part split of the conversations (stratified by system, seed {seed}), "
            "validated on part {other} only; ridge penalty chosen by a grouped CV of part {part}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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


# -- data -------------------------------------------------------------------------------------
def turn_units(data_path=None):
    """The benchmark and its labelled turns (``crsarena.load_units``: the bundled ReDial half)."""
    from crsbench.judge_validation import get_benchmark

    benchmark = get_benchmark("crsarena-eval")
    data = benchmark.load(data_path)
    return benchmark, data, list(data.units["turn"])


def unit_features(units, encoder=None, cache: bool = True) -> np.ndarray:
    from crsbench_plugins.ecr.text_encoder import get_encoder
    from crsbench_plugins.judges.learned_features import featurize, split_pair

    pairs = [split_pair(u.item.context, u.item.response, u.item.roles) for u in units]
    return featurize(pairs, encoder or get_encoder(), cache=cache)


def encoder_id(encoder=None) -> str:
    from crsbench_plugins.ecr.text_encoder import get_encoder

    return (encoder or get_encoder()).model_id


# -- records ----------------------------------------------------------------------------------
def make_validation_record(judge, benchmark, data, units, predictions: dict, split: str, extra: dict,
                           n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """A validation record (A's schema) of ``predictions`` (unit key -> {aspect: score})."""
    from crsbench.judge_validation import aspect_stats, make_record, published_agreement, scoring_order

    aspects = [a for a in benchmark.aspects["turn"] if a in judge.metrics]
    half = units[0].half
    units = scoring_order(units)  # the unit order `crsbench judge validate` uses: the same bootstrap draws
    judged, trivial = aspect_stats(units, predictions, aspects, "turn", n_bootstrap, seed)
    return make_record(benchmark=benchmark, data=data, half=half, judge=judge.describe(), judge_id=judge.judge_id,
                       rubric=RUBRIC, levels=["turn"], aspects=judged, trivial=trivial, split=split,
                       n_bootstrap=n_bootstrap, seed=seed, published=published_agreement(benchmark, half, aspects),
                       extra=extra)


def publish(records: list[dict], root: str | Path) -> list[Path]:
    from crsbench import leaderboard
    from crsbench.judge_validation import RESULTS_SUBDIR, record_filename, write_validation

    paths = [write_validation(r, Path(root) / RESULTS_SUBDIR / record_filename(r)) for r in records]
    # the same bytes in the package, so an installed crsbench (no leaderboards/) finds them
    shipped = Path(__file__).resolve().parent / "data" / "validation"
    for path in paths:
        shipped.mkdir(parents=True, exist_ok=True)
        (shipped / path.name).write_bytes(path.read_bytes())
    leaderboard.write(root)
    return paths


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
            "per_system_spearman": {a: _per_system(units, loso, a) for a in aspects}}
    record["_oof"] = oof
    return record


def combine_heads(X: np.ndarray, heads: list, aspects: Sequence[str], label_max: Sequence[float]) -> LinearModel:
    """One ``scaled`` LinearModel of per-aspect ridge heads ``(mean, std, w, b)``: each head's
    linear map re-expressed on one standardisation (the mean/std of ``X``)."""
    mean, std = standardiser(X)
    W, B = [], []
    for (m, s, w, b) in heads:
        W.append(w * (std / s))
        B.append(b + float(((mean - m) / s) @ w))
    return LinearModel(mean, std, np.vstack(W), np.array(B), list(aspects), "scaled", np.array(label_max))


# -- minilm-human-a / minilm-human-b ----------------------------------------------------------
def ab_split(units, seed: int = SEED) -> dict[str, str]:
    """Conversation -> part ``"a"`` or ``"b"`` of the two-part split: the systems in sorted order,
    within each its conversations sorted by ``sha256(f"crsbench-ab:{seed}:{conv_id}")``, the
    whole sequence dealt alternately a, b, a, b, ... So each system's conversations are halved
    (the parts differ by at most one per system and one in all), the split depends only on the
    conversation ids and the seed (not on their order or numpy), and no conversation is in both."""
    import hashlib

    system_of: dict[str, str] = {}
    for u in units:
        if system_of.setdefault(u.group, u.system) != u.system:
            raise ValueError(f"conversation {u.group!r} has turns of two systems")
    key = {g: hashlib.sha256(f"crsbench-ab:{seed}:{g}".encode()).hexdigest() for g in system_of}
    order = sorted(system_of, key=lambda g: (system_of[g], key[g], g))
    return {g: AB_PARTS[i % 2] for i, g in enumerate(order)}


def conversations_sha256(groups) -> str:
    import hashlib

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


def _per_system(units, predictions, aspect) -> dict:
    out = {}
    for system in sorted({u.system for u in units}):
        have = [u for u in units if u.system == system and aspect in u.labels]
        out[system] = round(spearman([predictions[u.key][aspect] for u in have], [u.labels[aspect] for u in have]), 6)
    return out


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


# -- CLI --------------------------------------------------------------------------------------
def summarise(record: dict) -> str:
    from crsbench.judge_validation import format_estimate, summary_lines

    lines = summary_lines(record)
    loso = record.get("leave_one_system_out")
    if loso:
        for aspect, stats in loso["aspects"].items():
            per = ", ".join(f"{s} {v:.3f}" for s, v in loso["per_system_spearman"][aspect].items())
            lines.append(f"  leave one system out, {aspect}: Spearman pooled "
                         f"{format_estimate(stats['spearman'], stats['spearman_ci'])}, within system "
                         f"{format_estimate(stats['within_system_spearman'], stats['within_system_spearman_ci'])}; "
                         f"per held-out system: {per}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crsbench_plugins.judges.train_learned", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=("human", "contrast", "human-a", "human-b", "all"))
    parser.add_argument("--out", default=str(DATA_DIR), help="directory for the weights (default: the shipped ones)")
    parser.add_argument("--publish", action="store_true", help="write the validation records and rebuild the tables")
    parser.add_argument("--root", default="leaderboards", help="leaderboard directory for --publish")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    from crsbench.errors import UserError

    try:
        records = []
        out = Path(args.out)
        if args.which in ("human", "all"):
            record = train_human(out, n_bootstrap=args.n_bootstrap)
            record.pop("_oof")
            records.append(record)
        if args.which in ("contrast", "all"):
            records.append(train_contrast(out, n_bootstrap=args.n_bootstrap))
        for part in AB_PARTS:
            if args.which in (f"human-{part}", "all"):
                record = train_part(out, part, n_bootstrap=args.n_bootstrap)
                del record["_heldout"], record["_predictions"]
                records.append(record)
        for record in records:
            print(summarise(record))
        if args.publish:
            for path in publish(records, args.root):
                print(f"published {path}")
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
