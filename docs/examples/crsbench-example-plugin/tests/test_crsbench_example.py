import numpy as np

import crsbench_example
from crsbench import RunContext, TaskData, Units
from crsbench.plugins import PluginRegistry


def sample(dialog_id, context_items, targets):
    return {"sample_id": f"{dialog_id}-{len(context_items)}", "dialog_id": dialog_id, "turn": 1,
            "context": [], "context_roles": [], "context_items": context_items, "context_entities": [],
            "targets": targets, "target_feedback": ["liked"] * len(targets), "response": "",
            "response_template": "", "response_entities": []}


def test_the_plugin_registers_everything():
    registry = PluginRegistry()
    registry.register_plugin(crsbench_example, "example")
    assert "example-cooccurrence" in registry.models()
    assert "example_coverage" in registry.metrics()
    assert "example-mention" in registry.rewards()
    assert registry.plugins["example"].error is None


def test_cooccurring_items_come_first(tmp_path):
    train = [sample("d1", [1], [2]), sample("d2", [1, 2], [3]), sample("d3", [4], [5]), sample("d4", [], [5])]
    data = TaskData(splits={"train": train}, items=[1, 2, 3, 4, 5, 6], item_names={})
    model_cls = crsbench_example.CooccurrenceModel
    model = model_cls(model_cls.profiles["default"], RunContext(run_dir=tmp_path))
    model.fit(data)
    ranking = model.recommend([sample("t1", [1], [2])])[0]
    assert ranking[:2] == [2, 3]  # 2 shared two dialogues with 1, 3 shared one
    assert sorted(ranking) == [1, 2, 3, 4, 5, 6]
    assert model.recommend([sample("t2", [], [5])])[0][0] == 5  # no context: popularity


def test_coverage_metric():
    units = Units("recommendation", np.array([0, 0, 1]), {"rank": np.array([1.0, 150.0, np.inf])})
    assert crsbench_example.CoverageMetric().compute(units) == 1 / 3
