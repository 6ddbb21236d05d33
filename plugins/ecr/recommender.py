"""Emotional semantic fusion (stage 1) and emotion-aware item recommendation (stage 2).

One module serves both stages, as in UniCRS/ECR: an RGCN encodes the DBpedia sub-graph;
a prompt is built from the context text, soft prompt tokens, local emotion-aware entities
(entity vector + its emotion embedding) and global emotion-related entities (per emotion
label, the mean of that label's entities, scaled by the user's emotion); attention pools
the prompt into a user vector scored against entity vectors. Stage 1 predicts every
entity the response mentions (over all entities); stage 2 predicts the recommended items
(over the catalogue) with a cross-entropy weighted by the seeker's feedback.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from crsbench_plugins.ecr.features import N_EMOTIONS


def relation_edges(triples: np.ndarray, self_loop: int, max_relations: int | None) -> tuple[np.ndarray, int]:
    """KG edges without self loops, relations renumbered by frequency; with ``max_relations``
    the rarest ones share the last type ("other"), which bounds RGCNConv's per-relation loop."""
    edges = triples[triples[:, 1] != self_loop].copy()
    rels, counts = np.unique(edges[:, 1], return_counts=True)
    order = rels[np.argsort(-counts, kind="stable")]
    keep = len(order) if not max_relations else min(len(order), max_relations)
    mapping = {int(r): min(k, keep - 1) for k, r in enumerate(order)}
    edges[:, 1] = [mapping[int(r)] for r in edges[:, 1]]
    return edges, keep


class FusionRecommender(nn.Module):
    def __init__(self, num_entities: int, num_relations: int, edges: np.ndarray, text_dim: int,
                 dim: int, num_bases: int, emotion_dim: int, n_prefix: int, global_table: np.ndarray,
                 local_emotion: bool, global_entities: bool):
        super().__init__()
        self.local_emotion, self.use_global = local_emotion, global_entities
        self.node = nn.Embedding(num_entities, dim)
        nn.init.normal_(self.node.weight, std=dim ** -0.5)
        from torch_geometric.nn import RGCNConv

        # Edges both ways (movies learn from their actors and the reverse), one relation type
        # for both directions; ``edges`` relations are already numbered 0..num_relations-1.
        heads, rels, tails = edges[:, 0], edges[:, 1], edges[:, 2]
        index = np.concatenate([np.stack([heads, tails]), np.stack([tails, heads])], axis=1)
        types = np.concatenate([rels, rels])
        self.register_buffer("edge_index", torch.as_tensor(index, dtype=torch.long), persistent=False)
        self.register_buffer("edge_type", torch.as_tensor(types, dtype=torch.long), persistent=False)
        self.rgcn = RGCNConv(dim, dim, num_relations, num_bases=num_bases)
        self.text_proj = nn.Sequential(nn.Linear(text_dim, dim), nn.Tanh(), nn.Linear(dim, dim))
        self.emotion = nn.Embedding(N_EMOTIONS, emotion_dim)
        self.emotion_proj = nn.Linear(emotion_dim, dim)
        self.prefix = nn.Parameter(torch.randn(n_prefix, dim) * dim ** -0.5)
        self.register_buffer("global_table", torch.as_tensor(global_table, dtype=torch.long), persistent=False)
        self.query = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.entity_bias = nn.Parameter(torch.zeros(num_entities))

    def entity_vectors(self) -> torch.Tensor:
        return self.rgcn(self.node.weight, self.edge_index, self.edge_type) + self.node.weight

    def user_vectors(self, ent_vecs, batch: dict) -> torch.Tensor:
        """Pool the prompt of each sample into one vector [B, dim]."""
        text = self.text_proj(batch["text"])                       # [B, d]
        tokens = [text.unsqueeze(1), self.prefix.expand(len(text), -1, -1)]
        masks = [torch.ones(len(text), 1 + len(self.prefix), dtype=torch.bool)]
        if "template" in batch:
            tokens.append(self.text_proj(batch["template"]).unsqueeze(1))
            masks.append(batch["has_template"].unsqueeze(1))
        ents = batch["entities"]                                   # [B, M], -1 = pad
        ent_mask = ents >= 0
        local = ent_vecs[ents.clamp(min=0)]                         # [B, M, d]
        if self.local_emotion:
            local = local + self.emotion_proj(batch["entity_emotions"] @ self.emotion.weight)
        tokens.append(local)
        masks.append(ent_mask)
        if self.use_global:
            table = self.global_table                               # [9, K]
            vecs = ent_vecs[table.clamp(min=0)] * (table >= 0).unsqueeze(-1)
            label_vecs = vecs.sum(1) / (table >= 0).sum(1, keepdim=True).clamp(min=1)   # [9, d]
            label_vecs = label_vecs + self.emotion_proj(self.emotion.weight)
            user_emotion = batch["user_emotion"]                    # [B, 9]
            tokens.append(user_emotion.unsqueeze(-1) * label_vecs.unsqueeze(0))
            masks.append(user_emotion > 0)
        tokens = torch.cat(tokens, 1)
        mask = torch.cat(masks, 1)
        attn = torch.einsum("bd,bmd->bm", self.query(text), tokens) / math.sqrt(tokens.shape[-1])
        attn = attn.masked_fill(~mask, float("-inf")).softmax(-1)
        return self.out(torch.einsum("bm,bmd->bd", attn, tokens) + text)

    def scores(self, batch: dict, candidates: torch.Tensor | None = None,
               ent_vecs: torch.Tensor | None = None) -> torch.Tensor:
        ent_vecs = self.entity_vectors() if ent_vecs is None else ent_vecs
        user = self.user_vectors(ent_vecs, batch)
        if candidates is None:
            return user @ ent_vecs.T + self.entity_bias
        return user @ ent_vecs[candidates].T + self.entity_bias[candidates]


def stage1_loss(model: FusionRecommender, batch: dict) -> torch.Tensor:
    """Predict every entity the response mentions, over all entities (UniCRS pre-training)."""
    logits = model.scores(batch)
    rows, labels = batch["label_rows"], batch["labels"]
    return F.cross_entropy(logits[rows], labels)


def stage2_loss(model: FusionRecommender, batch: dict, item_index: torch.Tensor) -> torch.Tensor:
    """Feedback-weighted cross-entropy over the catalogue (``labels`` are catalogue positions)."""
    logits = model.scores(batch, candidates=item_index)
    rows, labels, weights = batch["label_rows"], batch["labels"], batch["weights"]
    losses = F.cross_entropy(logits[rows], labels, reduction="none")
    return (losses * weights).sum() / weights.sum()
