"""An example crsbench task plugin: book-recommendation dialogues with a knowledge graph.

The data (books.json, in this package) holds ten books and eight short dialogues in which
"@3" marks a mention of book 3. The task turns every recommender turn into one sample and
exposes a graph of books, authors and genres, so graph models (unicrs, ecr) run on it too.
"""
from __future__ import annotations

import hashlib
import json
import re
from importlib import resources

import numpy as np

from crsbench import KnowledgeGraph, Task, TaskData, hookimpl

PLACEHOLDER = "<item>"  # what replaces a book mention in a response template


def read_data() -> tuple[dict, str]:
    raw = resources.files(__package__).joinpath("books.json").read_bytes()
    return json.loads(raw), hashlib.sha256(raw).hexdigest()


class BookGraph(KnowledgeGraph):
    """Entities: the books (their ids are the item ids), then authors, then genres."""

    def __init__(self, books: list[dict]):
        self.titles = {b["id"]: b["title"] for b in books}
        self.entity2id = {f"book:{b['id']}": b["id"] for b in books}
        for kind in ("author", "genre"):
            for b in books:
                self.entity2id.setdefault(f"{kind}:{b[kind]}", len(self.entity2id))
        self.relation2id = {"author": 0, "genre": 1}
        self.item_ids = sorted(self.titles)
        self.edges = [(b["id"], self.relation2id[kind], self.entity2id[f"{kind}:{b[kind]}"])
                      for b in books for kind in ("author", "genre")]

    @property
    def triples(self):
        return np.asarray(self.edges, dtype=np.int64)

    def entity_name(self, entity_id: int) -> str:
        key = self.id2entity.get(entity_id, str(entity_id))
        return self.titles.get(entity_id) or key.split(":", 1)[-1]


def mentions(text: str) -> list[int]:
    """``"try @3 or @12"`` -> ``[3, 12]``."""
    return [int(word.strip("@.,!?")) for word in text.split() if word.startswith("@")]


def spell(text: str, titles: dict[int, str], placeholder: str | None = None) -> str:
    """Write every mention as its title (or as the placeholder)."""
    for item in sorted(set(mentions(text)), reverse=True):  # @12 before @1
        text = text.replace(f"@{item}", placeholder or titles[item])
    return text


def samples_of(dialogue: dict, titles: dict[int, str]) -> list[dict]:
    out, turns = [], dialogue["turns"]
    for k, (role, text) in enumerate(turns):
        if role != "recommender":
            continue
        context = turns[:k]
        items = [item for _, t in context for item in mentions(t)]
        last_turn = {item: i for i, (_, t) in enumerate(context) for item in mentions(t)}
        entities = list(dict.fromkeys(items))
        out.append({
            "sample_id": f"{dialogue['id']}:{k}", "dialog_id": dialogue["id"], "turn": k,
            "context": [spell(t, titles) for _, t in context], "context_roles": [r for r, _ in context],
            "context_items": items, "context_entities": entities,
            "context_entity_turns": [last_turn[e] for e in entities],
            "targets": mentions(text), "response": spell(text, titles),
            "response_template": spell(text, titles, PLACEHOLDER), "response_entities": mentions(text),
        })
    return out


class BookTask(Task):
    name = "example-books"
    version = "1.0"
    description = "Ten books, eight hand-written recommendation dialogues (tutorial example)."
    protocols = ("standard", "dedup")
    has_feedback = False          # the seekers' reactions are not labelled
    item_placeholder = PLACEHOLDER

    def load(self, limit=None) -> TaskData:
        data, _ = read_data()
        titles = {b["id"]: b["title"] for b in data["books"]}
        splits = {"train": [], "valid": [], "test": []}
        for dialogue in data["dialogues"]:
            splits[dialogue["split"]].append(dialogue)
        if limit:
            splits["test"] = splits["test"][:limit]
        samples = {name: [s for d in dialogues for s in samples_of(d, titles)]
                   for name, dialogues in splits.items()}
        return TaskData(splits=samples, items=sorted(titles), item_names=titles, kg=BookGraph(data["books"]))

    def data_info(self) -> dict:
        _, sha = read_data()
        return {"variant": "bundled", "sha256": sha, "files": {"books.json": sha}, "has_feedback": False}

    def find_items(self, text: str) -> list[int]:
        data, _ = read_data()
        return [b["id"] for b in data["books"] if b["title"] in text]

    def mention_spans(self, text: str) -> list[tuple[int, int]]:
        data, _ = read_data()
        return [m.span() for b in data["books"] for m in re.finditer(re.escape(b["title"]), text)]


@hookimpl
def register_tasks(register):
    register(BookTask)
