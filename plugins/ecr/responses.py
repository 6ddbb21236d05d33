"""Emotion-aligned response generation (ECR stage 3): knowledge prompt -> movie description.

The paper fine-tunes on filtered movie reviews; those are not available offline, so the
default training pairs are the ReDial recommender turns that talk about a recommended
movie (target = the turn's text, knowledge = that movie). Users with reviews pass
``responses.reviews_file``: JSON lines ``{"movie": "<title or entity id>", "text": "..."}``;
those pairs are added to the training data.
"""
from __future__ import annotations

import json
from pathlib import Path

from crsbench.errors import DataError
from crsbench_plugins.ecr.templates import _short, seeded_subset


def relation_name(uri: str) -> str:
    """``<http://dbpedia.org/ontology/musicComposer>`` -> ``music composer``."""
    local = uri.rstrip(">").rsplit("/", 1)[-1]
    out = "".join(" " + ch.lower() if ch.isupper() else ch for ch in local)
    return out.strip()


class Knowledge:
    """KG facts about a movie, written as "X's relation is Y"."""

    def __init__(self, kg, item_names: dict[int, str]):
        self.names = item_names
        id2rel = {i: relation_name(r) for r, i in kg.relation2id.items()}
        self.facts: dict[int, list[tuple[str, str]]] = {}
        for head, rel, tail in kg.triples.tolist():
            if head in item_names and head != tail and id2rel[rel] != "self_loop":
                if tail in kg.id2entity:  # the task's readable name of the entity
                    self.facts.setdefault(head, []).append((id2rel[rel], kg.entity_name(tail)))

    def prompt(self, item: int, template: str, max_triples: int) -> str:
        name = self.names.get(item, str(item))
        facts = self.facts.get(item, [])[:max_triples]
        related = ", ".join(dict.fromkeys(tail for _, tail in facts)) or "none"
        triples = " ".join(f"{name}'s {rel} is {tail}." for rel, tail in facts)
        first = template.split(".")[0].strip() if template else ""
        return f"Movie: {name}. Related: {related}. {triples} Template: {first} Description:"


def read_reviews(path: str, item_names: dict[int, str]) -> list[tuple[int, str]]:
    by_title = {name.lower(): item for item, name in item_names.items()}
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"responses.reviews_file: cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            movie, text = row["movie"], row["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path}:{number}: expected {{\"movie\": ..., \"text\": ...}}") from None
        item = int(movie) if str(movie).isdigit() else by_title.get(str(movie).lower())
        if item is not None and text.strip():
            out.append((item, text.strip()))
    return out


class ResponseGenerator:
    def __init__(self, model, tokenizer, knowledge, cfg, summary):
        self.model, self.tokenizer, self.knowledge, self.cfg, self.summary = model, tokenizer, knowledge, cfg, summary

    @classmethod
    def fit(cls, cfg, train, valid, state, stage_dir: Path, progress=True):
        from crsbench_plugins.ecr import generator

        stage_dir = Path(stage_dir)
        rcfg = dict(cfg["responses"], seed=state.seed)
        knowledge = Knowledge(state.kg, state.item_names)
        examples = [{"prompt": knowledge.prompt(s["targets"][0], s["response_template"], rcfg["max_triples"]),
                     "target": s["response"]} for s in train if s["targets"]]
        examples = seeded_subset(examples, rcfg.get("max_train"), state.seed)
        if rcfg.get("reviews_file"):
            for item, text in read_reviews(rcfg["reviews_file"], state.item_names):
                examples.append({"prompt": knowledge.prompt(item, "", rcfg["max_triples"]), "target": text})
        if cfg["generator"]["backbone"] == "lm":  # fine-tune a copy of the (frozen) LM, as ECR fine-tunes DialoGPT
            import copy

            model, tokenizer = copy.deepcopy(state.lm).requires_grad_(True), state.lm_tokenizer
        else:
            gcfg = dict(cfg["generator"], seed=state.seed, local_files_only=not cfg.get("allow_downloads", False))
            model, tokenizer = generator.build_backbone(gcfg)
        rcfg["cpu"] = str(state.device) == "cpu"
        rcfg.setdefault("mixed_precision", cfg.get("mixed_precision", "no"))
        summary = generator.train_lm(model, tokenizer, examples, rcfg, stage_dir, progress=progress)
        summary = dict(_short(summary), n_examples=len(examples),
                       source="reviews_file + ReDial" if rcfg.get("reviews_file") else "ReDial recommender turns")
        model.eval()
        return cls(model, tokenizer, knowledge, cfg, summary)

    def generate(self, requests: list[tuple[int, str]]) -> list[str]:
        from crsbench_plugins.ecr import generator

        rcfg = self.cfg["responses"]
        prompts = [self.knowledge.prompt(item, tpl, rcfg["max_triples"]) for item, tpl in requests]
        return generator.generate(self.model, self.tokenizer, prompts, max_new_tokens=rcfg["max_new_tokens"],
                                  batch_size=self.cfg["decode"]["batch_size"],
                                  no_repeat_ngram_size=self.cfg["decode"]["no_repeat_ngram_size"], progress=False)
