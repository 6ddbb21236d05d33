"""The critic itself: per-metric regression heads on frozen (context tail, response) embeddings,
and its files.

The features ``[c, r, c * r]`` (plus, with ``surface``, the countable properties of the
response) are standardised with the training mean/std and fed to one head per judge metric,
predicting the judge score scaled to [0, 1]. Heads: ``mlp`` (Linear -> ReLU -> Dropout ->
Linear -> sigmoid) or ``ridge`` (one linear map, output clipped to [0, 1]).

Files: ``critic.safetensors`` (head weights and the feature standardisation) and
``critic.json`` (architecture, metrics, encoder id, score range, training report).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from crsbench.errors import UserError
from crsbench_plugins.ecr_rl.critic_features import (SURFACE_FEATURES, context_tail, default_encoder, encode_texts,
                                                     encoder_id, pair_features)

WEIGHTS_FILE = "critic.safetensors"
CONFIG_FILE = "critic.json"
FORMAT = "crsbench-critic"
FORMAT_VERSION = 1
HEADS = ("mlp", "ridge")


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
        return pair_features(c, r, responses, self.surface)

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
