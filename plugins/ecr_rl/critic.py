"""A cheap learned stand-in for the LLM judge, used as an RL reward.

``Critic``: a frozen sentence encoder embeds the context tail (the last ``context_turns``
turns, joined by newlines) and the response; the features ``[c, r, c * r]`` (plus, with
``surface_features``, a few countable properties of the response: length, repetition,
punctuation) are standardised with the training mean/std and fed to one head per judge
metric, regressing the judge score scaled to [0, 1] (``(score - score_min) / (score_max -
score_min)``, judge scores are 0-9). Heads: ``mlp`` (Linear -> ReLU -> Dropout -> Linear ->
sigmoid, trained with early stopping) or ``ridge`` (one linear map fitted in closed form, its
penalty chosen by k-fold cross-validation inside the training part, output clipped to
[0, 1]). With a few hundred judged pairs the ridge head is the data-efficient choice.

``train_critic`` splits the scored pairs **by context** (``groups``: the replies of one
context stay on one side) with a seeded permutation into training (the MLP head keeps some
contexts for early stopping; the ridge penalty is chosen by grouped cross-validation) and a
held-out part (default 20% of the contexts) that only the report sees. It reports, per head
and for the mean of the heads: held-out Spearman across contexts (scipy) and R^2, and the
**within-context pairwise accuracy** (the share of same-context reply pairs that the critic
orders as the judge does; judge ties excluded, critic ties count one half), which is what a
group-relative RL advantage uses; each with a 95% bootstrap CI over held-out contexts.
``check_critic`` is the validation gate: it raises ``DegenerateRunError`` when the critic
would be a meaningless reward (held-out Spearman too low, a within-context accuracy whose CI
reaches 0.5, or flat training targets).

Files: ``critic.safetensors`` (head weights and the feature standardisation),
``critic.json`` (architecture, metrics, encoder id, score range, training report) and, from
``train_critic``, ``report.json``. docs/rewards.md describes the critic and its gate.

The encoder is injectable: any object with ``encode(texts) -> [N, D]`` (a torch tensor or a
numpy array). The default is the ECR plugin's all-MiniLM-L6-v2 ``TextEncoder``.
"""
from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from crsbench.errors import DegenerateRunError, UserError

WEIGHTS_FILE = "critic.safetensors"
CONFIG_FILE = "critic.json"
REPORT_FILE = "report.json"
FORMAT = "crsbench-critic"
FORMAT_VERSION = 1

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
HEADS = ("mlp", "ridge")
SURFACE_FEATURES = ("log_words", "log_chars", "type_token_ratio", "top_token_share", "log_sentences",
                    "alpha_share", "ends_with_punct", "has_year", "has_exclamation", "has_question")
MIN_TARGET_STD = 1e-3  # in [0, 1] units: 0.009 judge points
TIE = 1e-9               # judge targets closer than this are a tie (the pair is not compared)
N_BOOT = 1000


def judge_metrics(scores=None) -> list[str]:
    """The metrics of per-pair ``{metric: score}`` dicts (in order of first appearance), else
    those of the registered judge rubric (when exactly one is registered)."""
    from crsbench.rubric import resolve_rubric

    if isinstance(scores, Sequence) and scores and all(isinstance(s, Mapping) for s in scores if s is not None):
        found = list(dict.fromkeys(m for s in scores if s is not None for m in s))
        if found:
            return found
    return list(resolve_rubric(None).metrics)


def encoder_id(encoder) -> str:
    for attr in ("cache_id", "name", "model_id"):
        value = getattr(encoder, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(encoder).__name__


def default_encoder():
    from crsbench_plugins.ecr.text_encoder import get_encoder

    return get_encoder()


def encode_texts(encoder, texts: list[str], batch_size: int = 64, cache: bool = True):
    """``encoder.encode(texts)`` as a float32 tensor [N, D]; through the ECR embedding cache
    when ``cache`` and the encoder has a ``cache_id`` (the real TextEncoder)."""
    import torch

    if cache and isinstance(getattr(encoder, "cache_id", None), str):
        from crsbench_plugins.ecr.text_encoder import EmbeddingCache

        emb = EmbeddingCache(encoder).embed(texts, batch_size=batch_size)
    else:
        try:
            emb = encoder.encode(texts, batch_size=batch_size)
        except TypeError:  # a minimal encoder: encode(texts) only
            emb = encoder.encode(texts)
    emb = emb if isinstance(emb, torch.Tensor) else torch.as_tensor(np.asarray(emb))
    emb = emb.detach().float().cpu()
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(f"encoder returned shape {tuple(emb.shape)} for {len(texts)} texts")
    return emb


def context_tail(context: str | Sequence[str] | None, turns: int) -> str:
    if context is None:
        return ""
    if isinstance(context, str):
        return context
    return "\n".join(str(t) for t in list(context)[-turns:]) if turns > 0 else ""


def surface_features(response: str) -> list[float]:
    """Countable properties of a reply (see SURFACE_FEATURES); a small judge leans on them."""
    import re

    words = response.split()
    n = len(words)
    lowered = [w.lower() for w in words]
    top = max((lowered.count(w) for w in set(lowered)), default=0)
    return [math.log1p(n), math.log1p(len(response)), len(set(lowered)) / n if n else 0.0, top / n if n else 0.0,
            math.log1p(len(re.findall(r"[.!?]+", response))),
            sum(w.isalpha() for w in words) / n if n else 0.0,
            float(response.rstrip().endswith((".", "!", "?"))), float(bool(re.search(r"\((19|20)\d\d\)", response))),
            float("!" in response), float("?" in response)]


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


def _spearman(pred: np.ndarray, target: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(pred) < 3 or np.ptp(pred) == 0 or np.ptp(target) == 0:
        return None
    value = float(spearmanr(pred, target).statistic)
    return value if math.isfinite(value) else None


def _r2(pred: np.ndarray, target: np.ndarray) -> float | None:
    if len(target) < 2:
        return None
    total = float(np.sum((target - target.mean()) ** 2))
    if total <= 0:
        return None
    return 1.0 - float(np.sum((target - pred) ** 2)) / total


def _fmt(value) -> str:
    return "undefined" if value is None else f"{value:.3f}"


class Critic:
    """Per-metric regression heads on frozen (context tail, response) embeddings.

    ``embed_dim`` is the encoder's output size D (features are 3 * D). ``encoder`` defaults
    to the shared MiniLM ``TextEncoder`` (loaded on first use). ``cache_embeddings`` sends
    the texts to predict through the ECR ``EmbeddingCache``; off by default, since an RL
    loop scores new texts at every step. ``report`` is the training report, if known.
    """

    def __init__(self, metrics: Sequence[str], embed_dim: int, *, hidden: int = 64, dropout: float = 0.1,
                 context_turns: int = 2, score_min: float = 0.0, score_max: float = 9.0, encoder=None,
                 encoder_name: str | None = None, cache_embeddings: bool = False, head: str = "mlp",
                 surface: bool = False):
        import torch

        if not metrics:
            raise UserError("a critic needs at least one metric")
        if not score_max > score_min:
            raise UserError(f"critic score range must have score_max > score_min, got {score_min}..{score_max}")
        self.metrics = list(metrics)
        self.embed_dim = int(embed_dim)
        self.hidden = int(hidden)
        self.dropout = float(dropout)
        self.context_turns = int(context_turns)
        self.score_min, self.score_max = float(score_min), float(score_max)
        self._encoder = encoder
        self.encoder_name = encoder_name or (encoder_id(encoder) if encoder is not None else None)
        self.cache_embeddings = cache_embeddings
        self.report: dict | None = None
        if head not in HEADS:
            raise UserError(f"critic head must be one of {', '.join(HEADS)}, got {head!r}")
        self.head, self.surface = head, bool(surface)
        feature_dim = self.feature_dim
        if head == "ridge":
            self.heads = torch.nn.ModuleDict({m: torch.nn.Linear(feature_dim, 1) for m in self.metrics})
        else:
            self.heads = torch.nn.ModuleDict({
                m: torch.nn.Sequential(torch.nn.Linear(feature_dim, self.hidden), torch.nn.ReLU(),
                                       torch.nn.Dropout(self.dropout), torch.nn.Linear(self.hidden, 1))
                for m in self.metrics})
        self.feat_mean = torch.zeros(feature_dim)
        self.feat_std = torch.ones(feature_dim)
        self.heads.eval()

    @property
    def feature_dim(self) -> int:
        return 3 * self.embed_dim + (len(SURFACE_FEATURES) if self.surface else 0)

    # -- encoding ------------------------------------------------------------------------
    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = default_encoder()
            if self.encoder_name is None:
                self.encoder_name = encoder_id(self._encoder)
        return self._encoder

    def embed_pairs(self, contexts: Sequence, responses: Sequence[str], batch_size: int = 64):
        """Raw features [N, 3 * D (+ surface)] = [context, response, context * response, surface]
        (not standardised)."""
        import torch

        tails = [context_tail(c, self.context_turns) for c in contexts]
        unique = list(dict.fromkeys(tails + list(responses)))
        if not unique:
            return torch.zeros(0, self.feature_dim)
        emb = encode_texts(self.encoder, unique, batch_size=batch_size, cache=self.cache_embeddings)
        if emb.shape[1] != self.embed_dim:
            raise UserError(f"critic expects {self.embed_dim}-dim embeddings (encoder {self.encoder_name!r}) "
                            f"but the encoder gives {emb.shape[1]}")
        index = {t: i for i, t in enumerate(unique)}
        c = emb[[index[t] for t in tails]]
        r = emb[[index[t] for t in responses]]
        return _features(c, r, responses, self.surface)

    # -- prediction ----------------------------------------------------------------------
    def forward(self, features):
        """[N, M] scores in (0, 1) from raw features (call with the heads in train or eval mode)."""
        import torch

        x = (features - self.feat_mean) / self.feat_std
        if self.head == "ridge":
            return torch.cat([self.heads[m](x).clamp(0.0, 1.0) for m in self.metrics], dim=1)
        return torch.cat([torch.sigmoid(self.heads[m](x)) for m in self.metrics], dim=1)

    def predict_features(self, features) -> np.ndarray:
        import torch

        self.heads.eval()
        with torch.no_grad():
            return self.forward(torch.as_tensor(features).float()).numpy().astype(float)

    def predict(self, contexts: Sequence, responses: Sequence[str], batch_size: int = 64) -> dict[str, np.ndarray]:
        """{metric: predicted score in [0, 1]} for each (context, response)."""
        if len(contexts) != len(responses):
            raise ValueError(f"{len(contexts)} contexts but {len(responses)} responses")
        table = self.predict_features(self.embed_pairs(contexts, list(responses), batch_size=batch_size))
        return {m: table[:, k] for k, m in enumerate(self.metrics)}

    def combine(self, table: np.ndarray, head: str = "combined", weights: Mapping[str, float] | None = None):
        """One column of ``table`` [N, M] (a head) or their weighted mean ("combined")."""
        if head != "combined":
            if head not in self.metrics:
                raise UserError(f"critic has no head {head!r} (heads: {', '.join(self.metrics)}, or 'combined')")
            return table[:, self.metrics.index(head)]
        if not weights:
            return table.mean(axis=1)
        unknown = [m for m in weights if m not in self.metrics]
        if unknown:
            raise UserError(f"critic weights name unknown head(s) {', '.join(unknown)} "
                            f"(heads: {', '.join(self.metrics)})")
        w = np.array([float(weights.get(m, 0.0)) for m in self.metrics])
        if w.sum() <= 0:
            raise UserError(f"critic weights must have a positive sum, got {dict(weights)}")
        return table @ (w / w.sum())

    def score(self, contexts: Sequence, responses: Sequence[str], head: str = "combined",
              weights: Mapping[str, float] | None = None, batch_size: int = 64) -> np.ndarray:
        predicted = self.predict(contexts, responses, batch_size=batch_size)
        table = np.column_stack([predicted[m] for m in self.metrics]) if len(responses) else \
            np.zeros((0, len(self.metrics)))
        return self.combine(table, head, weights)

    # -- files ---------------------------------------------------------------------------
    def config(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "metrics": self.metrics, "embed_dim": self.embed_dim,
                "hidden": self.hidden, "dropout": self.dropout, "context_turns": self.context_turns,
                "score_min": self.score_min, "score_max": self.score_max, "encoder": self.encoder_name,
                "head": self.head, "surface_features": self.surface, "report": self.report}

    def save(self, out_dir: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"heads.{k}": v.detach().contiguous() for k, v in self.heads.state_dict().items()}
        tensors["feat_mean"] = self.feat_mean.contiguous()
        tensors["feat_std"] = self.feat_std.contiguous()
        save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": FORMAT})
        (out / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | os.PathLike, encoder=None, strict_encoder: bool = False) -> "Critic":
        """Load a saved critic. ``encoder`` defaults to the MiniLM TextEncoder; with
        ``strict_encoder`` an encoder whose id differs from the saved one is refused."""
        from safetensors.torch import load_file

        root = Path(path)
        config_path, weights_path = root / CONFIG_FILE, root / WEIGHTS_FILE
        if not config_path.is_file() or not weights_path.is_file():
            raise UserError(f"{root}: not a critic directory (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("format") != FORMAT or config.get("version") != FORMAT_VERSION:
            raise UserError(f"{config_path}: not a {FORMAT} v{FORMAT_VERSION} file")
        if strict_encoder and encoder is not None and config.get("encoder") and \
                encoder_id(encoder) != config["encoder"]:
            raise UserError(f"critic {root} was trained with encoder {config['encoder']!r}, "
                            f"not {encoder_id(encoder)!r}")
        critic = cls(config["metrics"], config["embed_dim"], hidden=config["hidden"],
                     dropout=config.get("dropout", 0.0), context_turns=config["context_turns"],
                     score_min=config["score_min"], score_max=config["score_max"], encoder=encoder,
                     encoder_name=config.get("encoder"), head=config.get("head", "mlp"),
                     surface=config.get("surface_features", False))
        tensors = load_file(str(weights_path))
        critic.heads.load_state_dict({k[len("heads."):]: v for k, v in tensors.items() if k.startswith("heads.")})
        critic.feat_mean, critic.feat_std = tensors["feat_mean"], tensors["feat_std"]
        critic.heads.eval()
        critic.report = config.get("report")
        return critic


# -- training --------------------------------------------------------------------------------
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


def _features(c, r, responses, surface: bool):
    import torch

    parts = [c, r, c * r]
    if surface:
        parts.append(torch.tensor([surface_features(t) for t in responses], dtype=torch.float32).reshape(len(responses), -1))
    return torch.cat(parts, dim=1)


def _ridge_solve(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Weights and intercept of ridge regression (dual form: cheap when rows < columns)."""
    mean = float(y.mean())
    gram = x @ x.T
    dual = np.linalg.solve(gram + alpha * np.eye(len(x)), y - mean)
    return x.T @ dual, mean


def _fit_ridge(x: np.ndarray, y: np.ndarray, alphas, folds: int, seed: int,
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
            w, b = _ridge_solve(x[fit], y[fit], alpha)
            errors.append(np.mean((np.clip(x[part] @ w + b, 0, 1) - y[part]) ** 2))
        cv[float(alpha)] = float(np.mean(errors))
    best = min(cv, key=cv.get)
    w, b = _ridge_solve(x, y, best)
    return w, b, best, cv


def _group_index(groups, contexts) -> np.ndarray:
    """One integer per row: its context group (``groups``, else the context itself)."""
    keys = list(groups) if groups is not None else [json.dumps(c, sort_keys=True, default=str) for c in contexts]
    if len(keys) != len(contexts):
        raise UserError(f"critic: {len(keys)} group ids for {len(contexts)} pairs")
    index: dict = {}
    return np.array([index.setdefault(k, len(index)) for k in keys], dtype=int)


def within_context_pairs(group: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (i, j) of every same-context pair whose judge targets differ (no ties, no NaN)."""
    left, right = [], []
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        for a in range(len(rows)):
            for b in range(a + 1, len(rows)):
                i, j = rows[a], rows[b]
                if np.isfinite(target[i]) and np.isfinite(target[j]) and abs(target[i] - target[j]) > TIE:
                    left.append(i)
                    right.append(j)
    return np.array(left, dtype=int), np.array(right, dtype=int)


def pairwise_accuracy(group: np.ndarray, pred: np.ndarray, target: np.ndarray, seed: int,
                      kinds: Sequence[str] | None = None, n_boot: int = N_BOOT) -> dict:
    """Within-context pairwise accuracy with a bootstrap CI over contexts (and by pair kind)."""
    i, j = within_context_pairs(group, target)
    if not len(i):
        return {"accuracy": None, "ci_low": None, "ci_high": None, "n_pairs": 0,
                "n_contexts": int(len(np.unique(group)))}
    agree = np.sign(pred[i] - pred[j]) * np.sign(target[i] - target[j])
    credit = np.where(agree > 0, 1.0, np.where(agree == 0, 0.5, 0.0))
    pair_group = group[i]
    contexts = np.unique(pair_group)
    per_context = np.array([[credit[pair_group == g].sum(), (pair_group == g).sum()] for g in contexts])
    rng = np.random.default_rng([seed, 11])
    draws = rng.integers(0, len(contexts), size=(n_boot, len(contexts)))
    sums = per_context[draws].sum(axis=1)
    boot = sums[:, 0] / sums[:, 1]
    out = {"accuracy": float(credit.mean()), "ci_low": float(np.percentile(boot, 2.5)),
           "ci_high": float(np.percentile(boot, 97.5)), "n_pairs": int(len(i)), "n_contexts": int(len(contexts))}
    if kinds is not None:
        kinds = np.asarray(kinds)
        by_kind = {}
        for name in sorted({" vs ".join(sorted((a, b))) for a, b in zip(kinds[i], kinds[j])}):
            keep = np.array([" vs ".join(sorted((a, b))) == name for a, b in zip(kinds[i], kinds[j])])
            by_kind[name] = {"accuracy": float(credit[keep].mean()), "n_pairs": int(keep.sum())}
        out["by_kind"] = by_kind
    return out


def spearman_ci(group: np.ndarray, pred: np.ndarray, target: np.ndarray, seed: int, n_boot: int = N_BOOT) -> dict:
    """Pooled Spearman over held-out rows, with a bootstrap CI that resamples whole contexts."""
    ok = np.isfinite(target)
    group, pred, target = group[ok], pred[ok], target[ok]
    value = _spearman(pred, target)
    contexts = np.unique(group)
    rows = [np.flatnonzero(group == g) for g in contexts]
    rng = np.random.default_rng([seed, 12])
    boot = []
    for _ in range(n_boot if value is not None and len(contexts) > 1 else 0):
        idx = np.concatenate([rows[k] for k in rng.integers(0, len(contexts), size=len(contexts))])
        rho = _spearman(pred[idx], target[idx])
        if rho is not None:
            boot.append(rho)
    lo, hi = (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))) if boot else (None, None)
    return {"spearman": value, "ci_low": lo, "ci_high": hi, "n_contexts": int(len(contexts))}


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
    features_all = _features(c, r, responses, cfg["surface_features"])
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
                w, b, alpha, cv = _fit_ridge(x[rows], targets[train, k][rows], cfg["ridge_alphas"],
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
        heads[m] = {"spearman": _spearman(predicted[ok, k], truth[ok, k]), "r2": _r2(predicted[ok, k], truth[ok, k]),
                    "n_heldout": int(ok.sum()),
                    "within_context_accuracy": pairwise_accuracy(held_group, predicted[:, k], truth[:, k], seed,
                                                                 n_boot=200)["accuracy"],
                    "train_target_std": float(np.nanstd(train_col)) if np.any(~np.isnan(train_col)) else 0.0}
    full = ~np.isnan(truth).any(axis=1)
    train_full = targets[train][~np.isnan(targets[train]).any(axis=1)]
    pred_c = np.where(full, predicted.mean(1), np.nan)
    truth_c = np.where(full, truth.mean(1), np.nan)
    combined = {"spearman": _spearman(pred_c[full], truth_c[full]),
                "r2": _r2(pred_c[full], truth_c[full]), "n_heldout": int(full.sum()),
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


def check_critic(report: Mapping[str, Any], min_spearman: float = 0.3, per_head: bool = False,
                 min_target_std: float = MIN_TARGET_STD, min_within_accuracy: float | None = 0.5) -> Mapping[str, Any]:
    """The validation gate. Raises ``DegenerateRunError`` naming the numbers when

    - the held-out Spearman of the combined (mean-of-heads) score is undefined or below
      ``min_spearman`` (with ``per_head``, also any head's);
    - with ``min_within_accuracy`` (None: not checked), the within-context pairwise accuracy
      of the combined score is undefined or its 95% CI does not lie above it: the critic
      cannot rank the replies of one context, which is all a group-relative advantage uses;
    - the training targets of the combined score or of any head have ~zero variance
      (std below ``min_target_std`` on the [0, 1] scale): the judge gave (nearly) one score.

    Returns the report when the critic passes.
    """
    heads = report.get("heads") or {}
    combined = report.get("combined") or {}
    per_head_text = ", ".join(f"{m} {_fmt(h.get('spearman'))}" for m, h in heads.items())
    within = combined.get("within_context") or {}
    detail = (f"held-out Spearman combined {_fmt(combined.get('spearman'))} (per head: {per_head_text}); "
              f"R^2 combined {_fmt(combined.get('r2'))}; within-context pairwise accuracy "
              f"{_fmt(within.get('accuracy'))} [{_fmt(within.get('ci_low'))}, {_fmt(within.get('ci_high'))}] "
              f"on {within.get('n_pairs', 0)} pairs of {within.get('n_contexts', 0)} held-out contexts; "
              f"n_heldout={report.get('n_heldout')}, n_train={report.get('n_train')}")
    problems = []
    flat = [(m, h.get("train_target_std", 0.0)) for m, h in heads.items()
            if (h.get("train_target_std") or 0.0) < min_target_std]
    if (combined.get("train_target_std") or 0.0) < min_target_std:
        problems.append(f"training targets of the combined score have ~zero variance "
                        f"(std {combined.get('train_target_std') or 0.0:.2g} < {min_target_std:g})")
    if flat:
        problems.append("training targets have ~zero variance for head(s) "
                        + ", ".join(f"{m} (std {s:.2g})" for m, s in flat))
    rho = combined.get("spearman")
    if rho is None:
        problems.append(f"held-out Spearman of the combined score is undefined (constant predictions or "
                        f"targets), need >= {min_spearman:g}")
    elif rho < min_spearman:
        problems.append(f"held-out Spearman of the combined score {rho:.3f} < {min_spearman:g}")
    if min_within_accuracy is not None:
        if within.get("accuracy") is None:
            problems.append("within-context pairwise accuracy is undefined (no held-out context has two replies "
                            "the judge scored differently)")
        elif within["ci_low"] <= min_within_accuracy:
            problems.append(f"within-context pairwise accuracy {within['accuracy']:.3f} has a 95% CI "
                            f"[{within['ci_low']:.3f}, {within['ci_high']:.3f}] that reaches {min_within_accuracy:g}: "
                            f"the critic cannot rank the replies of one context")
    if per_head:
        low = [(m, h.get("spearman")) for m, h in heads.items()
               if h.get("spearman") is None or h["spearman"] < min_spearman]
        if low:
            problems.append(f"held-out Spearman below {min_spearman:g} for head(s) "
                            + ", ".join(f"{m} {_fmt(v)}" for m, v in low))
    if problems:
        raise DegenerateRunError("critic failed its validation gate: " + "; ".join(problems) + f" [{detail}]")
    return report
