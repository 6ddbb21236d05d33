"""Checks of a task's loaded data (``crsbench task check TASK``, and the runner before training).

``check_data(data)`` looks at a :class:`crsbench.task.TaskData` the way models and scoring
use it and returns findings, each a kind, a split, a count and a few examples:

- errors (``ERROR_KINDS``): data that a model or the scoring cannot use: an empty test split,
  a sample key missing or of the wrong type (docs/plugin-api.md, "Sample dicts"), a sample
  id used twice, a target outside the catalogue, a catalogue item or a graph id outside the
  graph. ``crsbench run`` refuses such data with one ``Error:`` line before it trains
  (:func:`require_usable`).
- warnings: catalogue items that are no graph entities (only graph models need them to be),
  duplicate dialogues within a split (the same turns under two ids, which a
  bootstrap over dialogues counts twice) and split overlap (a dialogue whose turns appear in
  another split, e.g. a release split by turn rather than by dialogue), which a run reports
  in its log but does not refuse.

Two samples come from the same dialogue when one's turns (context, then reply) are a prefix
of the other's, or equal; prefixes shorter than ``MIN_SHARED_TURNS`` turns or
``MIN_SHARED_CHARS`` characters are not compared, so common openings ("Hi" / "Hello!") do
not count as shared dialogues.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from crsbench.errors import DataError

MIN_SHARED_TURNS = 3
MIN_SHARED_CHARS = 80
EXAMPLES = 3
FEEDBACK = ("liked", "disliked", "unknown")
ROLES = ("seeker", "recommender")
ERROR_KINDS = ("empty split", "sample key", "sample type", "duplicate sample id", "target not in catalogue",
               "catalogue", "graph")


@dataclass
class Finding:
    kind: str
    split: str
    message: str
    count: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def is_error(self) -> bool:
        return self.kind in ERROR_KINDS

    def __str__(self) -> str:
        where = f"{self.split}: " if self.split else ""
        shown = f" (e.g. {'; '.join(self.examples)})" if self.examples else ""
        return f"[{self.kind}] {where}{self.message}{shown}"


class _Collector:
    """Findings grouped by (kind, split, message), with a count and the first examples."""

    def __init__(self):
        self.groups: dict[tuple[str, str, str], Finding] = {}

    def add(self, kind: str, split: str, message: str, example: str | None = None, count: int = 1):
        finding = self.groups.setdefault((kind, split, message), Finding(kind, split, message))
        finding.count += count
        if example is not None and len(finding.examples) < EXAMPLES:
            finding.examples.append(example)

    def findings(self) -> list[Finding]:
        out = []
        for f in self.groups.values():
            if "{n}" in f.message:
                f.message = f.message.format(n=f"{f.count:,}")
            out.append(f)
        return out


def _is_int(value) -> bool:
    import numpy as np

    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _int_list(value) -> bool:
    return isinstance(value, (list, tuple)) and all(_is_int(v) for v in value)


def _str_list(value) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


# key -> (check, what it must be); docs/plugin-api.md "Sample dicts"
SAMPLE_KEYS = {
    "sample_id": (lambda v: isinstance(v, str), "a string"),
    "dialog_id": (lambda v: isinstance(v, str), "a string"),
    "turn": (_is_int, "an integer"),
    "context": (_str_list, "a list of strings"),
    "context_roles": (lambda v: _str_list(v) and all(r in ROLES for r in v), "a list of 'seeker'/'recommender'"),
    "context_items": (_int_list, "a list of integers"),
    "context_entities": (_int_list, "a list of integers"),
    "targets": (_int_list, "a list of integers"),
    "response": (lambda v: isinstance(v, str), "a string"),
    "response_template": (lambda v: isinstance(v, str), "a string"),
    "response_entities": (_int_list, "a list of integers"),
}
OPTIONAL_KEYS = {
    "context_entity_turns": (_int_list, "a list of integers"),
    "target_feedback": (lambda v: _str_list(v) and all(f in FEEDBACK for f in v),
                        "a list of 'liked'/'disliked'/'unknown'"),
}


def _rows(split) -> list[dict]:
    if hasattr(split, "to_list") and hasattr(split, "column_names"):  # a datasets.Dataset: fast
        return split.to_list()
    return list(split)


def _check_samples(name: str, rows: list, has_feedback: bool, out: _Collector) -> list[dict]:
    """Type checks; returns the rows usable for the content checks."""
    good = []
    seen_ids = set()
    for number, s in enumerate(rows, 1):
        if not isinstance(s, dict):
            out.add("sample type", name, "{n} samples are not dicts", f"sample {number}")
            continue
        sid = s.get("sample_id", f"#{number}")
        ok = True
        for key, (check, what) in SAMPLE_KEYS.items():
            if key not in s:
                out.add("sample key", name, f"{{n}} samples lack {key!r}", f"sample {sid!r}")
                ok = False
            elif not check(s[key]):
                out.add("sample type", name, f"{{n}} samples have a {key!r} that is not {what}",
                        f"sample {sid!r}: {s[key]!r}"[:120])
                ok = False
        for key, (check, what) in OPTIONAL_KEYS.items():
            if key in s and s[key] is not None and not check(s[key]):
                out.add("sample type", name, f"{{n}} samples have a {key!r} that is not {what}",
                        f"sample {sid!r}: {s[key]!r}"[:120])
                ok = False
        if not ok:
            continue
        if len(s["context_roles"]) != len(s["context"]):
            out.add("sample type", name, "{n} samples have context_roles of another length than context",
                    f"sample {sid!r}")
            continue
        feedback = s.get("target_feedback")
        if has_feedback and feedback is None:
            out.add("sample key", name, "{n} samples lack 'target_feedback' (the task declares has_feedback)",
                    f"sample {sid!r}")
        elif feedback is not None and len(feedback) != len(s["targets"]):
            out.add("sample type", name, "{n} samples have target_feedback of another length than targets",
                    f"sample {sid!r}")
            continue
        turns = s.get("context_entity_turns")
        if turns is not None and (len(turns) != len(s["context_entities"])
                                  or any(not 0 <= t < len(s["context"]) for t in turns)):
            out.add("sample type", name, "{n} samples have context_entity_turns that do not index their context "
                    "turns one per context entity", f"sample {sid!r}")
            continue
        if sid in seen_ids:
            out.add("duplicate sample id", name, "{n} sample ids occur more than once", f"{sid!r}")
            continue
        seen_ids.add(sid)
        good.append(s)
    return good


def _check_catalogue(data, out: _Collector) -> set:
    items = list(data.items or [])
    if not items:
        out.add("catalogue", "", "the catalogue (TaskData.items) is empty", count=1)
        return set()
    bad = [i for i in items if not _is_int(i) or i < 0]
    if bad:
        out.add("catalogue", "", "{n} catalogue items are not non-negative integers", repr(bad[0]), count=len(bad))
    if len(set(items)) != len(items):
        out.add("catalogue", "", "{n} catalogue items are listed twice", count=len(items) - len(set(items)))
    return {i for i in items if _is_int(i)}


def _check_graph(kg, catalogue: set, out: _Collector) -> int | None:
    """Graph ids in range; returns the number of entities (None without a usable graph)."""
    import numpy as np

    if kg is None:
        return None
    try:
        n_ent, n_rel = int(kg.num_entities), int(kg.num_relations)
        triples = np.asarray(kg.triples)
        item_ids = list(kg.item_ids)
    except Exception as exc:  # a task's own graph class: any failure to read it is a finding
        out.add("graph", "", f"the knowledge graph cannot be read ({type(exc).__name__}: {exc})")
        return None
    if triples.size and (triples.ndim != 2 or triples.shape[1] != 3 or triples.dtype.kind not in "iu"):
        out.add("graph", "", f"triples are not an integer array [N, 3] (shape {triples.shape}, {triples.dtype})")
    elif triples.size:
        ent_bad = (triples[:, [0, 2]] < 0) | (triples[:, [0, 2]] >= n_ent)
        rel_bad = (triples[:, 1] < 0) | (triples[:, 1] >= n_rel)
        for count, what, example in (
                (int(ent_bad.any(axis=1).sum()), f"an entity id outside 0..{n_ent - 1}",
                 triples[ent_bad.any(axis=1)][:1]),
                (int(rel_bad.sum()), f"a relation id outside 0..{n_rel - 1}", triples[rel_bad][:1])):
            if count:
                out.add("graph", "", f"{{n}} triples have {what}", str(example.tolist()[0]), count=count)
    outside = [i for i in item_ids if not _is_int(i) or not 0 <= i < n_ent]
    if outside:
        out.add("graph", "", f"{{n}} graph item ids are outside the entities 0..{n_ent - 1}", repr(outside[0]),
                count=len(outside))
    not_entities = sorted(i for i in catalogue if not 0 <= i < n_ent)
    if not_entities:
        out.add("catalogue outside graph", "", f"{{n}} catalogue items are not graph entities (0..{n_ent - 1}); "
                "graph models (ecr, unicrs) need every item to be one", repr(not_entities[0]), count=len(not_entities))
    return n_ent


def _check_ids(name: str, rows: list[dict], catalogue: set, n_entities: int | None, out: _Collector):
    for s in rows:
        sid = s["sample_id"]
        missing = [t for t in s["targets"] if t not in catalogue]
        if missing:
            out.add("target not in catalogue", name, "{n} targets are not catalogue items (they cannot be ranked)",
                    f"sample {sid!r}: {missing[0]}", count=len(missing))
        if any(i not in catalogue for i in s["context_items"]):
            out.add("context item not in catalogue", name, "{n} samples have context items outside the catalogue",
                    f"sample {sid!r}")
        if n_entities is not None:
            for key in ("context_entities", "response_entities"):
                bad = [e for e in s[key] if not 0 <= e < n_entities]
                if bad:
                    out.add("graph", name, f"{{n}} {key} are outside the graph's entities 0..{n_entities - 1}",
                            f"sample {sid!r}: {bad[0]}", count=len(bad))


def _turns(s: dict) -> list[str]:
    return [" ".join(t.split()).lower() for t in [*s["context"], s["response"]]]


def _digest(turns: Iterable[str]) -> bytes:
    return hashlib.sha256("\x1e".join(turns).encode()).digest()[:16]


def _comparable(turns: list[str]) -> bool:
    return len(turns) >= MIN_SHARED_TURNS and sum(map(len, turns)) >= MIN_SHARED_CHARS


def _dialogue_keys(rows: list[dict]) -> tuple[dict, dict]:
    """Per dialogue: the digest of its longest turn sequence (its full text) and the digests of
    every comparable prefix of its samples' turn sequences."""
    full: dict[str, tuple[int, bytes]] = {}
    prefixes: dict[str, set] = defaultdict(set)
    for s in rows:
        turns = _turns(s)
        did = s["dialog_id"]
        if did not in full or len(turns) > full[did][0]:
            full[did] = (len(turns), _digest(turns))
        for k in range(MIN_SHARED_TURNS, len(turns) + 1):
            if _comparable(turns[:k]):
                prefixes[did].add(_digest(turns[:k]))
    return {d: v[1] for d, v in full.items()}, prefixes


SPLIT_ORDER = ("train", "valid", "test")


def _check_duplicates_and_overlap(rows_by_split: dict[str, list[dict]], out: _Collector) -> None:
    keys = {name: _dialogue_keys(rows) for name, rows in rows_by_split.items()}
    for name, (full, _prefixes) in keys.items():
        by_text: dict[bytes, list[str]] = defaultdict(list)
        for did, digest in full.items():
            by_text[digest].append(did)
        for dids in by_text.values():
            if len(dids) > 1:
                out.add("duplicate dialogue", name, "{n} dialogues repeat another dialogue of the split turn for turn",
                        " = ".join(repr(d) for d in sorted(dids)[:3]), count=len(dids) - 1)
        turns_of = defaultdict(list)
        for s in rows_by_split[name]:
            turns_of[s["dialog_id"]].append(s["turn"])
        for did, turns in turns_of.items():
            if len(turns) != len(set(turns)):
                out.add("duplicate dialogue", name, "{n} dialogue ids hold the same turn twice (a dialogue listed "
                        "twice?)", repr(did))
    # each later split against each earlier one: test vs train, test vs valid, valid vs train
    order = sorted(keys, key=lambda n: (SPLIT_ORDER.index(n) if n in SPLIT_ORDER else len(SPLIT_ORDER), n))
    for i, later in enumerate(order):
        for earlier in order[:i]:
            ids = set(keys[earlier][0])
            prefixes = set().union(*keys[earlier][1].values())
            shared = sorted(did for did in keys[later][0]
                            if did in ids or keys[later][1].get(did, set()) & prefixes)
            if shared:
                out.add("split overlap", later, f"{len(shared):,} of {len(keys[later][0]):,} {later} dialogues have "
                        f"turns that also appear in {earlier} (the same dialogue id, or the same first "
                        f"{MIN_SHARED_TURNS}+ turns)", ", ".join(repr(d) for d in shared[:EXAMPLES]), count=len(shared))


def check_data(data, has_feedback: bool = True, content: bool = True) -> list[Finding]:
    """Every finding about ``data`` (a TaskData); ``content=False`` skips the duplicate and
    overlap checks (what :func:`require_usable` needs is the rest)."""
    out = _Collector()
    splits = data.splits or {}
    if "test" not in splits:
        out.add("empty split", "test", "the task has no test split")
    catalogue = _check_catalogue(data, out)
    n_entities = _check_graph(getattr(data, "kg", None), catalogue, out)
    rows_by_split = {}
    for name, split in splits.items():
        rows = _rows(split)
        if not rows:
            out.add("empty split" if name == "test" else "empty training split", name,
                    f"the {name} split has no samples")
        good = _check_samples(name, rows, has_feedback, out)
        _check_ids(name, good, catalogue, n_entities, out)
        rows_by_split[name] = good
    if content:
        _check_duplicates_and_overlap(rows_by_split, out)
    return out.findings()


def summary(data) -> str:
    parts = []
    for name, split in (data.splits or {}).items():
        rows = _rows(split)
        dialogs = len({s.get("dialog_id") for s in rows if isinstance(s, dict)})
        targets = sum(len(s.get("targets") or []) for s in rows if isinstance(s, dict))
        parts.append(f"{name}: {dialogs:,} dialogues, {len(rows):,} samples, {targets:,} targets")
    kg = getattr(data, "kg", None)
    graph = (f"; graph: {kg.num_entities:,} entities, {kg.num_relations:,} relations, {len(kg.triples):,} triples"
             if kg is not None else "; no graph")
    return "; ".join(parts) + f"; catalogue: {len(data.items or []):,} items" + graph


def require_usable(data, task_name: str, has_feedback: bool = True) -> list[Finding]:
    """Raise a DataError (one line) when ``data`` holds what would break a model or the
    scoring; return the other findings (duplicates, overlap) for the log."""
    findings = check_data(data, has_feedback=has_feedback, content=False)
    errors = [f for f in findings if f.is_error]
    if errors:
        more = f"; and {len(errors) - 1} more (crsbench task check {task_name})" if len(errors) > 1 else \
            f" (crsbench task check {task_name} lists every finding)"
        raise DataError(f"task {task_name!r}: the loaded data cannot be used: {errors[0]}{more}")
    return findings
