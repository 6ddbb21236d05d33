"""The knowledge graph in the Task API: what a graph offers, and what a graph model says on a
task that has none (one Error line, exit status 2, before any training)."""
from __future__ import annotations

import numpy as np
import pytest

from crsbench import KnowledgeGraph, TaskData, UserError, hookimpl
from crsbench.kg import require_kg
from test_hooks import TinyTask, call_main, crsbench_logger_restored  # noqa: F401 (a fixture)


class ListGraph(KnowledgeGraph):
    """A third-party graph: three entities, one relation, no URIs."""

    def __init__(self):
        self.entity2id = {"a": 0, "b": 1, "c": 2}
        self.relation2id = {"likes": 0}
        self.item_ids = [0, 1]

    @property
    def triples(self):
        return np.array([[0, 0, 1], [1, 0, 2]], dtype=np.int64)


def test_graph_defaults_come_from_the_two_maps():
    kg = ListGraph()
    assert (kg.num_entities, kg.num_relations) == (3, 1)
    assert kg.id2entity == {0: "a", 1: "b", 2: "c"} and kg.entity_name(2) == "c" and kg.entity_name(9) == "9"
    data = TaskData(splits={}, items=[0, 1], item_names={}, kg=kg)
    assert require_kg(data, "ecr") is kg


def test_require_kg_names_what_is_missing():
    with pytest.raises(UserError, match="'unicrs' needs a knowledge graph"):
        require_kg(TaskData(splits={}, items=[], item_names={}), "unicrs")

    class NoTriples:
        entity2id, relation2id, item_ids = {"a": 0}, {"r": 0}, [0]

    with pytest.raises(UserError, match="lacks num_entities, num_relations, id2entity, triples, entity_name"):
        require_kg(TaskData(splits={}, items=[0], item_names={}, kg=NoTriples()), "ecr")


def test_redial_and_inspired_graphs_satisfy_the_interface():
    from crsbench_tasks.inspired.kg import load_kg
    from crsbench_tasks.redial.kg import KnowledgeGraph as RedialGraph

    for kg in (RedialGraph(), load_kg()):
        assert isinstance(kg, KnowledgeGraph)
        film = kg.entity2id["<http://dbpedia.org/resource/Film>"]
        assert kg.entity_name(film) == "Film"


class GraphTask(TinyTask):
    """TinyTask with a graph, but without the optional per-turn entity links."""

    name = "tiny-graph-task"

    def load(self, limit=None):
        data = super().load(limit)
        data.kg = ListGraph()
        return data


@pytest.fixture
def task_plugin(crsbench_logger_restored):
    """Registers the tiny tasks beside the installed plugins (ecr, metrics), then removes them."""
    from crsbench.plugins import get_registry

    class TaskPlugin:
        @hookimpl
        def register_tasks(self, register):
            register(TinyTask)
            register(GraphTask)

    registry = get_registry()
    registry.register_plugin(TaskPlugin(), "tiny_kg_tasks")
    yield registry
    registry.unregister_plugin("tiny_kg_tasks")
    assert "tiny-task" not in registry.tasks()


def run_errors(args, capsys) -> tuple[int, list[str], str]:
    code, _, err = call_main(args, capsys)
    return code, [line for line in err.splitlines() if line.startswith("Error:")], err


@pytest.mark.parametrize("model", ["ecr", "unicrs"])
def test_graph_model_on_a_task_without_graph_stops_with_one_error_line(model, task_plugin, capsys, tmp_path):
    code, errors, err = run_errors(["run", model, "--task", "tiny-task", "--profile", "smoke", "--device", "cpu",
                                    "--output-dir", str(tmp_path), "--no-progress"], capsys)
    assert code == 2 and len(errors) == 1 and "needs a knowledge graph" in errors[0], err
    assert "Traceback" not in err


def test_ecr_names_a_missing_per_turn_entity_link(task_plugin, capsys, tmp_path):
    code, errors, err = run_errors(["run", "ecr", "--task", "tiny-graph-task", "--profile", "smoke", "--device",
                                    "cpu", "--output-dir", str(tmp_path), "--no-progress"], capsys)
    assert code == 2 and len(errors) == 1 and "'context_entity_turns'" in errors[0], err
    assert "Traceback" not in err
