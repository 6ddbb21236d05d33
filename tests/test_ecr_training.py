"""ECR's training recipe against the official one, piece by piece, on real ReDial samples:

- stage 1 reads every turn that mentions an entity, seeker turns included (both official
  process.py write a sample per turn);
- warm-up is a fraction of the stage's steps, and an absolute count larger than the stage
  still leaves the learning rate decaying (never only rising);
- the epoch kept is the one with the best validation value (the official train_rec.py keeps
  its best validation loss), and a finished stage loads that epoch again;
- the KG's self loops stay in the graph (UniCRS extract_subkg.py adds one per head);
- clipping only where ``max_grad_norm`` is set (the paper profile sets none, as the official
  commands).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def redial_train():
    from crsbench_tasks.redial.task import RedialTask

    return list(RedialTask().load(limit=40).splits["train"])


def test_stage1_reads_seeker_turns_with_the_entities_they_mention(redial_train):
    from crsbench_plugins.ecr.features import every_turn

    examples, labels = every_turn(redial_train)
    seeker = [(e, lab) for e, lab in zip(examples, labels) if e.get("response_role") == "seeker"]
    recommender = [e for e in examples if e.get("response_role") != "seeker"]
    assert seeker and recommender
    assert all(lab for lab in labels)  # turns without any entity are skipped, as the official dataset does
    by_dialog = {}
    for s in redial_train:  # the dialogue in full: its sample with the longest context
        if len(s["context"]) > len(by_dialog.get(s["dialog_id"], {"context": ()})["context"]):
            by_dialog[s["dialog_id"]] = s
    for example, lab in seeker:
        full = by_dialog[example["dialog_id"]]
        t = len(example["context"])
        assert full["context_roles"][t] == "seeker" and example["response"] == full["context"][t]
        assert example["context"] == full["context"][:t]
        mentioned = {e for e, k in zip(full["context_entities"], full["context_entity_turns"]) if k == t}
        assert set(lab) == mentioned
        assert all(k < t for k in example["context_entity_turns"])  # no entity of the turn in its context
    # every recommender sample with labels is there, with its response entities and targets
    with_labels = [s for s in redial_train if s["response_entities"] or s["targets"]]
    assert [s["sample_id"] for s in recommender] == [s["sample_id"] for s in with_labels]


def test_warmup_is_a_fraction_and_never_leaves_the_rate_only_rising():
    from crsbench_plugins.ecr.train_stage import warmup_steps

    assert warmup_steps({"warmup": 0.2}, 500) == 100
    assert warmup_steps({"warmup_steps": 50}, 500) == 50
    assert warmup_steps({"warmup_steps": 1389}, 810) == 809  # clamped below the total: one step of decay


def test_paper_profiles_use_the_official_settings():
    from crsbench_plugins.ecr.config import ECR_PROFILES, unicrs_profiles

    ecr, unicrs = ECR_PROFILES["paper"], unicrs_profiles()["paper"]
    assert (ecr["stage1"]["epochs"], ecr["stage1"]["batch_size"], ecr["stage2"]["batch_size"]) == (10, 64, 128)
    assert (unicrs["stage1"]["epochs"], unicrs["stage1"]["batch_size"], unicrs["stage2"]["batch_size"]) == (5, 64, 64)
    # the official warm-ups are one epoch of the official data at UniCRS's batch sizes
    assert unicrs["stage1"]["warmup"] == pytest.approx(1 / 5) and ecr["stage1"]["warmup"] == pytest.approx(1 / 10)
    assert unicrs["stage2"]["warmup"] == pytest.approx(1 / 5) and ecr["stage2"]["warmup"] == pytest.approx(2 / 5)
    for cfg in (ecr, unicrs):
        assert all(cfg[s]["max_grad_norm"] is None for s in ("stage1", "templates", "stage2", "responses"))
        assert tuple(cfg["responses"]["betas"]) == (0.9, 0.999) and cfg["responses"]["max_new_tokens"] == 150
        assert not any("warmup_steps" in cfg[s] for s in ("stage1", "templates", "stage2"))


def _toy_stage(tmp_path, valid_values, select=("valid_loss", "min"), max_grad_norm=None):
    from crsbench_plugins.ecr.train_stage import train_stage

    torch.manual_seed(0)
    module = torch.nn.Linear(3, 1)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    weights = []
    values = iter(valid_values)

    def validate(m):
        weights.append(m.weight.detach().clone())
        return {"valid_loss": next(values)}

    cfg = {"epochs": len(valid_values), "lr": 0.1, "warmup": 0.0, "max_grad_norm": max_grad_norm}
    summary = train_stage("toy", module, lambda epoch: [{"x": x, "y": y}],
                          lambda m, b: ((m(b["x"]) - b["y"]) ** 2).mean(), cfg, tmp_path / "toy",
                          steps_per_epoch=1, validate=validate, progress=False, select=select)
    return module, summary, weights


def test_the_epoch_with_the_best_validation_value_is_kept(tmp_path):
    module, summary, weights = _toy_stage(tmp_path, [3.0, 1.0, 2.0])
    assert summary["kept_epoch"] == 2 and summary["selected_by"] == "min valid_loss"
    assert torch.equal(module.weight, weights[1]) and not torch.equal(module.weight, weights[2])
    # a finished stage is loaded with the kept epoch's weights
    from crsbench_plugins.ecr.train_stage import train_stage

    fresh = torch.nn.Linear(3, 1)
    again = train_stage("toy", fresh, None, None, {"epochs": 3, "lr": 0.1}, tmp_path / "toy", steps_per_epoch=1,
                        progress=False)
    assert again["kept_epoch"] == 2 and torch.equal(fresh.weight, weights[1])
    # without selection the last epoch is kept
    module, summary, weights = _toy_stage(tmp_path / "last", [3.0, 1.0, 2.0], select=None)
    assert summary["kept_epoch"] == 3 and torch.equal(module.weight, weights[2])


def test_gradients_are_clipped_only_when_asked(tmp_path, monkeypatch):
    calls = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    _toy_stage(tmp_path / "a", [1.0], max_grad_norm=None)
    assert calls == []
    _toy_stage(tmp_path / "b", [1.0], max_grad_norm=1.0)
    assert calls == [(1.0,)]


def test_self_loops_stay_in_the_graph():
    from crsbench_plugins.ecr.prompt_model import relation_edges

    triples = np.array([[0, 5, 0], [1, 5, 1], [0, 2, 1], [1, 3, 2], [0, 2, 2]])
    edges, n = relation_edges(triples, None)
    assert len(edges) == 5 and n == 3
    loops = edges[edges[:, 0] == edges[:, 2]]
    assert len(loops) == 2 and len(set(loops[:, 1])) == 1  # one relation type of their own
