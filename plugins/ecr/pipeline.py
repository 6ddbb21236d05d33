"""ECR's stages wired together: training (``train_all``), ranking and replying.

Order (each stage has its own directory under ``checkpoints/`` and is skipped when done):

0. emotion labels of seeker utterances (annotator -> classifier), ECR only
1. the frozen LM: DialoGPT (paper) or, on CPU, a small GPT-2 first trained on the training
   dialogues; the text encoder's token states of every context (cached)
2. stage 1, pre-training: the KG prompt encoder learns to make the frozen LM predict the
   entities of the response from context + response (UniCRS train_pre)
3. conversation: a copy of the pre-trained encoder with conversation prompts makes the LM
   write the reply with ``<movie>`` slots (UniCRS train_conv)
4. stage 2, recommendation: another copy with recommendation prompts; the LM reads the
   context and the generated template, its last hidden state scores every entity
   (UniCRS/ECR train_rec), cross-entropy weighted by the seeker's feedback (ECR)
5. stage 3: the emotion-aligned generator (responses.py)

Kept apart from model.py so that registering the plugin imports none of this.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from crsbench.results import peak_memory_mb
from crsbench_plugins.ecr import features as feat
from crsbench_plugins.ecr.checkpoints import read_done
# the helpers templates.py, responses.py and backbone.py share live in inputs.py (no cycle back here)
from crsbench_plugins.ecr.inputs import PLACEHOLDER, Inputs, fill_template, n_batches
from crsbench_plugins.ecr.prompt_model import (CoAppearance, KGPromptEncoder, LMShape, freeze, last_hidden,
                                               relation_edges)
from crsbench_plugins.ecr.train_stage import train_stage

log = logging.getLogger("crsbench")


@dataclass
class ECRState:
    config: dict
    switches: dict
    kg: object
    items: list[int]
    item_names: dict[int, str]
    device: torch.device = torch.device("cpu")
    encoder: object = None           # CachedEncoder (sentence embeddings + token states)
    emotions: object = None          # EmotionLabeler, or None when emotions are off
    co_appearance: CoAppearance = None
    lm: object = None                # the frozen causal LM
    lm_tokenizer: object = None
    rec: KGPromptEncoder = None      # recommendation prompts
    ent_vecs: torch.Tensor = None    # entity embeddings of ``rec`` (items are scored against them)
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
        return torch.as_tensor(self.items, dtype=torch.long, device=self.device)


class CachedEncoder:
    """The frozen text encoder: sentence embeddings (emotion classifier) and token states
    (prompt encoder); training inputs go through the on-disk caches."""

    def __init__(self, cfg: dict, device, progress: bool):
        from crsbench_plugins.ecr.text_encoder import EmbeddingCache, TokenStateCache, get_encoder

        self.encoder = get_encoder(cfg["text_encoder"], pooling=cfg["text_pooling"],
                                   max_length=cfg["text_max_length"], device=str(device),
                                   local_files_only=not cfg.get("allow_downloads", False))
        self.token_encoder = get_encoder(cfg["text_encoder"], pooling=cfg["text_pooling"],
                                         max_length=cfg["prompt_max_length"], device=str(device),
                                         local_files_only=not cfg.get("allow_downloads", False))
        self.cache = EmbeddingCache(self.encoder)
        self.token_cache = TokenStateCache(self.token_encoder)
        self.progress = progress

    def encode(self, texts: list[str]) -> torch.Tensor:
        if len(texts) > 512:
            return self.cache.embed(texts, progress=self.progress)
        return self.encoder.encode(texts)

    def token_states(self, texts: list[str], cached: bool):
        """``cached``: training lists, stored on disk; otherwise kept in memory only."""
        return self.token_cache.states(texts, progress=self.progress and cached, persist=cached)

    @property
    def token_dim(self) -> int:
        return self.token_encoder.dim

    @property
    def sep_token(self) -> str | None:
        """What ends each turn of the prompt text (the official code: the text tokenizer's
        ``sep_token``)."""
        return self.token_encoder.load_model()[0].sep_token


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


def rec_scores(encoder: KGPromptEncoder, lm, batch: dict, use_prefix: bool = True,
               ent: torch.Tensor | None = None) -> torch.Tensor:
    """[B, num_entities]: the LM's last hidden state (after the recommendation prompt) against
    every entity embedding."""
    kv, prompt_mask, ent = encoder(batch["entities"], batch["tokens"], batch["token_mask"], "rec",
                                   batch["entity_emotions"], use_prefix=use_prefix, ent=ent)
    hidden = last_hidden(lm, kv, prompt_mask, batch["input_ids"], batch["attention_mask"])
    return hidden @ ent.T


def _label_batches(inputs: Inputs, state: ECRState, label_lists: list[list[int]],
                   weight_lists: list[list[float]] | None, batch_size: int, seed: int, epoch: int):
    """Shuffled batches (order from seed and epoch only) with one row per (sample, label): the
    official datasets flatten a sample with several labels into one example per label."""
    from crsbench import distributed

    order = np.random.default_rng([seed, epoch]).permutation(len(label_lists))
    for start in range(0, len(order), batch_size):
        whole = order[start:start + batch_size]
        idx = distributed.shard(whole)  # all of it with one process
        n_rows = sum(len(label_lists[i]) for i in whole)
        scale = sum(len(label_lists[i]) for i in idx) / n_rows
        if not idx:  # a short last batch leaves this process nothing: a dummy with no weight
            idx, scale = list(whole[:1]), 0.0
        batch = _label_rows(inputs.batch(idx, state), idx, label_lists, weight_lists, state.device)
        batch["scale"] = scale
        yield batch


def _label_rows(batch: dict, idx, label_lists, weight_lists, device) -> dict:
    """Adds the (sample, label) rows of the samples ``idx`` to ``batch``."""
    rows, labels, weights = [], [], []
    for r, i in enumerate(idx):
        for j, label in enumerate(label_lists[i]):
            rows.append(r)
            labels.append(label)
            weights.append(weight_lists[i][j] if weight_lists else 1.0)
    batch["label_rows"] = torch.as_tensor(rows, dtype=torch.long, device=device)
    batch["labels"] = torch.as_tensor(labels, dtype=torch.long, device=device)
    batch["weights"] = torch.as_tensor(weights, dtype=torch.float32, device=device)
    return batch


def weighted_rec_loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """mean(w * CE) over the (sample, label) rows, as ECR's model_gpt2.py normalises it
    (w = 1 everywhere gives UniCRS's plain mean)."""
    losses = F.cross_entropy(logits[batch["label_rows"]], batch["labels"], reduction="none")
    return (losses * batch["weights"]).mean()


SELECT_MODES = {"valid_loss": "min", "valid_recall@10": "max", "valid_recall@50": "max"}


def selection(stage_cfg: dict) -> tuple[str, str]:
    from crsbench.errors import UserError

    key = stage_cfg.get("select") or "valid_loss"
    if key not in SELECT_MODES:
        raise UserError(f"stage2.select={key!r} is not one of {', '.join(SELECT_MODES)}")
    return key, SELECT_MODES[key]


# -- training --------------------------------------------------------------------------------
def train_all(cfg: dict, sw: dict, data, context) -> ECRState:
    from crsbench.seeding import seed_everything
    from crsbench_plugins.ecr import backbone, responses, templates
    from crsbench_plugins.ecr.emotion_labels import EmotionLabeler

    # deterministic kernels for every stage: the same command gives the same weights
    seed_everything(context.seed, deterministic=True)
    ckpt = Path(context.checkpoint_dir)
    progress = getattr(context, "progress", True)
    device = torch.device(context.device)
    kg = data.kg
    state = ECRState(cfg, sw, kg, list(data.items), dict(data.item_names), device=device, seed=context.seed,
                     progress=progress)
    # ECR's vocabulary has one slot token, <movie>; a task's own placeholder is mapped onto it
    train = with_slot_token(data.splits["train"], data.item_placeholder)
    valid = with_slot_token(data.splits["valid"], data.item_placeholder)
    if cfg.get("max_train_samples"):
        train, valid = train[:cfg["max_train_samples"]], valid[:max(20, cfg["max_train_samples"] // 5)]

    with _Timer(state, "text_encoder"):
        state.encoder = CachedEncoder(cfg, device, progress)
    if sw["local_emotion"] or sw["global_entities"]:
        with _Timer(state, "emotion_labels"):
            seed_everything(context.seed)
            state.emotions = EmotionLabeler.fit(cfg["emotion"], feat.seeker_texts(train), state.encoder,
                                                ckpt / "emotion", seed=context.seed,
                                                mention_spans=data.mention_spans)
            state.summaries["emotion"] = state.emotions.report
    if sw["global_entities"]:
        with _Timer(state, "global_entities"):
            emotion_of = state.emotions.vectors(feat.seeker_texts(train))
            state.co_appearance = CoAppearance.from_dialogues(kg.num_entities, feat.emotion_dialogues(train, emotion_of))
            state.summaries["global_entities"] = {"co_occurring_pairs": state.co_appearance.n_pairs}

    with _Timer(state, "lm"):
        seed_everything(context.seed)
        state.lm, state.lm_tokenizer, lm_summary = backbone.frozen_lm(cfg, train, ckpt / "lm", context.seed,
                                                                      device, progress)
        freeze(state.lm)
        state.summaries["lm"] = lm_summary

    seed_everything(context.seed)
    edges, n_relations = relation_edges(kg.triples, cfg["kg"].get("max_relations"))
    encoder = KGPromptEncoder(
        LMShape(state.lm.config), token_dim=state.encoder.token_dim, num_entities=kg.num_entities,
        num_relations=n_relations, edges=edges, num_bases=cfg["kg"]["num_bases"],
        n_prefix_rec=cfg["n_prefix_rec"], n_prefix_conv=cfg["n_prefix_conv"], n_emotions=feat.N_EMOTIONS,
        local_emotion=sw["local_emotion"], co_appearance=state.co_appearance).to(device)

    # Stage 1: pre-training on the entities of the response, from context + response, for
    # every turn (seeker turns too) that mentions any
    s1_train, s1_labels = feat.every_turn(train)
    state.summaries["stage1_examples"] = {"turns": len(s1_train),
                                          "seeker_turns": sum(s.get("response_role") == "seeker" for s in s1_train)}
    with _Timer(state, "stage1_inputs"):  # a finished stage is loaded: its inputs are not built again
        s1_in = None if read_done(ckpt / "stage1_pretrain") else Inputs(state, s1_train, None, cached=True,
                                                                         with_response=True)
    lm = state.lm
    with _Timer(state, "stage1_pretrain"):
        s1 = cfg["stage1"]
        state.summaries["stage1_pretrain"] = train_stage(
            "stage1", encoder,
            lambda epoch: _label_batches(s1_in, state, s1_labels, None, s1["batch_size"], context.seed, epoch),
            lambda module, batch: weighted_rec_loss(rec_scores(module, lm, batch, use_prefix=False), batch),
            s1, ckpt / "stage1_pretrain", steps_per_epoch=n_batches(len(s1_labels), s1["batch_size"]),
            progress=progress)
    s1_in = None  # the token states are not needed after the stage

    # Conversation: prompts that make the frozen LM write the reply with <movie> slots.
    with _Timer(state, "templates"):
        seed_everything(context.seed)
        state.generator = templates.TemplateGenerator.fit(cfg, train, valid, state, copy.deepcopy(encoder),
                                                          ckpt / "templates", progress=progress)
        state.summaries["templates"] = state.generator.summary

    # Stage 2: recommendation over the catalogue, feedback-weighted.
    entity_of_item = state.item_index
    fb = cfg["stage2"]["feedback_weights"]
    rec_train = [s for s in train if s["targets"]]
    s2_labels = [[int(t) for t in s["targets"]] for s in rec_train]
    s2_weights = None
    # A task without per-target seeker feedback (Task.has_feedback = False) leaves the key out:
    # every target then weighs 1, i.e. the loss is UniCRS's, and the result says so.
    has_feedback = all("target_feedback" in s for s in rec_train)
    if sw["feedback_weighting"] and has_feedback:
        s2_weights = [[fb[f] for f in s["target_feedback"]] for s in rec_train]
    elif sw["feedback_weighting"]:
        log.warning("ECR: the task has no per-target feedback; stage 2 weighs every target 1")
    state.summaries["feedback_weighting"] = ("on" if s2_weights is not None else
                                             "off: the task has no feedback" if sw["feedback_weighting"]
                                             else "off")
    valid_rec = [s for s in valid if s["targets"]]
    with _Timer(state, "stage2_inputs"):
        s2_in = valid_in = None
        if not read_done(ckpt / "stage2_recommendation"):
            # the context alone, no reply template: the official commands do not pass
            # --use_resp, so train_rec.py reads no template in any split
            s2_in = Inputs(state, rec_train, None, cached=True)
            valid_in = Inputs(state, valid_rec, None, cached=True)
    position = {item: k for k, item in enumerate(state.items)}
    valid_labels = [[int(t) for t in s["targets"]] for s in valid_rec]
    valid_weights = ([[fb[f] for f in s["target_feedback"]] for s in valid_rec]
                     if s2_weights is not None else None)

    def validate(module):
        """Recall over the catalogue and the training loss (over all entities, feedback-
        weighted as in training), as the official train_rec.py reports them."""
        hits, loss_sum, rows = {10: [], 50: []}, 0.0, 0
        with torch.no_grad():
            ent = module.entity_embeds()
            for start in range(0, len(valid_in), 128):
                idx = list(range(start, min(start + 128, len(valid_in))))
                batch = _label_rows(valid_in.batch(idx, state), idx, valid_labels, valid_weights, state.device)
                logits = rec_scores(module, lm, batch, ent=ent)
                loss_sum += float(weighted_rec_loss(logits, batch)) * len(batch["labels"])
                rows += len(batch["labels"])
                scores = logits[:, entity_of_item]
                top = scores.topk(min(50, scores.shape[1]), dim=1).indices.cpu().tolist()
                for row, i in enumerate(idx):
                    for t in valid_rec[i]["targets"]:
                        pos = top[row].index(position[t]) if position[t] in top[row] else 99
                        for k in hits:
                            hits[k].append(pos < k)
        out = {f"valid_recall@{k}": float(np.mean(v)) if v else 0.0 for k, v in hits.items()}
        out["valid_loss"] = loss_sum / max(1, rows)
        return out

    with _Timer(state, "stage2_recommendation"):
        seed_everything(context.seed)
        s2 = cfg["stage2"]
        state.summaries["stage2_recommendation"] = train_stage(
            "stage2", encoder,
            lambda epoch: _label_batches(s2_in, state, s2_labels, s2_weights, s2["batch_size"], context.seed, epoch),
            lambda module, batch: weighted_rec_loss(rec_scores(module, lm, batch), batch),
            s2, ckpt / "stage2_recommendation", steps_per_epoch=n_batches(len(s2_labels), s2["batch_size"]),
            validate=validate, progress=progress, select=selection(s2))
    s2_in = valid_in = None
    state.encoder.token_cache.forget()
    state.rec = encoder.eval()
    with torch.no_grad():
        state.ent_vecs = state.rec.entity_embeds()

    # Stage 3: emotion-aligned response generation from knowledge prompts.
    if cfg.get("emotion_response", True):
        with _Timer(state, "stage3_responses"):
            seed_everything(context.seed)
            state.describer = responses.ResponseGenerator.fit(cfg, train, valid, state, ckpt / "responses",
                                                              progress=progress)
            state.summaries["stage3_responses"] = state.describer.summary
    return state


def with_slot_token(samples, placeholder: str | None) -> list[dict]:
    """The samples, with the task's item placeholder in ``response_template`` written as ECR's
    slot token (copies: samples are the task's and read-only)."""
    if not placeholder or placeholder == PLACEHOLDER:
        return list(samples)
    return [{**s, "response_template": s["response_template"].replace(placeholder, PLACEHOLDER)} for s in samples]


# -- inference ---------------------------------------------------------------------------------
def templates_for(state: ECRState, batch: list[dict]) -> list[str]:
    """The conversation model's template for each sample, generated once and kept."""
    missing = [s for s in batch if s["sample_id"] not in state.templates]
    if missing:
        for s, text in zip(missing, state.generator.generate(missing)):
            state.templates[s["sample_id"]] = text
    return [state.templates[s["sample_id"]] for s in batch]


def rank_items(state: ECRState, batch: list[dict], top: int | None = None) -> list[list[int]]:
    inputs = Inputs(state, batch, None, cached=False)  # the context alone, as in training
    with torch.no_grad():
        scores = rec_scores(state.rec, state.lm, inputs.batch(range(len(batch)), state), ent=state.ent_vecs)
        scores = scores[:, state.item_index]
    order = scores.argsort(dim=1, descending=True)
    if top:
        order = order[:, :top]
    items = np.asarray(state.items)
    out = [items[row].tolist() for row in order.cpu().numpy()]
    for s, ranking in zip(batch, out):
        state.rankings[s["sample_id"]] = ranking[:20]
    return out


def reply_requests(state: ECRState, batch: list[dict], templates: list[str] | None = None) -> list[tuple[str, list[int]]]:
    """Per sample: the conversation model's template (or the given ``templates``, with ECR's
    slot token) filled with the top recommendations not already in the context, and the
    items that fill its slots (empty: the template has none)."""
    missing = [s for s in batch if s["sample_id"] not in state.rankings]
    for start in range(0, len(missing), 64):
        rank_items(state, missing[start:start + 64], top=20)
    out = []
    for s, tpl in zip(batch, templates if templates is not None else templates_for(state, batch)):
        seen = set(s["context_items"])
        ranked = [i for i in state.rankings[s["sample_id"]] if i not in seen] or state.rankings[s["sample_id"]]
        names = [state.item_names.get(i, str(i)) for i in ranked]
        text, used = fill_template(tpl, names)
        out.append((text, ranked[:len(used)]))
    return out


def respond(state: ECRState, batch: list[dict]) -> list[str]:
    """The filled template; where it recommends a movie and stage 3 is on, the emotion-aligned
    generator's whole reply instead (the filled template when the generator writes nothing)."""
    requests = reply_requests(state, batch)
    replies = [text for text, _ in requests]
    slots = [k for k, (_, items) in enumerate(requests) if items] if state.describer is not None else []
    if slots:
        generated = state.describer.generate([(requests[k][1], requests[k][0]) for k in slots])
        for k, text in zip(slots, generated):
            if text.strip():
                replies[k] = " ".join(text.split())
    return replies
