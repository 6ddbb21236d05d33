"""ECR's stages wired together: training (``train_all``), ranking and replying.

Kept apart from model.py so that registering the plugin imports none of this (torch,
torch_geometric, transformers load only when a run starts).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from crsbench.results import peak_memory_mb
from crsbench_plugins.ecr import features as feat
from crsbench_plugins.ecr.recommender import FusionRecommender, relation_edges, stage1_loss, stage2_loss
from crsbench_plugins.ecr.train_stage import train_stage

log = logging.getLogger("crsbench")
PLACEHOLDER = "<movie>"


@dataclass
class ECRState:
    config: dict
    switches: dict
    kg: object
    items: list[int]
    item_names: dict[int, str]
    encoder: object = None
    emotions: object = None          # EmotionLabeler, or None when emotions are off
    global_table: np.ndarray = None
    rec: FusionRecommender = None
    ent_vecs: torch.Tensor = None
    generator: object = None         # templates.TemplateGenerator
    describer: object = None         # responses.ResponseGenerator, or None
    seed: int = 0
    progress: bool = True
    summaries: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    peak_rss_mb: dict = field(default_factory=dict)  # stage -> process peak RSS at its end (monotonic)
    templates: dict = field(default_factory=dict)   # sample_id -> generated template
    rankings: dict = field(default_factory=dict)    # sample_id -> top item ids

    @property
    def item_index(self) -> torch.Tensor:
        return torch.as_tensor(self.items, dtype=torch.long)


class CachedEncoder:
    """The frozen text encoder; large lists (training inputs) go through the on-disk cache."""

    def __init__(self, cfg: dict, device: str, progress: bool):
        from crsbench_plugins.ecr.text_encoder import EmbeddingCache, get_encoder

        self.encoder = get_encoder(cfg["text_encoder"], pooling=cfg["text_pooling"],
                                   max_length=cfg["text_max_length"], device=device)
        self.cache = EmbeddingCache(self.encoder)
        self.progress = progress

    def encode(self, texts: list[str]) -> torch.Tensor:
        if len(texts) > 512:
            return self.cache.embed(texts, progress=self.progress)
        return self.encoder.encode(texts)


class _Timer:
    def __init__(self, state: ECRState, name: str):
        self.state, self.name = state, name

    def __enter__(self):
        self.t0 = time.perf_counter()
        log.info("ECR: %s", self.name)

    def __exit__(self, *exc):
        self.state.timings[self.name] = self.state.timings.get(self.name, 0.0) + time.perf_counter() - self.t0
        # the process's peak so far: a stage's value covers the stages before it too
        self.state.peak_rss_mb[self.name] = peak_memory_mb()


# -- inputs ------------------------------------------------------------------------------------
def build_inputs(state: ECRState, samples: list[dict], templates: list[str] | None) -> dict[str, torch.Tensor]:
    """Tensors for a list of samples (``templates``: one per sample, or None for stage 1)."""
    cfg = state.config
    texts = [feat.context_text(s, cfg["context_turns"]) for s in samples]
    out = {"text": state.encoder.encode(texts)}
    if templates is not None:
        out["template"] = state.encoder.encode([t or "" for t in templates])
        out["has_template"] = torch.as_tensor([bool(t) for t in templates])
    out["entities"] = torch.as_tensor(feat.pad_entities([s["context_entities"] for s in samples],
                                                        cfg["max_context_entities"]))
    m = out["entities"].shape[1]
    ent_emo = np.zeros((len(samples), m, feat.N_EMOTIONS), dtype=np.float32)
    user_emo = np.zeros((len(samples), feat.N_EMOTIONS), dtype=np.float32)
    if state.emotions is not None:
        emotion_of = state.emotions.vectors(feat.seeker_texts(samples))
        for i, s in enumerate(samples):
            per_turn = feat.turn_emotions(s, emotion_of)
            e = feat.entity_emotions(s, per_turn)[-m:]
            ent_emo[i, :len(e)] = e
            user_emo[i] = feat.user_emotion(per_turn)
    out["entity_emotions"] = torch.as_tensor(ent_emo)
    out["user_emotion"] = torch.as_tensor(user_emo)
    return out


def _slice(inputs: dict, idx) -> dict:
    idx = torch.as_tensor(idx, dtype=torch.long)
    return {k: v[idx] for k, v in inputs.items()}


def _label_batches(inputs: dict, label_lists: list[list[int]], weight_lists: list[list[float]] | None,
                   batch_size: int, seed: int, epoch: int):
    """Shuffled batches (order from seed and epoch only) with one row per (sample, label)."""
    order = np.random.default_rng([seed, epoch]).permutation(len(label_lists))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = _slice(inputs, idx)
        rows, labels, weights = [], [], []
        for r, i in enumerate(idx):
            for j, label in enumerate(label_lists[i]):
                rows.append(r)
                labels.append(label)
                weights.append(weight_lists[i][j] if weight_lists else 1.0)
        batch["label_rows"] = torch.as_tensor(rows, dtype=torch.long)
        batch["labels"] = torch.as_tensor(labels, dtype=torch.long)
        batch["weights"] = torch.as_tensor(weights, dtype=torch.float32)
        yield batch


# -- training --------------------------------------------------------------------------------
def train_all(cfg: dict, sw: dict, data, context) -> ECRState:
    from crsbench.seeding import seed_everything
    from crsbench_plugins.ecr import responses, templates
    from crsbench_plugins.ecr.emotion_labels import EmotionLabeler

    torch.set_num_threads(max(1, torch.get_num_threads()))
    ckpt = Path(context.checkpoint_dir)
    progress = getattr(context, "progress", True)
    state = ECRState(cfg, sw, data.extra["kg"], list(data.items), dict(data.item_names), seed=context.seed,
                     progress=progress)
    train = list(data.splits["train"])
    valid = list(data.splits["valid"])
    if cfg.get("max_train_samples"):
        train, valid = train[:cfg["max_train_samples"]], valid[:max(20, cfg["max_train_samples"] // 5)]

    with _Timer(state, "text_encoder"):
        state.encoder = CachedEncoder(cfg, context.device, progress)
    if sw["local_emotion"] or sw["global_entities"]:
        with _Timer(state, "emotion_labels"):
            seed_everything(context.seed)
            state.emotions = EmotionLabeler.fit(cfg["emotion"], feat.seeker_texts(train), state.encoder,
                                                ckpt / "emotion", seed=context.seed)
            state.summaries["emotion"] = state.emotions.report
    with _Timer(state, "global_entities"):
        emotion_of = state.emotions.vectors(feat.seeker_texts(train)) if state.emotions else {}
        state.global_table = feat.global_entities(train, emotion_of, cfg["kg"]["global_top_k"])

    with _Timer(state, "inputs"):
        train_in = build_inputs(state, train, [s["response_template"] for s in train])
        valid_in = build_inputs(state, valid, [s["response_template"] for s in valid])

    seed_everything(context.seed)
    kg = state.kg
    edges, n_relations = relation_edges(kg.triples, kg.relation2id.get("self_loop", -1),
                                        cfg["kg"].get("max_relations"))
    state.rec = FusionRecommender(
        kg.num_entities, n_relations, edges, text_dim=train_in["text"].shape[1], dim=cfg["kg"]["dim"],
        num_bases=cfg["kg"]["num_bases"], emotion_dim=cfg["emotion"]["dim"], n_prefix=cfg["n_prefix"],
        global_table=state.global_table, local_emotion=sw["local_emotion"], global_entities=sw["global_entities"])

    # Stage 1: emotional semantic fusion, pre-trained to predict the response's entities.
    s1_in = {k: v for k, v in train_in.items() if k not in ("template", "has_template")}
    s1_labels = [list(dict.fromkeys(list(s["response_entities"]) + list(s["targets"]))) for s in train]
    keep = [i for i, labels in enumerate(s1_labels) if labels]
    s1_in, s1_labels = _slice(s1_in, keep), [s1_labels[i] for i in keep]
    with _Timer(state, "stage1_fusion"):
        state.summaries["stage1_fusion"] = train_stage(
            "stage1", state.rec,
            lambda epoch: _label_batches(s1_in, s1_labels, None, cfg["stage1"]["batch_size"], context.seed, epoch),
            stage1_loss, cfg["stage1"], ckpt / "stage1_fusion", progress=progress)

    # Conversation templates: the reply with <movie> slots; its output feeds stage 2.
    with _Timer(state, "templates"):
        seed_everything(context.seed)
        state.generator = templates.TemplateGenerator.fit(cfg, train, valid, state, ckpt / "templates",
                                                          progress=progress)
        state.summaries["templates"] = state.generator.summary

    # Stage 2: emotion-aware item recommendation, feedback-weighted.
    position = {item: k for k, item in enumerate(state.items)}
    fb = cfg["stage2"]["feedback_weights"]
    rec_idx = [i for i, s in enumerate(train) if s["targets"]]
    s2_labels = [[position[t] for t in train[i]["targets"]] for i in rec_idx]
    s2_weights = [[fb[f] if sw["feedback_weighting"] else 1.0 for f in train[i]["target_feedback"]]
                  for i in rec_idx]
    s2_in = _slice(train_in, rec_idx)
    valid_rec = [s for s in valid if s["targets"]]
    valid_rec_in = _slice(valid_in, [i for i, s in enumerate(valid) if s["targets"]])
    item_index = state.item_index

    def validate(module):
        with torch.no_grad():
            scores = module.scores(valid_rec_in, candidates=item_index)
        ranks = scores.argsort(dim=1, descending=True)
        hits = {10: [], 50: []}
        for row, s in enumerate(valid_rec):
            top = ranks[row, :50].tolist()
            for t in s["targets"]:
                pos = top.index(position[t]) if position[t] in top else 99
                for k in hits:
                    hits[k].append(pos < k)
        return {f"valid_recall@{k}": float(np.mean(v)) for k, v in hits.items()}

    with _Timer(state, "stage2_recommendation"):
        seed_everything(context.seed)
        state.summaries["stage2_recommendation"] = train_stage(
            "stage2", state.rec,
            lambda epoch: _label_batches(s2_in, s2_labels, s2_weights, cfg["stage2"]["batch_size"],
                                         context.seed, epoch),
            lambda module, batch: stage2_loss(module, batch, item_index), cfg["stage2"],
            ckpt / "stage2_recommendation", validate=validate, progress=progress)
    state.rec.eval()
    with torch.no_grad():
        state.ent_vecs = state.rec.entity_vectors()

    # Stage 3: emotion-aligned response generation from knowledge prompts.
    if cfg.get("emotion_response", True):
        with _Timer(state, "stage3_responses"):
            seed_everything(context.seed)
            state.describer = responses.ResponseGenerator.fit(cfg, train, valid, state, ckpt / "responses",
                                                              progress=progress)
            state.summaries["stage3_responses"] = state.describer.summary
    return state


# -- inference ---------------------------------------------------------------------------------
def _templates_for(state: ECRState, batch: list[dict]) -> list[str]:
    missing = [s for s in batch if s["sample_id"] not in state.templates]
    if missing:
        for s, text in zip(missing, state.generator.generate(missing)):
            state.templates[s["sample_id"]] = text
    return [state.templates[s["sample_id"]] for s in batch]


def rank_items(state: ECRState, batch: list[dict], top: int | None = None) -> list[list[int]]:
    inputs = build_inputs(state, batch, _templates_for(state, batch))
    with torch.no_grad():
        scores = state.rec.scores(inputs, candidates=state.item_index, ent_vecs=state.ent_vecs)
    order = scores.argsort(dim=1, descending=True)
    if top:
        order = order[:, :top]
    items = np.asarray(state.items)
    out = [items[row].tolist() for row in order.numpy()]
    for s, ranking in zip(batch, out):
        state.rankings[s["sample_id"]] = ranking[:20]
    return out


def fill_template(template: str, names: list[str]) -> tuple[str, list[str]]:
    """Replace each ``<movie>`` slot with the next recommended title; returns the names used."""
    parts = template.split(PLACEHOLDER)
    used = []
    text = parts[0]
    for k, part in enumerate(parts[1:]):
        name = names[k] if k < len(names) else names[-1] if names else "a movie"
        used.append(name)
        text += name + part
    return " ".join(text.split()), used


def respond(state: ECRState, batch: list[dict]) -> list[str]:
    missing = [s for s in batch if s["sample_id"] not in state.rankings]
    for start in range(0, len(missing), 64):
        rank_items(state, missing[start:start + 64], top=20)
    tpls = _templates_for(state, batch)
    replies, knowledge_items, slots = [], [], []
    for s, tpl in zip(batch, tpls):
        seen = set(s["context_items"])
        ranked = [i for i in state.rankings[s["sample_id"]] if i not in seen] or state.rankings[s["sample_id"]]
        names = [state.item_names.get(i, str(i)) for i in ranked]
        text, used = fill_template(tpl, names)
        replies.append(text)
        if used and state.describer is not None:
            slots.append(len(replies) - 1)
            knowledge_items.append((ranked[0], tpl))
    if slots:
        descriptions = state.describer.generate(knowledge_items)
        for k, desc in zip(slots, descriptions):
            if desc:
                replies[k] = f"{replies[k]} {desc}".strip()
    return replies
