"""The emotion classifier: an MLP head over frozen :class:`TextEncoder` embeddings, trained on
an annotator's soft labels for a seeded subset of train-split seeker utterances (5,082 by
default, as in the paper), then used to label all of them; its held-out agreement with the
annotator (:func:`agreement`); and the labels of each sample's seeker turns
(:func:`annotate_samples`).
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from crsbench_plugins.ecr.annotator_registry import make_annotator
from crsbench_plugins.ecr.emotion_base import EMOTIONS, PAPER_N_ANNOTATED, SupportsAnnotate, keep_labels, top_label
from crsbench_plugins.ecr.text_encoder import torch_threads


def seeker_utterances(samples) -> list[str]:
    """Distinct seeker utterances in the samples' contexts, in order of first appearance."""
    seen: dict[str, None] = {}
    for context, roles in _contexts(samples):
        for text, role in zip(context, roles):
            if role == "seeker":
                seen.setdefault(text, None)
    return list(seen)


def _contexts(samples):
    if hasattr(samples, "column_names"):  # datasets.Dataset: read the columns, not the rows
        return zip(samples["context"], samples["context_roles"])
    return ((s["context"], s["context_roles"]) for s in samples)


def _probs_tensor(annotations: Sequence[dict[str, float]]):
    import torch

    return torch.tensor([[float(p[label]) for label in EMOTIONS] for p in annotations], dtype=torch.float32)


class EmotionClassifier:
    """An MLP head (or a linear one, ``hidden=0``) over frozen sentence embeddings, trained
    with soft-label cross-entropy on an annotator's distributions; its softmax output is
    a distribution over :data:`EMOTIONS` like the annotator's (then :func:`keep_labels`).

    ``fit(texts)`` samples ``n_train`` distinct texts (seeded; 5,082 as in the paper), has
    the annotator label them plus ``n_heldout`` further texts, trains on the first and
    reports agreement on the second. Afterwards ``annotate(texts)`` labels any text: the
    annotator's own labels for the texts it labelled for training (``use_annotator_labels``,
    as the paper keeps its LLM labels), the classifier's for all others.

    Deterministic on the CPU for a given seed: parameter init, shuffling and dropout use
    a private RNG state (the global torch RNG is left as it was).
    """

    def __init__(self, encoder=None, annotator: str | SupportsAnnotate = "lexicon", hidden: int = 256,
                 dropout: float = 0.1, epochs: int = 30, lr: float = 1e-3, weight_decay: float = 1e-2,
                 batch_size: int = 64, seed: int = 0, cache_dir: str | None = None, use_annotator_labels: bool = True):
        from crsbench_plugins.ecr.text_encoder import EmbeddingCache, get_encoder

        self.encoder = encoder if encoder is not None else get_encoder()
        self.embeddings = EmbeddingCache(self.encoder, cache_dir)
        self.annotator = make_annotator(annotator) if annotator is not None else None
        self.hidden, self.dropout, self.epochs = int(hidden), float(dropout), int(epochs)
        self.lr, self.weight_decay, self.batch_size, self.seed = float(lr), float(weight_decay), int(batch_size), int(seed)
        self.use_annotator_labels = use_annotator_labels
        self.head = None
        self.annotated: dict[str, dict[str, float]] = {}
        self.report: dict[str, Any] = {}
        self.annotator_name = getattr(self.annotator, "name", None)

    # -- model --------------------------------------------------------------------------------
    def make_head(self, dim: int):
        import torch.nn as nn

        if self.hidden <= 0:
            return nn.Linear(dim, len(EMOTIONS))
        return nn.Sequential(nn.Linear(dim, self.hidden), nn.GELU(), nn.Dropout(self.dropout),
                             nn.Linear(self.hidden, len(EMOTIONS)))

    def embed(self, texts: Sequence[str], progress: bool = False):
        return self.embeddings.embed(list(texts), progress=progress)

    # -- training -----------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], n_train: int = PAPER_N_ANNOTATED, n_heldout: int = 1000,
            progress: bool = False) -> dict[str, Any]:
        """Annotate a seeded sample of ``texts`` and train on it; returns :attr:`report`.

        If fewer than ``n_train + n_heldout`` distinct texts exist, the held-out part is cut
        to a fifth of them (at least 1) and the rest trains.
        """
        import numpy as np
        import torch

        if self.annotator is None:
            raise ValueError("this classifier has no annotator to learn from")
        unique = list(dict.fromkeys("" if t is None else str(t) for t in texts))
        if len(unique) < 2:
            raise ValueError("need at least two distinct texts to train and evaluate")
        if n_train + n_heldout > len(unique):
            n_heldout = max(1, min(n_heldout, len(unique) // 5))
            n_train = min(n_train, len(unique) - n_heldout)
        perm = np.random.default_rng(self.seed).permutation(len(unique))
        train_texts = [unique[i] for i in perm[:n_train]]
        held_texts = [unique[i] for i in perm[n_train:n_train + n_heldout]]

        t0 = time.perf_counter()
        train_probs = self.annotator.annotate(train_texts)
        held_probs = self.annotator.annotate(held_texts)
        t_annotate = time.perf_counter() - t0
        # All distinct texts are encoded (and cached) at once: annotate(texts) afterwards
        # finds the same list in the embedding cache instead of encoding again.
        t0 = time.perf_counter()
        x = self.embed(unique, progress=progress)
        t_encode = time.perf_counter() - t0
        train_idx = torch.as_tensor(perm[:n_train], dtype=torch.long)
        held_idx = torch.as_tensor(perm[n_train:n_train + n_heldout], dtype=torch.long)
        x_train, x_held = x[train_idx], x[held_idx]
        y_train, y_held = _probs_tensor(train_probs), _probs_tensor(held_probs)

        t0 = time.perf_counter()
        # One thread: the head is tiny (threads only add overhead), and the result does
        # not depend on the machine's core count.
        with torch.random.fork_rng(devices=[]), torch_threads(1):
            torch.manual_seed(self.seed)
            self.head = self.make_head(x.shape[1])
            opt = torch.optim.AdamW(self.head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            gen = torch.Generator().manual_seed(self.seed)
            self.head.train()
            for _ in range(self.epochs):
                order = torch.randperm(n_train, generator=gen)
                for start in range(0, n_train, self.batch_size):
                    idx = order[start:start + self.batch_size]
                    logits = self.head(x_train[idx])
                    loss = -(y_train[idx] * torch.log_softmax(logits, -1)).sum(-1).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            self.head.eval()
        t_train = time.perf_counter() - t0

        self.annotated = dict(zip(train_texts, train_probs))
        self.annotator_name = self.annotator.name
        report = agreement(y_held, self.predict_embeddings(x_held))
        train_top = Counter(top_label(p) for p in train_probs)
        majority = train_top.most_common(1)[0][0]
        report.update({
            "annotator": self.annotator.name, "seed": self.seed, "n_texts": len(unique), "n_train": n_train,
            "n_heldout": len(held_texts), "majority_label": majority,
            "majority_rate": sum(top_label(p) == majority for p in held_probs) / max(1, len(held_probs)),
            "train_agreement_top1": agreement(y_train, self.predict_embeddings(x_train))["top1"],
            "seconds": {"annotate": round(t_annotate, 2), "encode": round(t_encode, 2), "train": round(t_train, 2)},
        })
        self.report = report
        return report

    # -- inference ----------------------------------------------------------------------------
    def predict_embeddings(self, x):
        """Class probabilities [N, 9] for embeddings [N, dim]."""
        import torch

        if self.head is None:
            raise RuntimeError("the emotion classifier is not trained; call fit() or load()")
        with torch.inference_mode(), torch_threads(1):
            return torch.softmax(self.head(x), -1)

    def predict_proba(self, texts: Sequence[str], progress: bool = False):
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            import torch

            return torch.empty(0, len(EMOTIONS))
        return self.predict_embeddings(self.embed(texts, progress=progress))

    def annotate(self, texts: Sequence[str], progress: bool = False) -> list[dict[str, float]]:
        """One distribution over :data:`EMOTIONS` per text (the Annotator interface)."""
        texts = ["" if t is None else str(t) for t in texts]
        unique = list(dict.fromkeys(texts))
        known = self.annotated if self.use_annotator_labels else {}
        if all(t in known for t in unique):
            return [dict(known[t]) for t in texts]
        # predict for every distinct text (not only the unknown ones), so the list matches
        # the one fit() embedded and the embedding cache hits
        table = {t: dict(zip(EMOTIONS, p)) for t, p in zip(unique, self.predict_proba(unique, progress).tolist())}
        return [dict(known[t]) if t in known else table[t] for t in texts]

    @property
    def name(self) -> str:
        return f"classifier({self.annotator_name})"

    # -- persistence --------------------------------------------------------------------------
    def _input_dim(self) -> int:
        first = self.head if self.hidden <= 0 else self.head[0]
        return int(first.in_features)

    def save(self, path: str | Path) -> Path:
        """One safetensors file: the head's weights; config, report and the annotator's
        training labels in the metadata."""
        from safetensors.torch import save_file

        if self.head is None:
            raise RuntimeError("nothing to save: the classifier is not trained")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous() for k, v in self.head.state_dict().items()}
        meta = {
            "format": "crsbench-ecr-emotion-classifier/1", "emotions": json.dumps(EMOTIONS),
            "config": json.dumps({"hidden": self.hidden, "dropout": self.dropout, "epochs": self.epochs, "lr": self.lr,
                                  "weight_decay": self.weight_decay, "batch_size": self.batch_size, "seed": self.seed}),
            "input_dim": str(self._input_dim()), "encoder": self.encoder.cache_id, "annotator": str(self.annotator_name),
            "report": json.dumps(self.report), "annotated": json.dumps(self.annotated),
        }
        save_file(tensors, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path, encoder=None, cache_dir: str | None = None,
             use_annotator_labels: bool = True) -> "EmotionClassifier":
        """A trained classifier from :meth:`save`. ``encoder`` must match the one it was
        trained with (default: the shared MiniLM encoder); a mismatch raises ValueError."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "crsbench-ecr-emotion-classifier/1":
            raise ValueError(f"{path} is not a saved EmotionClassifier")
        if tuple(json.loads(meta["emotions"])) != EMOTIONS:
            raise ValueError(f"{path} was trained on other labels: {meta['emotions']}")
        config = json.loads(meta["config"])
        clf = cls(encoder=encoder, annotator=None, cache_dir=cache_dir, use_annotator_labels=use_annotator_labels,
                  **config)
        if clf.encoder.cache_id != meta["encoder"]:
            raise ValueError(f"{path} was trained on embeddings of {meta['encoder']}, not {clf.encoder.cache_id}")
        state = load_file(str(path))
        # files written before "input_dim" was recorded: the first layer's weight [out, in]
        dim = meta.get("input_dim") or state["weight" if "weight" in state else "0.weight"].shape[1]
        clf.head = clf.make_head(int(dim))
        clf.head.load_state_dict(state)
        clf.head.eval()
        clf.annotator_name = meta.get("annotator")
        clf.report = json.loads(meta.get("report", "{}"))
        clf.annotated = json.loads(meta.get("annotated", "{}"))
        return clf


def agreement(target, predicted) -> dict[str, float]:
    """How well predicted distributions [N, 9] match annotator distributions [N, 9]:
    top-1 accuracy, soft-label cross-entropy H(p, q) and mean KL(p || q) (nats), and the
    mean Jaccard overlap of the label sets :func:`keep_labels` keeps from each."""
    import torch

    eps = 1e-12
    q = predicted.clamp_min(eps)
    p = target
    ce = -(p * q.log()).sum(-1)
    kl = (p * (p.clamp_min(eps).log() - q.log())).sum(-1)
    top1 = (p.argmax(-1) == q.argmax(-1)).float()
    jac = []
    for pi, qi in zip(p.tolist(), q.tolist()):
        a = {label for label, _ in keep_labels(dict(zip(EMOTIONS, pi)))}
        b = {label for label, _ in keep_labels(dict(zip(EMOTIONS, qi)))}
        jac.append(len(a & b) / len(a | b) if a | b else 1.0)
    n = max(1, len(jac))
    target_top = p.argmax(-1)
    recall = {}
    for i, label in enumerate(EMOTIONS):
        rows = target_top == i
        if rows.any():
            recall[label] = round(top1[rows].mean().item(), 4)
    return {"top1": top1.mean().item() if len(jac) else float("nan"),
            "soft_ce": ce.mean().item() if len(jac) else float("nan"),
            "kl": kl.mean().item() if len(jac) else float("nan"),
            "annotator_entropy": (ce - kl).mean().item() if len(jac) else float("nan"),
            "kept_jaccard": sum(jac) / n, "top1_recall": recall}


def annotate_samples(samples, classifier: SupportsAnnotate, progress: bool = False) -> list[list[dict[str, float]]]:
    """Per sample, the emotion distribution of each seeker turn of its context, in context
    order (turns whose ``context_roles`` entry is "seeker"). ``classifier`` is a trained
    :class:`EmotionClassifier` or any annotator; each distinct utterance is labelled once."""
    contexts = list(_contexts(samples))
    unique = list(dict.fromkeys(t for context, roles in contexts for t, r in zip(context, roles) if r == "seeker"))
    if isinstance(classifier, EmotionClassifier):
        labels = classifier.annotate(unique, progress=progress)
    else:
        labels = list(classifier.annotate(unique))
    table = dict(zip(unique, labels))
    return [[table[t] for t, r in zip(context, roles) if r == "seeker"] for context, roles in contexts]
