"""UniCRS's DBpedia-linked INSPIRED dialogues -> one sample per recommender turn (pure python).

Each line of ``*_data_dbpedia.jsonl`` is one dialogue: a list of turns ``{text, role, movie,
entity_link, entity_name, movie_link, movie_name}``. Movies are plain names in ``text``;
``movie_link`` holds the DBpedia URI of each linked movie mention, ``movie_name`` its surface
form (aligned one to one), ``entity_link`` the other linked entities. The rules follow UniCRS
(``src/data/inspired/process.py`` for the reference file, ``process_mask.py`` for the
recommender-turn samples its conversation model uses), see README.md:

- turns are kept as they are (INSPIRED never has two consecutive turns of one role);
- every RECOMMENDER turn is a sample; every dialogue opens with one, whose context is empty
  (UniCRS writes it as ``[""]``);
- targets: the catalogue items among the turn's ``movie_link``, distinct, in order of first
  mention (UniCRS's ``rec`` is a set); ``entity_link`` is never a target, even when it names
  a catalogue movie (the linker's movies include false hits such as "Friends", "Hahaha");
- context items: the catalogue items of earlier turns' ``movie_link``, repeats kept;
- context entities: ``entity_link`` then ``movie_link`` of each earlier turn, distinct, first
  mention first (UniCRS's ``entity`` as a set);
- ``response_template``: for each ``movie_name`` in turn, its first case-insensitive occurrence
  left in the text becomes ``<movie>`` (UniCRS's masking; a name not found stays as written).

Texts are taken as they are: the release has no HTML entities or doubled whitespace.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from crsbench.errors import DataError

PREPROCESS_VERSION = "1"  # bump whenever the samples change
PLACEHOLDER = "<movie>"
ROLES = {"SEEKER": "seeker", "RECOMMENDER": "recommender"}
TURN_KEYS = ("text", "role", "entity_link", "movie_link", "movie_name")


def read_jsonl(text: str, source: str) -> list[list[dict]]:
    """One dialogue (a JSON list of turn objects) per non-blank line."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            dialog = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(dialog, list) or not all(isinstance(t, dict) for t in dialog):
            raise DataError(f"{source}:{number}: not a list of turn objects (one dialogue per line)")
        for turn in dialog:
            missing = [k for k in TURN_KEYS if k not in turn]
            if missing:
                raise DataError(f"{source}:{number}: a turn lacks {', '.join(missing)}")
            if turn["role"] not in ROLES:
                raise DataError(f"{source}:{number}: unknown role {turn['role']!r}")
        out.append(dialog)
    return out


def mask_movies(text: str, names) -> str:
    """UniCRS's template rule: each name replaces its first case-insensitive occurrence."""
    for name in names:
        if not name:
            continue
        start = text.lower().find(name.lower())
        if start != -1:
            text = text[:start] + PLACEHOLDER + text[start + len(name):]
    return text


@dataclass
class Resources:
    entity2id: dict[str, int]
    items: frozenset[int]

    def ids(self, uris) -> list[int]:
        # every URI of the release is in entity2id; the guard keeps a foreign file from crashing
        return [self.entity2id[u] for u in uris if u in self.entity2id]


def process_dialog(dialog: list[dict], dialog_id: str, res: Resources) -> list[dict]:
    """The samples of one dialogue, in turn order."""
    roles = [ROLES[t["role"]] for t in dialog]
    movies = [res.ids(t["movie_link"]) for t in dialog]
    items = [[m for m in ms if m in res.items] for ms in movies]
    linked = [res.ids(t["entity_link"]) for t in dialog]
    entities = [e + m for e, m in zip(linked, movies)]  # UniCRS's order within a turn
    samples = []
    for index, turn in enumerate(dialog):
        if roles[index] != "recommender":
            continue
        last_turn = {e: k for k in range(index) for e in entities[k]}
        context_entities = list(dict.fromkeys(e for k in range(index) for e in entities[k]))
        samples.append({
            "sample_id": f"{dialog_id}:{index}",
            "dialog_id": dialog_id,
            "turn": index,
            "context": [t["text"] for t in dialog[:index]],
            "context_roles": roles[:index],
            "context_items": [i for k in range(index) for i in items[k]],
            "context_entities": context_entities,
            "context_entity_turns": [last_turn[e] for e in context_entities],
            "targets": list(dict.fromkeys(items[index])),
            "response": turn["text"],
            "response_template": mask_movies(turn["text"], turn["movie_name"]),
            # movies excluded, as in ReDial: they are targets (or catalogue titles linked by chance)
            "response_entities": list(dict.fromkeys(e for e in linked[index] if e not in res.items)),
        })
    return samples


def dialog_id(split: str, index: int) -> str:
    """The release has no dialogue ids: split and line number (0-based) name a dialogue."""
    return f"{split}-{index:03d}"


def process_dialogs(split: str, dialogs: list[list[dict]], res: Resources) -> list[dict]:
    return [s for k, d in enumerate(dialogs) for s in process_dialog(d, dialog_id(split, k), res)]
