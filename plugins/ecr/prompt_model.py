"""UniCRS's knowledge-and-text prompt encoder with ECR's emotion components, and the frozen LM it prompts.

The shape of the computation follows the official code (``wxl1999/UniCRS``
src/model_prompt.py and src/model_gpt2.py; ``zxd-octopus/ECR`` src_emo/model_prompt.py):

- entities: free node embeddings (``hidden/2``) -> RGCN (+ residual) -> residual MLP ->
  linear to the LM's hidden size; text: the frozen text encoder's token states -> residual
  MLP -> linear to the LM's hidden size; the two meet in a bilinear cross-attention;
- recommendation prompts (``mode="rec"``) are one vector per context entity (the entity plus
  the tokens attended from it); conversation prompts (``mode="conv"``) one per context token
  (the token plus the entities attended from it); learned prefixes go first;
- the prompt sequence -> residual MLP -> linear to ``n_layer x 2 x kv_dim`` and becomes the
  ``past_key_values`` of a frozen causal LM;
- items are scored by the LM's last hidden state against the entity embeddings (no bias);
- ECR, local: each context entity's prompt vector is concatenated with the embedding of the
  seeker's emotions toward it (``hidden/16``) and mapped back by an MLP (no residual, as in
  the official code); ECR, global: each context entity also contributes the mean embedding of
  the entities that co-occur with it under a shared emotion in the training dialogues
  (``CoAppearance``), with the same emotion, so the prompt has two vectors per entity.

Differences from the official code are listed in plugins/ecr/README.md.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch
from torch import nn

N_KV = 2  # key and value


def _residual_mlp(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim // 2), nn.ReLU(), nn.Linear(dim // 2, dim))


def _xavier_uniform_(param: torch.Tensor) -> None:
    bound = math.sqrt(6.0 / (param.shape[-2] + param.shape[-1]))
    nn.init.uniform_(param, -bound, bound)


def relation_edges(triples: np.ndarray, max_relations: int | None) -> tuple[np.ndarray, int]:
    """The KG's edges, its self loops included (UniCRS extract_subkg.py adds one per head
    entity, a relation of its own), relations renumbered by frequency; with ``max_relations``
    the rarest ones share the last type ("other"), which bounds RGCNConv's per-relation loop."""
    edges = triples.copy()
    rels, counts = np.unique(edges[:, 1], return_counts=True)
    order = rels[np.argsort(-counts, kind="stable")]
    keep = len(order) if not max_relations else min(len(order), max_relations)
    mapping = {int(r): min(k, keep - 1) for k, r in enumerate(order)}
    edges[:, 1] = [mapping[int(r)] for r in edges[:, 1]]
    return edges, keep


class LMShape:
    """What the prompt encoder needs to know about the causal LM it prompts."""

    def __init__(self, config):
        self.hidden = int(getattr(config, "hidden_size", None) or config.n_embd)
        self.n_layer = int(getattr(config, "num_hidden_layers", None) or config.n_layer)
        self.n_head = int(getattr(config, "num_attention_heads", None) or config.n_head)
        self.head_dim = int(getattr(config, "head_dim", None) or self.hidden // self.n_head)
        self.n_kv_heads = int(getattr(config, "num_key_value_heads", None) or self.n_head)

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim


class CoAppearance:
    """ECR's global emotion-aware entities: for each entity, the distribution over the entities
    that come after it in a training dialogue and share one of its emotion labels (counts,
    row-normalised; official src_emo/co_appear.py). Stored sparse."""

    def __init__(self, num_entities: int, rows: np.ndarray, cols: np.ndarray, values: np.ndarray):
        self.num_entities = num_entities
        order = np.lexsort((cols, rows))
        self.rows, self.cols, self.values = rows[order], cols[order], values[order].astype(np.float32)
        self.starts = np.searchsorted(self.rows, np.arange(num_entities + 1))

    @classmethod
    def from_dialogues(cls, num_entities: int, dialogues: list[list[tuple[int, tuple[int, ...]]]],
                       max_labels: int = 3) -> "CoAppearance":
        """``dialogues``: per dialogue, its entities in order, each with its emotion label ids."""
        counts: dict[tuple[int, int], int] = defaultdict(int)
        for entities in dialogues:
            for i, (head, head_labels) in enumerate(entities):
                if not head_labels:
                    continue
                head_set = set(head_labels[:max_labels])
                for tail, tail_labels in entities[i + 1:]:
                    if head_set.intersection(tail_labels[:max_labels]):
                        counts[(head, tail)] += 1
        if not counts:
            empty = np.zeros(0, dtype=np.int64)
            return cls(num_entities, empty, empty, np.zeros(0, dtype=np.float32))
        pairs = np.array(list(counts), dtype=np.int64)
        values = np.array(list(counts.values()), dtype=np.float64)
        totals = np.bincount(pairs[:, 0], weights=values, minlength=num_entities)
        return cls(num_entities, pairs[:, 0], pairs[:, 1], values / totals[pairs[:, 0]])

    @property
    def n_pairs(self) -> int:
        return len(self.rows)

    def rows_for(self, entity_ids: torch.Tensor) -> torch.Tensor:
        """A sparse ``[N, num_entities]`` matrix: row n is the distribution of entity_ids[n]
        (zeros for padding, -1)."""
        ids = entity_ids.reshape(-1).tolist()
        r, c, v = [], [], []
        for n, e in enumerate(ids):
            if e < 0:
                continue
            lo, hi = self.starts[e], self.starts[e + 1]
            r.extend([n] * (hi - lo))
            c.extend(self.cols[lo:hi].tolist())
            v.extend(self.values[lo:hi].tolist())
        index = torch.tensor([r, c], dtype=torch.long).reshape(2, -1)
        return torch.sparse_coo_tensor(index, torch.tensor(v, dtype=torch.float32), (len(ids), self.num_entities),
                                       check_invariants=False)

    def has_neighbours(self, entity_ids: torch.Tensor) -> torch.Tensor:
        """Which ids (same shape) have a non-empty row (False for padding, -1)."""
        counts = torch.as_tensor(np.diff(self.starts), device=entity_ids.device)
        return (entity_ids >= 0) & (counts[entity_ids.clamp(min=0)] > 0)

    def state(self) -> dict[str, np.ndarray]:
        return {"rows": self.rows, "cols": self.cols, "values": self.values}


class KGPromptEncoder(nn.Module):
    """Builds the LM prompts (as key/value tensors) from context entities and context tokens."""

    def __init__(self, lm: LMShape, token_dim: int, num_entities: int, num_relations: int, edges: np.ndarray,
                 num_bases: int, n_prefix_rec: int, n_prefix_conv: int, n_emotions: int = 0,
                 local_emotion: bool = False, co_appearance: CoAppearance | None = None):
        super().__init__()
        from torch_geometric.nn import RGCNConv

        h = lm.hidden
        self.lm = lm
        self.hidden = h
        self.entity_dim = h // 2
        self.local_emotion = bool(local_emotion)
        self.co_appearance = co_appearance
        self.node_embeds = nn.Parameter(torch.empty(num_entities, self.entity_dim))
        _xavier_uniform_(self.node_embeds.data)
        heads, rels, tails = edges[:, 0], edges[:, 1], edges[:, 2]
        # both directions, one relation type for both (movies learn from their actors and back)
        index = np.concatenate([np.stack([heads, tails]), np.stack([tails, heads])], axis=1)
        self.register_buffer("edge_index", torch.as_tensor(index, dtype=torch.long), persistent=False)
        self.register_buffer("edge_type", torch.as_tensor(np.concatenate([rels, rels]), dtype=torch.long),
                             persistent=False)
        self.kg_encoder = RGCNConv(self.entity_dim, self.entity_dim, num_relations=num_relations, num_bases=num_bases)
        self.entity_proj1 = _residual_mlp(self.entity_dim)
        self.entity_proj2 = nn.Linear(self.entity_dim, h)
        self.token_proj1 = _residual_mlp(token_dim)
        self.token_proj2 = nn.Linear(token_dim, h)
        self.cross_attn = nn.Linear(h, h, bias=False)
        self.prompt_proj1 = _residual_mlp(h)
        self.prompt_proj2 = nn.Linear(h, lm.n_layer * N_KV * lm.kv_dim)
        self.rec_prefix = nn.Parameter(torch.empty(max(n_prefix_rec, 0), h))
        self.conv_prefix = nn.Parameter(torch.empty(max(n_prefix_conv, 0), h))
        nn.init.normal_(self.rec_prefix)
        nn.init.normal_(self.conv_prefix)
        self.rec_prefix_proj = _residual_mlp(h)
        self.conv_prefix_proj = _residual_mlp(h)
        self.emotion_on = self.local_emotion or co_appearance is not None
        if self.emotion_on:
            emo_dim = max(1, h // 16)
            self.emo_embeds = nn.Parameter(torch.empty(n_emotions, h))
            _xavier_uniform_(self.emo_embeds.data)
            self.emo_proj1 = _residual_mlp(h)
            self.emo_proj2 = nn.Linear(h, emo_dim)
            self.emo_fuse1 = nn.Sequential(nn.Linear(h + emo_dim, h), nn.ReLU(), nn.Linear(h, h + emo_dim))
            self.emo_fuse2 = nn.Linear(h + emo_dim, h)

    # -- pieces --------------------------------------------------------------------------------
    def entity_embeds(self) -> torch.Tensor:
        """[num_entities, hidden]: what prompts are built from and items are scored against."""
        x = self.node_embeds
        x = self.kg_encoder(x, self.edge_index, self.edge_type) + x
        x = self.entity_proj1(x) + x
        return self.entity_proj2(x)

    def emotion_vectors(self, probs: torch.Tensor) -> torch.Tensor:
        """[..., n_emotions] kept-label probabilities -> [..., hidden/16] (zeros: no emotion)."""
        table = self.emo_proj2(self.emo_proj1(self.emo_embeds) + self.emo_embeds)
        return probs @ table

    def _fuse_emotion(self, prompt: torch.Tensor, emotion: torch.Tensor) -> torch.Tensor:
        return self.emo_fuse2(self.emo_fuse1(torch.cat([prompt, emotion], -1)))

    def _prefix(self, which: str, batch: int) -> torch.Tensor:
        param, proj = (self.rec_prefix, self.rec_prefix_proj) if which == "rec" else (self.conv_prefix,
                                                                                      self.conv_prefix_proj)
        return (proj(param) + param).unsqueeze(0).expand(batch, -1, -1)

    # -- the prompt ----------------------------------------------------------------------------
    def forward(self, entity_ids: torch.Tensor, token_states: torch.Tensor, token_mask: torch.Tensor,
                mode: str, entity_emotions: torch.Tensor | None = None, use_prefix: bool = True,
                ent: torch.Tensor | None = None):
        """Returns ``(kv, mask, ent)``: kv ``[n_layer, 2, B, n_kv_heads, P, head_dim]``, the prompt's
        mask ``[B, P]`` and the entity embeddings used (pass them back in to reuse them).

        entity_ids ``[B, L]`` (-1 = padding); token_states ``[B, T, token_dim]`` with
        token_mask ``[B, T]``; entity_emotions ``[B, L, n_emotions]`` (ECR only).
        """
        ent = self.entity_embeds() if ent is None else ent
        batch = entity_ids.shape[0]
        ent_mask = entity_ids >= 0
        entities = ent[entity_ids.clamp(min=0)]                                    # [B, L, h]
        tok_mask = token_mask.bool()
        tokens = self.token_proj2(self.token_proj1(token_states) + token_states)  # [B, T, h]
        scores = self.cross_attn(tokens) @ entities.transpose(1, 2) / self.hidden  # [B, T, L]
        if mode == "rec":
            # one prompt vector per entity: the entity plus the tokens that attend to it
            weights = _masked_softmax(scores, tok_mask.unsqueeze(2), dim=1)
            prompt = weights.transpose(1, 2) @ tokens + entities                  # [B, L, h]
            mask = ent_mask
            if self.emotion_on:
                emotion = (self.emotion_vectors(entity_emotions) if entity_emotions is not None
                           else prompt.new_zeros(*prompt.shape[:2], self.emo_proj2.out_features))
                if self.co_appearance is not None:
                    rows = self.co_appearance.rows_for(entity_ids.cpu()).to(ent.device)
                    neighbours = torch.sparse.mm(rows, ent).reshape(prompt.shape)   # [B, L, h]
                    prompt = torch.cat([prompt, neighbours], 1)
                    emotion = torch.cat([emotion, emotion], 1)
                    mask = torch.cat([ent_mask, self.co_appearance.has_neighbours(entity_ids)], 1)
                if not self.local_emotion:
                    emotion = torch.zeros_like(emotion)
                prompt = self._fuse_emotion(prompt, emotion)
            prefix_kind = "rec"
        elif mode == "conv":
            # one prompt vector per token: the token plus the entities it attends to
            weights = _masked_softmax(scores, ent_mask.unsqueeze(1), dim=2)
            prompt = weights @ entities + tokens                                   # [B, T, h]
            mask = tok_mask
            prefix_kind = "conv"
        else:
            raise ValueError(f"mode must be 'rec' or 'conv', got {mode!r}")
        if use_prefix:
            prefix = self._prefix(prefix_kind, batch)
            if prefix.shape[1]:
                prompt = torch.cat([prefix, prompt], 1)
                mask = torch.cat([mask.new_ones(batch, prefix.shape[1]), mask], 1)
        prompt = self.prompt_proj2(self.prompt_proj1(prompt) + prompt)            # [B, P, n_layer*2*kv]
        p = prompt.shape[1]
        kv = prompt.reshape(batch, p, self.lm.n_layer, N_KV, self.lm.n_kv_heads, self.lm.head_dim)
        return kv.permute(2, 3, 0, 4, 1, 5), mask, ent


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over ``dim`` ignoring masked positions; all-masked slices give zeros."""
    mask = mask.expand_as(scores)
    out = scores.masked_fill(~mask, float("-inf")).softmax(dim)
    return torch.nan_to_num(out, nan=0.0) * mask


# -- the frozen LM ----------------------------------------------------------------------------
def cache_from_kv(kv: torch.Tensor, lm_config):
    """A transformers ``DynamicCache`` holding the prompt's keys and values for every layer."""
    from transformers import DynamicCache

    cache = DynamicCache(config=lm_config)
    for layer in range(kv.shape[0]):
        cache.update(kv[layer, 0], kv[layer, 1], layer)
    return cache


def prompted_forward(lm, kv: torch.Tensor, prompt_mask: torch.Tensor, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor, use_cache: bool = False, **kwargs):
    """Run the LM on left-padded ``input_ids`` with the prompt as its past keys and values.

    Positions count from each row's first real token (the prompt takes no positions, as in
    the official code, whose attention concatenates the prompt without shifting positions).
    """
    from crsbench_plugins.ecr.lm_common import cache_kwarg

    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    mask = torch.cat([prompt_mask.to(attention_mask.dtype), attention_mask], 1)
    cache = cache_from_kv(kv.to(_dtype_of(lm)), lm.config)
    return lm(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=use_cache,
              **{cache_kwarg(lm): cache}, **kwargs)


def last_hidden(lm, kv, prompt_mask, input_ids, attention_mask) -> torch.Tensor:
    """[B, hidden]: the LM's final hidden state at each row's last token (rows are left-padded)."""
    out = prompted_forward(lm, kv, prompt_mask, input_ids, attention_mask, output_hidden_states=True,
                           logits_to_keep=1)
    return out.hidden_states[-1][:, -1].float()


def _dtype_of(module) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    return torch.float32


def freeze(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    module.eval()
    return module
