"""INSPIRED's own DBpedia sub-graph (UniCRS's): same file layout as ReDial's, other ids.

The graph class is ReDial's (plain json + numpy, triples parsed on first use), pointed at
this task's data directory, so KG models see the same interface on both tasks.
"""
from __future__ import annotations

from pathlib import Path

from crsbench_tasks.redial.kg import KnowledgeGraph, read_json

DATA_DIR = Path(__file__).resolve().parent / "data"
KG_FILES = ("dbpedia_subkg.json.gz", "entity2id.json.gz", "relation2id.json.gz", "item_ids.json.gz")


def load_kg() -> KnowledgeGraph:
    return KnowledgeGraph(DATA_DIR)


def read(name: str):
    """A bundled json file by its uncompressed name (``"item_ids.json"``)."""
    return read_json(name, DATA_DIR)
