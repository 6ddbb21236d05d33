"""Agreement of the inspired test split with UniCRS's processed INSPIRED test set.

``data/unicrs_test_data_processed.jsonl.gz`` (ShupeiLi/UniCRS @ 2bb38d7, MIT) is the output of
UniCRS's ``src/data/inspired/process.py``: one line per turn of ``test_data_dbpedia.jsonl`` (both
roles, file order) ``{context, resp, rec, entity}``, where ``rec`` is the set of every entity id
linked in the turn (``movie_link`` and ``entity_link``, catalogue or not) and ``entity`` the set of
the context's. Line ``offset(dialogue) + turn`` is the turn our sample ``<dialogue>:<turn>`` comes
from. ``python -m crsbench_tasks.inspired.reference`` prints the numbers README.md reports.
"""
from __future__ import annotations

import gzip
import json

from crsbench_tasks.inspired.kg import DATA_DIR
from crsbench_tasks.inspired.preprocess import dialog_id

REFERENCE_FILE = "unicrs_test_data_processed.jsonl.gz"


def load_reference() -> list[dict]:
    with gzip.open(DATA_DIR / REFERENCE_FILE, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def agreement(raw_test: list[list[dict]], samples: list[dict], reference: list[dict], items) -> dict:
    """Turn-by-turn and sample-by-sample counts (targets compared as sets, like ``rec``)."""
    items = set(items)
    offsets, start = {}, 0
    for k, dialog in enumerate(raw_test):
        offsets[dialog_id("test", k)] = start
        start += len(dialog)
    lines = [(r, t) for r, t in zip(reference, (t for d in raw_test for t in d))]
    recommender = [r for r, t in lines if t["role"] == "RECOMMENDER"]
    out = {
        "reference_lines": len(reference), "test_turns": start,
        "resp_equal": sum(r["resp"] == t["text"] for r, t in lines),
        "reference_rec_ids": sum(len(r["rec"]) for r in reference),
        "reference_rec_catalogue": sum(len(set(r["rec"]) & items) for r in reference),
        "reference_rec_recommender": sum(len(r["rec"]) for r in recommender),
        "reference_rec_recommender_catalogue": sum(len(set(r["rec"]) & items) for r in recommender),
        "samples": len(samples), "reference_recommender_lines": len(recommender),
        "context_equal": 0, "entity_equal": 0, "targets": 0, "targets_in_rec": 0,
        "target_sets_equal": 0, "samples_with_rec_items": 0,
    }
    for s in samples:
        r = reference[offsets[s["dialog_id"]] + s["turn"]]
        rec_items = set(r["rec"]) & items
        out["context_equal"] += r["context"] == [""] + list(s["context"])
        out["entity_equal"] += set(r["entity"]) == set(s["context_entities"])
        out["targets"] += len(s["targets"])
        out["targets_in_rec"] += len(set(s["targets"]) & set(r["rec"]))
        out["samples_with_rec_items"] += bool(rec_items)
        out["target_sets_equal"] += bool(rec_items) and set(s["targets"]) == rec_items
    return out


def main() -> None:
    from crsbench_tasks.inspired.task import InspiredTask

    task = InspiredTask()
    samples = task.load().splits["test"].to_list()
    numbers = agreement(task.raw_dialogs("test"), samples, load_reference(), task.kg.item_ids)
    for key, value in numbers.items():
        print(f"{key:40s} {value}")


if __name__ == "__main__":
    main()
