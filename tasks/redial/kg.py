"""The DBpedia sub-graph bundled with the task (the one UniCRS and ECR use).

Kept light: plain json + numpy, and the triples are only parsed when first asked for,
so loading the task does not pay for a graph that a baseline never looks at.
"""
from __future__ import annotations

import gzip
import json
import re
from functools import cached_property
from pathlib import Path

import numpy as np

from crsbench.kg import KnowledgeGraph as KnowledgeGraphInterface

DATA_DIR = Path(__file__).resolve().parent / "data"
RESOURCE = "<http://dbpedia.org/resource/"
_DISAMBIGUATION = re.compile(r"^(.*?)_\((.*)\)$")


def read_json(name: str, data_dir: Path = DATA_DIR):
    path = Path(data_dir) / f"{name}.gz"
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:  # missing, truncated, not gzip, not JSON
        from crsbench.errors import DataError

        raise DataError(f"cannot read {path}: {exc} (a damaged or truncated file: restore it, e.g. from the "
                        "package or the repository)") from None


def local_name(uri: str) -> str:
    """``<http://dbpedia.org/resource/Tom_Hanks>`` -> ``Tom_Hanks``."""
    if uri.startswith(RESOURCE) and uri.endswith(">"):
        return uri[len(RESOURCE):-1]
    return uri.strip("<>")


def split_uri(uri: str) -> tuple[str, str]:
    """``..._Heat_(1995_film)>`` -> ``("Heat", "1995 film")``: readable name and disambiguation."""
    name = local_name(uri)
    m = _DISAMBIGUATION.match(name)
    base, disamb = (m.group(1), m.group(2)) if m else (name, "")
    return base.replace("_", " "), disamb.replace("_", " ")


class KnowledgeGraph(KnowledgeGraphInterface):
    """``entity2id``, ``relation2id``, ``item_ids`` eagerly; ``triples`` (int64 [N, 3]:
    head, relation, tail) and ``id2entity`` on first use; entity keys are DBpedia URIs."""

    def __init__(self, data_dir: Path = DATA_DIR):
        self.data_dir = Path(data_dir)
        self.entity2id: dict[str, int] = read_json("entity2id.json", self.data_dir)
        self.relation2id: dict[str, int] = read_json("relation2id.json", self.data_dir)
        self.item_ids: list[int] = sorted(read_json("item_ids.json", self.data_dir))

    @cached_property
    def id2entity(self) -> dict[int, str]:
        return {i: uri for uri, i in self.entity2id.items()}

    @cached_property
    def triples(self) -> np.ndarray:
        """Every edge of the sub-graph, self loops included, as the file lists them."""
        graph = read_json("dbpedia_subkg.json", self.data_dir)
        rows = [(int(head), rel, tail) for head, edges in graph.items() for rel, tail in edges]
        return np.asarray(rows, dtype=np.int64).reshape(-1, 3)

    def entity_name(self, entity_id: int) -> str:
        """``Heat_(1995_film)`` -> ``Heat``."""
        uri = self.id2entity.get(entity_id)
        return split_uri(uri)[0] if uri else str(entity_id)

    def __repr__(self) -> str:
        return (f"KnowledgeGraph({len(self.entity2id)} entities, {len(self.relation2id)} relations, "
                f"{len(self.item_ids)} items)")
