"""Learned offline judges: small linear scorers on MiniLM features, seconds per hundred turns on a CPU.

Four judges, trained on different data so that one can be the RL reward and the other the
evaluation instrument:

- ``minilm-human``: ridge regression on the human turn labels of CRSArena-Eval's ReDial half
  (relevance, interestingness; the bundled copy in ``data/``). Its validation record holds
  out-of-fold numbers (grouped cross-validation by conversation), never in-sample ones.
- ``minilm-contrast``: pairwise logistic regression trained on NO human labels: contrasts
  made from ReDial's training dialogues (the real recommender reply should outscore a reply
  from another dialogue, another turn of the same dialogue, a repeat of the previous
  recommender turn, a three-word fragment, a generic reply). Validated on all of
  CRSArena-Eval's ReDial half.
- ``minilm-human-a`` / ``minilm-human-b``: ``minilm-human``'s design trained on one of two
  disjoint halves of those conversations (stratified by system) and validated on the other:
  ECR-RL rewards with one and evaluates with the other. ``trained_on`` makes ``crsbench
  judge validate`` refuse the ReDial half (in-sample for half of it); their held-out records
  are written by ``train_learned``.

All score the ``crsarena-turn-v1`` rubric (``relevance``, ``interestingness``, 0-9) and
refuse any other rubric. Features: ``learned_features.py``. Weights: ``data/<name>.npz``
(numpy arrays, read with ``allow_pickle=False``) and ``data/<name>.json`` (what they were
trained on, their sha256, the encoder, the feature version); rebuilt deterministically by
``python -m crsbench_plugins.judges.train_learned`` (docs/judges.md).

Standard library only at import: numpy, torch and the encoder load on the first ``score``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

from crsbench.errors import UserError
from crsbench.judge import Judge, JudgeInput, JudgeScore

logger = logging.getLogger("crsbench.judges")

DATA_DIR = Path(__file__).resolve().parent / "data"
RUBRIC = "crsarena-turn-v1"
FORMAT = "crsbench-learned-judge/1"
LINKS = ("scaled", "sigmoid")  # prediction -> 0-9: 9 * pred / label_max, or 9 * sigmoid(pred)
OPTIONS = {"weights", "batch_size", "threads"}

_MODELS: dict[str, "LinearModel"] = {}
_MODELS_LOCK = threading.Lock()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_paths(stem: str | Path) -> tuple[Path, Path]:
    """``(<stem>.npz, <stem>.json)``; ``stem`` may name either file or neither suffix."""
    stem = Path(stem)
    if stem.suffix in (".npz", ".json"):
        stem = stem.with_suffix("")
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


def read_meta(stem: str | Path) -> dict:
    """The JSON half of a weights file pair (standard library only)."""
    _, meta_path = weights_paths(stem)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"learned judge weights {meta_path}: no such file (rebuild them with "
                        "python -m crsbench_plugins.judges.train_learned)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"learned judge weights {meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"learned judge weights {meta_path}: not a {FORMAT} file")
    return meta


class LinearModel:
    """One linear map per aspect on standardised features: ``z = ((x - mean) / std) @ w.T + b``,
    then the link (``scaled``: ``9 * z / label_max``, ``sigmoid``: ``9 * sigmoid(z)``), clipped to 0-9."""

    def __init__(self, mean, std, w, b, aspects, link: str, label_max=None):
        import numpy as np

        if link not in LINKS:
            raise ValueError(f"link must be one of {LINKS}, got {link!r}")
        self.mean, self.std = np.asarray(mean, float), np.asarray(std, float)
        self.w, self.b = np.atleast_2d(np.asarray(w, float)), np.asarray(b, float).reshape(-1)
        self.aspects = list(aspects)
        self.link = link
        self.label_max = None if label_max is None else np.asarray(label_max, float).reshape(-1)
        if self.w.shape != (len(self.aspects), len(self.mean)) or self.b.shape != (len(self.aspects),):
            raise ValueError(f"weights of shape {self.w.shape} / {self.b.shape} do not fit "
                             f"{len(self.aspects)} aspects and {len(self.mean)} features")

    def raw(self, features):
        """[N, A] predictions before the link (label units for ``scaled``, logits for ``sigmoid``)."""
        return ((features - self.mean) / self.std) @ self.w.T + self.b

    def scores(self, features):
        """[N, A] scores in 0-9."""
        import numpy as np

        z = self.raw(features)
        if self.link == "sigmoid":
            out = 9.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
        else:
            out = 9.0 * z / self.label_max
        return np.clip(out, 0.0, 9.0)

    def arrays(self) -> dict:
        import numpy as np

        out = {"mean": self.mean, "std": self.std, "w": self.w, "b": self.b}
        if self.label_max is not None:
            out["label_max"] = self.label_max
        return {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in out.items()}

    def save(self, stem: str | Path, meta: dict) -> tuple[Path, Path]:
        """Write ``<stem>.npz`` and ``<stem>.json`` (with the npz's sha256) atomically."""
        import os

        import numpy as np

        npz, meta_path = weights_paths(stem)
        npz.parent.mkdir(parents=True, exist_ok=True)
        tmp = npz.with_name(f".{npz.stem}.tmp{os.getpid()}.npz")
        np.savez(tmp, **self.arrays())
        os.replace(tmp, npz)
        full = {**meta, "format": FORMAT, "aspects": self.aspects, "link": self.link,
                "n_features": int(len(self.mean)), "weights_sha256": file_sha256(npz)}
        tmp_meta = meta_path.with_name(f".{meta_path.name}.tmp{os.getpid()}")
        tmp_meta.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp_meta, meta_path)
        return npz, meta_path

    @classmethod
    def load(cls, stem: str | Path) -> "LinearModel":
        """Read and check a weights pair (the npz's sha256 must match its JSON)."""
        import numpy as np

        npz, _ = weights_paths(stem)
        meta = read_meta(stem)
        if not npz.is_file():
            raise UserError(f"learned judge weights {npz}: no such file")
        if file_sha256(npz) != meta.get("weights_sha256"):
            raise UserError(f"learned judge weights {npz}: sha256 does not match {npz.with_suffix('.json').name} "
                            "(retrain with python -m crsbench_plugins.judges.train_learned)")
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        return cls(arrays["mean"], arrays["std"], arrays["w"], arrays["b"], meta["aspects"], meta["link"],
                   arrays.get("label_max"))


def load_model(stem: str | Path) -> LinearModel:
    """A weights pair, loaded once per process."""
    key = str(Path(stem).resolve())
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = LinearModel.load(stem)
        return _MODELS[key]


def rubric_name(rubric: Any) -> str | None:
    return None if rubric is None else str(getattr(rubric, "name", rubric))


class LearnedJudge(Judge):
    """A linear scorer on MiniLM features (see the module docstring). Options: ``weights``
    (another ``.npz``/``.json`` pair, e.g. a retrain; default: the shipped one), ``batch_size``
    (texts per encoder batch, 64), ``threads`` (torch threads while encoding; default: torch's).
    The rubric must be ``crsarena-turn-v1`` (the default)."""

    name = ""
    weights_stem = ""
    trained_on: tuple = ()  # (benchmark, half) pairs whose labels it was trained on: validated out of fold only

    def __init__(self, rubric=None, **options):
        requested = rubric_name(rubric)
        if requested not in (None, RUBRIC):
            raise UserError(f"judge {self.name!r} scores only the rubric {RUBRIC!r} (relevance, interestingness), "
                            f"not {requested!r} (crsbench judge validate: --rubric {RUBRIC}; "
                            f"elsewhere --judge-option rubric={RUBRIC})")
        super().__init__(rubric=rubric if rubric is not None else RUBRIC, **options)
        self.check_options(OPTIONS)
        self.stem = Path(options["weights"]) if options.get("weights") else DATA_DIR / self.weights_stem
        self.batch_size = int(options.get("batch_size", 64))
        if self.batch_size < 1:
            raise UserError(f"judge {self.name!r}: batch_size must be >= 1")
        self.threads = options.get("threads")
        self._meta: dict | None = None

    @property
    def meta(self) -> dict:
        if self._meta is None:
            self._meta = read_meta(self.stem)
        return self._meta

    @property
    def model_id(self) -> str:
        return f"{self.name}-v{self.meta.get('model_version', 1)}"

    def settings(self) -> dict:
        meta = self.meta
        return {"encoder": meta.get("encoder"), "features": meta.get("feature_version"),
                "training_data": meta.get("training_data"), "head": meta.get("head"),
                "weights_sha256": str(meta.get("weights_sha256"))[:16]}

    def _encoder(self):
        from crsbench_plugins.ecr.text_encoder import get_encoder

        encoder = get_encoder(num_threads=int(self.threads) if self.threads else None)
        trained = self.meta.get("encoder")
        if trained and encoder.model_id.split("@")[0] != str(trained).split("@")[0]:
            raise UserError(f"judge {self.name!r} was trained on {trained} embeddings, the encoder is {encoder.model_id}")
        return encoder

    def score(self, items: list[JudgeInput]) -> list[JudgeScore]:
        from crsbench_plugins.judges.learned_features import FEATURE_VERSION, featurize, split_pair

        items = list(items)
        if not items:
            return []
        if self.meta.get("feature_version") != FEATURE_VERSION:
            raise UserError(f"judge {self.name!r}: weights {self.stem} use features "
                            f"{self.meta.get('feature_version')!r}, this code computes {FEATURE_VERSION!r}; retrain")
        model = load_model(self.stem)
        pairs = []
        for item in items:
            try:
                pairs.append(split_pair(item.context, item.response, item.roles))
            except (TypeError, ValueError) as exc:
                raise UserError(f"judge {self.name!r}: malformed input ({exc})") from None
        features = featurize(pairs, self._encoder(), cache=False, batch_size=self.batch_size)
        table = model.scores(features)
        index = {a: k for k, a in enumerate(model.aspects)}
        missing = [m for m in self.metrics if m not in index]
        if missing:
            raise UserError(f"judge {self.name!r}: weights {self.stem} lack metric(s) {', '.join(missing)}")
        return [JudgeScore({m: float(row[index[m]]) for m in self.metrics}) for row in table]


class MiniLMHumanJudge(LearnedJudge):
    name = "minilm-human"
    description = ("Ridge on MiniLM features trained on CRSArena-Eval's human turn labels (ReDial half); "
                   "rubric crsarena-turn-v1 only. Validated out of fold.")
    weights_stem = "minilm_human"
    trained_on = (("crsarena-eval", "redial"),)


class MiniLMContrastJudge(LearnedJudge):
    name = "minilm-contrast"
    description = ("Pairwise logistic scorer on MiniLM features trained on contrasts from ReDial's training dialogues "
                   "(no human labels); rubric crsarena-turn-v1 only.")
    weights_stem = "minilm_contrast"
    validation_split = "none (trained on ReDial train contrasts)"  # what `crsbench judge validate` records


class MiniLMHumanAJudge(MiniLMHumanJudge):
    name = "minilm-human-a"
    description = ("minilm-human's design trained on part a of CRSArena-Eval's ReDial conversations (a two-part "
                   "split by conversation, stratified by system); validated on part b only. Rubric crsarena-turn-v1.")
    weights_stem = "minilm_human_a"


class MiniLMHumanBJudge(MiniLMHumanJudge):
    name = "minilm-human-b"
    description = ("minilm-human's design trained on part b of CRSArena-Eval's ReDial conversations (a two-part "
                   "split by conversation, stratified by system); validated on part a only. Rubric crsarena-turn-v1.")
    weights_stem = "minilm_human_b"


AB_JUDGES = {"a": MiniLMHumanAJudge, "b": MiniLMHumanBJudge}
JUDGES = (MiniLMHumanJudge, MiniLMContrastJudge, MiniLMHumanAJudge, MiniLMHumanBJudge)
