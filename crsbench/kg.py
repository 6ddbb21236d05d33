"""The knowledge-graph interface a task offers to models (``TaskData.kg``).

The core knows no graph, dataset or domain: a task that has a graph subclasses
``KnowledgeGraph`` (or provides an object with the same attributes), and models that need
one (ECR, UniCRS) read only what is declared here. A task without a graph leaves
``TaskData.kg`` as None, and such a model stops with one ``Error:`` line naming it.
"""
from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from crsbench.errors import UserError

if TYPE_CHECKING:  # numpy stays out of CLI start-up
    import numpy as np

KG_ATTRIBUTES = ("entity2id", "relation2id", "item_ids", "num_entities", "num_relations", "id2entity", "triples",
                 "entity_name")


class KnowledgeGraph:
    """What a model may read from a task's graph.

    - ``entity2id`` (entity key -> id), ``relation2id`` (relation key -> id);
    - ``item_ids``: the entity ids of the recommendable items (the catalogue's ids);
    - ``num_entities``, ``num_relations``: one more than the largest id;
    - ``id2entity``: id -> entity key;
    - ``triples``: int64 array [N, 3] of (head, relation, tail) ids;
    - ``entity_name(entity_id)``: a readable name, for text (e.g. facts in a generated reply).
    """

    entity2id: dict[str, int]
    relation2id: dict[str, int]
    item_ids: list[int]

    @property
    def num_entities(self) -> int:
        return max(self.entity2id.values()) + 1

    @property
    def num_relations(self) -> int:
        return max(self.relation2id.values()) + 1

    @cached_property
    def id2entity(self) -> dict[int, str]:  # built once: models look entities up per triple
        return {i: key for key, i in self.entity2id.items()}

    @property
    def triples(self) -> "np.ndarray":
        raise NotImplementedError

    def entity_name(self, entity_id: int) -> str:
        """The entity's key; tasks whose keys are URIs or codes override this."""
        return self.id2entity.get(entity_id, str(entity_id))


def require_kg(data, model: str):
    """``data.kg``, checked: a model that needs a graph gets one clear error where a task has none."""
    kg = getattr(data, "kg", None)
    if kg is None:
        raise UserError(f"model {model!r} needs a knowledge graph, and this task provides none (TaskData.kg is "
                        "None); see docs/plugin-api.md, 'KnowledgeGraph'")
    missing = [name for name in KG_ATTRIBUTES if not hasattr(kg, name)]
    if missing:
        raise UserError(f"model {model!r}: the task's knowledge graph lacks {', '.join(missing)} "
                        "(crsbench.kg.KnowledgeGraph lists what a graph must offer)")
    return kg
