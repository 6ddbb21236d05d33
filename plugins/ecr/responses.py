"""Emotion-aligned response generation (ECR stage 3): knowledge prompt -> the whole reply.

As in the official code, the generator's prompt names the recommended movies, entities
related to them, KG facts ("X's relation is Y") and the first sentence of the conversation
model's template with the movies filled in; the generator writes the whole reply, which
replaces the filled template. The paper fine-tunes on filtered movie reviews; those are not
available offline, so the default training pairs are the ReDial recommender turns that
recommend a movie (target = the turn's text, prompt = its movies and the first sentence of
its template filled with them). Users with reviews pass ``responses.reviews_file``: JSON
lines ``{"movie": "<title or entity id>", "text": "..."}``; those pairs are added.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from crsbench.errors import DataError
from crsbench_plugins.ecr.templates import stage_summary, seeded_subset

PROMPT_FORMAT = 2  # 2: whole reply from (movies, entities, facts, first sentence); 1: appended description
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def first_sentence(text: str) -> str:
    """The text up to its first sentence end followed by a space (titles such as "Mr. Deeds
    (2002)" cut it early, as any sentence splitter would)."""
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0] if text else ""


def relation_name(uri: str) -> str:
    """``<http://dbpedia.org/ontology/musicComposer>`` -> ``music composer``."""
    local = uri.rstrip(">").rsplit("/", 1)[-1]
    out = "".join(" " + ch.lower() if ch.isupper() else ch for ch in local)
    return out.strip()


# The relation types ECR's stage 3 reads facts from (src_emo/dataset_dbpedia.py,
# get_one_hop_neighborhood: starring, writer, productionCompany, director, musicComposer)
OFFICIAL_RELATIONS = ("starring", "writer", "production company", "director", "music composer")


class Knowledge:
    """KG facts about a movie, written as "X's relation is Y", from the official five relation
    types (every relation on a graph that has none of them)."""

    def __init__(self, kg, item_names: dict[int, str]):
        self.names = item_names
        id2rel = {i: relation_name(r) for r, i in kg.relation2id.items()}
        keep = set(id2rel.values()) & set(OFFICIAL_RELATIONS) or set(id2rel.values()) - {"self_loop"}
        self.facts: dict[int, list[tuple[str, str]]] = {}
        for head, rel, tail in kg.triples.tolist():
            if head in item_names and head != tail and id2rel[rel] in keep:
                if tail in kg.id2entity:  # the task's readable name of the entity
                    self.facts.setdefault(head, []).append((id2rel[rel], kg.entity_name(tail)))

    def prompt(self, items: list[int], filled_template: str, max_triples: int) -> str:
        """The generator's prompt for a reply recommending ``items`` whose (filled) template is
        ``filled_template``; at most ``max_triples`` facts, taken from the movies in turn."""
        names = [self.names.get(i, str(i)) for i in dict.fromkeys(items)]
        per_item = [[(n, rel, tail) for rel, tail in self.facts.get(i, [])] for i, n in
                    zip(dict.fromkeys(items), names)]
        facts = [f for group in zip_longest_flat(per_item) for f in group][:max_triples]
        related = ", ".join(dict.fromkeys(tail for _, _, tail in facts)) or "none"
        triples = " ".join(f"{n}'s {rel} is {tail}." for n, rel, tail in facts) or "none."
        return (f"Movie Name: {', '.join(names) or 'none'}. Related Entities: {related}. "
                f"Related Knowledge: {triples} First Sentence: {first_sentence(filled_template)} Response:")


def zip_longest_flat(groups: list[list]) -> list[list]:
    """Round k holds the k-th element of every group that has one (facts of each movie in turn)."""
    depth = max((len(g) for g in groups), default=0)
    return [[g[k] for g in groups if k < len(g)] for k in range(depth)]


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
        from crsbench_plugins.ecr.lm_build import build_backbone
        from crsbench_plugins.ecr.lm_train import train_lm

        stage_dir = Path(stage_dir)
        rcfg = dict(cfg["responses"], seed=state.seed)
        from crsbench_plugins.ecr.inputs import fill_template

        knowledge = Knowledge(state.kg, state.item_names)
        examples = []
        for s in train:
            if s["targets"]:
                filled, _ = fill_template(s["response_template"], [state.item_names.get(i, str(i))
                                                                   for i in s["targets"]])
                examples.append({"prompt": knowledge.prompt(s["targets"], filled, rcfg["max_triples"]),
                                 "target": s["response"]})
        examples = seeded_subset(examples, rcfg.get("max_train"), state.seed)
        if rcfg.get("reviews_file"):
            for item, text in read_reviews(rcfg["reviews_file"], state.item_names):
                examples.append({"prompt": knowledge.prompt([item], "", rcfg["max_triples"]), "target": text})
        if cfg["generator"]["backbone"] == "lm":  # fine-tune a copy of the (frozen) LM, as ECR fine-tunes DialoGPT
            import copy

            model, tokenizer = copy.deepcopy(state.lm).requires_grad_(True), state.lm_tokenizer
        else:
            gcfg = dict(cfg["generator"], seed=state.seed, local_files_only=not cfg.get("allow_downloads", False))
            model, tokenizer = build_backbone(gcfg)
        rcfg["cpu"] = str(state.device) == "cpu"
        rcfg.setdefault("mixed_precision", cfg.get("mixed_precision", "no"))
        summary = train_lm(model, tokenizer, examples, rcfg, stage_dir, progress=progress)
        summary = dict(stage_summary(summary), n_examples=len(examples), prompt_format=PROMPT_FORMAT,
                       source="reviews_file + ReDial" if rcfg.get("reviews_file") else "ReDial recommender turns")
        model.eval()
        return cls(model, tokenizer, knowledge, cfg, summary)

    def prompt(self, request: tuple[list[int], str]) -> str:
        """The prompt of one ``(recommended items, filled template)`` request."""
        items, filled = request
        return self.knowledge.prompt(items, filled, self.cfg["responses"]["max_triples"])

    def generate(self, requests: list[tuple[list[int], str]], model=None) -> list[str]:
        """Greedy replies for ``(recommended items, filled template)`` requests, by ``model``
        (default: this generator's; ECR-RL passes its reference or its policy)."""
        from crsbench_plugins.ecr import lm_decode

        rcfg = self.cfg["responses"]
        prompts = [self.prompt(r) for r in requests]
        return lm_decode.generate(model or self.model, self.tokenizer, prompts, max_new_tokens=rcfg["max_new_tokens"],
                                  batch_size=self.cfg["decode"]["batch_size"],
                                  no_repeat_ngram_size=self.cfg["decode"]["no_repeat_ngram_size"], progress=False)
