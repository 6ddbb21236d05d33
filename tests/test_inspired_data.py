"""The ``inspired`` task on its bundled data, its UniCRS reference agreement, and what a task
without seeker feedback means for scoring and for the leaderboard.

Everything reads the bundled files under ``tasks/inspired/data`` (never the shared data). One
load of the three splits (~3 s) is shared by the module.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import pytest

from crsbench import leaderboard
from crsbench.errors import DataError
from crsbench.evaluation import score_records
from crsbench.metrics import recommendation
from crsbench.predictions import _base_record
from crsbench.protocols import evaluated_ranks
from crsbench.task import Task
from crsbench_tasks.inspired import preprocess, reference
from crsbench_tasks.inspired.kg import DATA_DIR
from crsbench_tasks.inspired.task import SPLIT_FILES, InspiredTask

REPO = Path(__file__).resolve().parent.parent
N_DIALOGS = {"train": 801, "valid": 99, "test": 99}
N_SAMPLES = {"train": 8607, "valid": 1039, "test": 1059}  # = recommender turns
N_TARGETS = {"train": 2072, "valid": 272, "test": 253}
N_WITH_TARGETS = {"train": 1805, "valid": 246, "test": 228}
N_TEST_TARGETS_IN_CONTEXT = 40
# SHA-256 of the uncompressed originals (the shared data's SHA256SUMS, UniCRS @ 2bb38d7)
ORIGINALS = {
    "train_data_dbpedia.jsonl.gz": "f185878d61f4cf95036711612befbec2e587b42fcb7bf855fba3af08016e7743",
    "valid_data_dbpedia.jsonl.gz": "8cde8cf7f55d4f2a71f1c7c8e4b921ca9caaee615999fd3728c7bea214b01839",
    "test_data_dbpedia.jsonl.gz": "d1ab79e33858224983de938f6401a18fab7bd99bb4580512fbe804459539f593",
    "dbpedia_subkg.json.gz": "c6d1cef8d9af16f5c59e5b27241f79963d3989bf390ff73948820a4957517f70",
    "entity2id.json.gz": "718818232a4be74f65f69d0b4bdf17cb06ca7672125981532bba969a4768109d",
    "item_ids.json.gz": "4c7e5480990ac6923c88bfa582ea658a607301cb5bb40ee4f7589500b200c48a",
    "relation2id.json.gz": "6a36fdf987d0597e8346c6d9a0e6333b6d3aea67cfe03bebce0114a0deaabda1",
    "relation_set.json.gz": "95173c74601bc770963e90d5812fc9aac6e8cbe8179a8a84a823f1bea99b34c8",
    "unicrs_test_data_processed.jsonl.gz": "50813874c8ace26eddcf0fbb5c41ec4b1ecd50b1d6bd823404408f18129a8d9d",
}
REDIAL_KEYS = {"sample_id", "dialog_id", "turn", "context", "context_roles", "context_items",
               "context_entities", "context_entity_turns", "targets", "target_feedback", "response",
               "response_template", "response_entities"}
FEEDBACK_METRICS = ("rt@1", "rt@10", "rt@50", "auc")


@pytest.fixture(scope="module")
def task():
    return InspiredTask()


@pytest.fixture(scope="module")
def data(task):
    return task.load()


@pytest.fixture(scope="module")
def rows(data):
    return {name: ds.to_list() for name, ds in data.splits.items()}


@pytest.fixture(scope="module")
def raw(task):
    return {split: task.raw_dialogs(split) for split in SPLIT_FILES}


def _by_dialog(samples) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for s in samples:
        out.setdefault(s["dialog_id"], []).append(s)
    return out


def _items_of(turn, task, items: set) -> list[int]:
    return [task.kg.entity2id[u] for u in turn["movie_link"] if task.kg.entity2id.get(u) in items]


# -- data files --------------------------------------------------------------------------------

def test_bundled_files_are_the_published_ones():
    for name, digest in ORIGINALS.items():
        with gzip.open(DATA_DIR / name, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name


def test_data_info(task, data):
    info = task.data_info()
    assert info["variant"] == "bundled" and re.fullmatch(r"[0-9a-f]{64}", info["sha256"])
    for name, digest in info["files"].items():
        assert hashlib.sha256((DATA_DIR / name.removeprefix("kg/")).read_bytes()).hexdigest() == digest
    assert set(SPLIT_FILES.values()) | {"kg/entity2id.json.gz", "kg/dbpedia_subkg.json.gz"} <= set(info["files"])
    assert info["n_dialogs"] == N_DIALOGS
    assert info["has_feedback"] is False and info["preprocess_version"] == preprocess.PREPROCESS_VERSION
    assert Task.has_feedback is True and InspiredTask.has_feedback is False
    json.dumps(info)


def test_no_data_dir():
    with pytest.raises(DataError, match="bundled"):
        InspiredTask("/some/dir")


# -- splits and samples ------------------------------------------------------------------------

def test_split_sizes(rows, raw):
    for split, samples in rows.items():
        assert len(raw[split]) == N_DIALOGS[split]
        assert len({s["dialog_id"] for s in samples}) == N_DIALOGS[split]  # each opens with the recommender
        assert len(samples) == N_SAMPLES[split]
        assert len({s["sample_id"] for s in samples}) == len(samples)
    ids = [{s["dialog_id"] for s in rows[split]} for split in rows]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def test_one_sample_per_recommender_turn(rows, raw):
    for split, samples in rows.items():
        by_dialog = _by_dialog(samples)
        for k, dialog in enumerate(raw[split]):
            turns = [i for i, t in enumerate(dialog) if t["role"] == "RECOMMENDER"]
            assert [s["turn"] for s in by_dialog[preprocess.dialog_id(split, k)]] == turns


def test_samples_have_redial_keys_except_feedback(task, rows):
    n_entities = task.kg.num_entities
    for samples in rows.values():
        for s in samples:
            assert set(s) == REDIAL_KEYS - {"target_feedback"}
            assert s["sample_id"] == f"{s['dialog_id']}:{s['turn']}"
            assert len(s["context"]) == len(s["context_roles"]) == s["turn"]
            assert set(s["context_roles"]) <= {"seeker", "recommender"}
            for key in ("context_items", "context_entities", "targets", "response_entities"):
                assert all(isinstance(e, int) and 0 <= e < n_entities for e in s[key]), key
            assert len(set(s["context_entities"])) == len(s["context_entities"])
            assert set(s["context_items"]) <= set(s["context_entities"])
            assert len(s["context_entity_turns"]) == len(s["context_entities"])
            assert all(0 <= t < s["turn"] for t in s["context_entity_turns"])
            assert s["response"].strip()
    opening = [s for s in rows["test"] if s["turn"] == 0]
    assert len(opening) == N_DIALOGS["test"] and all(s["context"] == [] for s in opening)


def test_targets_within_catalogue(data, rows):
    items = set(data.items)
    assert len(items) == 1472
    for split, samples in rows.items():
        for s in samples:
            assert set(s["targets"]) <= items and set(s["context_items"]) <= items
            assert len(set(s["targets"])) == len(s["targets"])  # distinct, like UniCRS's rec
        assert sum(len(s["targets"]) for s in samples) == N_TARGETS[split]
        assert sum(1 for s in samples if s["targets"]) == N_WITH_TARGETS[split]
    assert set(data.item_names) == items and all(data.item_names.values())


def test_no_context_leakage(task, rows, raw):
    """Targets come from the turn itself and context only from earlier turns, recomputed
    from the raw dialogues for every sample."""
    items = set(task.kg.item_ids)
    for split, samples in rows.items():
        for s in samples:
            dialog = raw[split][int(s["dialog_id"].rsplit("-", 1)[1])]
            turn = s["turn"]
            assert s["response"] == dialog[turn]["text"]
            assert s["context"] == [t["text"] for t in dialog[:turn]]
            assert s["targets"] == list(dict.fromkeys(_items_of(dialog[turn], task, items)))
            assert s["context_items"] == [i for t in dialog[:turn] for i in _items_of(t, task, items)]
            earlier = {task.kg.entity2id[u] for t in dialog[:turn] for u in t["entity_link"] + t["movie_link"]}
            assert set(s["context_entities"]) == earlier
    # a movie the recommender names first at turn 8 of test-000 is not in that turn's context
    first = {s["turn"]: s for s in rows["test"] if s["dialog_id"] == "test-000"}
    deadpool = first[8]["targets"]
    assert len(deadpool) == 1 and deadpool[0] not in first[8]["context_items"]
    assert deadpool[0] in first[10]["context_items"]


def test_response_template_masks_movie_names(rows):
    s = next(s for s in rows["test"] if s["sample_id"] == "test-000:4")
    assert s["response"].startswith("How did you like Hustlers?")
    assert s["response_template"].startswith("How did you like <movie>?")
    assert preprocess.mask_movies("Joker is Joker, not JOKER", ["Joker", "joker"]) == "<movie> is <movie>, not JOKER"
    assert preprocess.mask_movies("nothing here", ["Joker"]) == "nothing here"


def test_kg_is_exposed_like_redial(task, data):
    kg = data.kg
    assert kg is task.kg and kg.num_entities == 17320 and kg.num_relations == 13
    assert len(kg.item_ids) == 1472 and "self_loop" in kg.relation2id
    assert kg.triples.shape == (38903, 3)
    assert kg.triples.min() >= 0 and kg.triples[:, [0, 2]].max() < kg.num_entities
    assert kg.triples[:, 1].max() < kg.num_relations
    assert kg.id2entity[kg.entity2id["<http://dbpedia.org/resource/Film>"]].endswith("Film>")


def test_limit_keeps_the_first_n_test_dialogues(task, rows):
    limited = task.load(limit=5)
    test = limited.splits["test"].to_list()
    assert list(dict.fromkeys(s["dialog_id"] for s in test)) == [f"test-00{k}" for k in range(5)]
    assert test == [s for s in rows["test"] if s["dialog_id"] in {f"test-00{k}" for k in range(5)}]
    assert len(limited.splits["train"]) == N_SAMPLES["train"]


def test_find_items(task, data):
    found = task.find_items("Have you seen Joker? Superbad is funnier.")
    assert [data.item_names[i] for i in found] == ["Joker (2019 film)", "Superbad"]
    assert task.find_items("thanks, have a nice day") == []


# -- protocols ---------------------------------------------------------------------------------

def test_dedup_drops_targets_already_in_context(rows):
    records = [_base_record(s) for s in rows["test"]]
    standard = sum(len(evaluated_ranks("standard", r)) for r in records)
    dedup = sum(len(evaluated_ranks("dedup", r)) for r in records)
    assert standard == N_TARGETS["test"]
    assert dedup == N_TARGETS["test"] - N_TEST_TARGETS_IN_CONTEXT == 213
    # a context item ranked above a target no longer counts against it under dedup
    record = next(r for r in records if r["targets"] and r["context_items"]
                  and not set(t["item"] for t in r["targets"]) & set(r["context_items"]))
    record["targets"][0]["rank"] = len(record["context_items"]) + 1
    record["context_item_ranks"] = list(range(1, len(record["context_items"]) + 1))
    assert evaluated_ranks("dedup", record)[0][2] == 1.0


def test_published_repeat_context_falls_to_popularity_under_dedup():
    """On the published results: repeat-context re-lists context items, which dedup removes."""
    base = REPO / "leaderboards" / "results" / "inspired"
    pop = json.loads((base / "popularity-default-seed0-bundled.json").read_text())["metrics"]
    rep = json.loads((base / "repeat-context-default-seed0-bundled.json").read_text())["metrics"]
    assert rep["standard/recall@10"]["value"] > pop["standard/recall@10"]["value"]
    for key in pop:
        if key.startswith("dedup/"):
            assert rep[key]["value"] == pop[key]["value"], key


# -- UniCRS reference --------------------------------------------------------------------------

def test_reference_agreement(task, rows):
    numbers = reference.agreement(task.raw_dialogs("test"), rows["test"], reference.load_reference(),
                                  task.kg.item_ids)
    print("\nreference agreement:", numbers)
    # the reference has one line per turn of either role, the same texts in the same order
    assert numbers["reference_lines"] == numbers["test_turns"] == numbers["resp_equal"] == 2089
    assert numbers["samples"] == numbers["reference_recommender_lines"] == N_SAMPLES["test"]
    # every sample: the same context (UniCRS puts "" first) and the same context entities
    assert numbers["context_equal"] == numbers["entity_equal"] == N_SAMPLES["test"]
    # rec holds every linked entity of a turn: 1,250 ids, 480 in the catalogue, 297 of them
    # at recommender turns; our 253 targets are all among them (the other 44 are catalogue
    # titles only the entity linker found)
    assert (numbers["reference_rec_ids"], numbers["reference_rec_catalogue"],
            numbers["reference_rec_recommender_catalogue"]) == (1250, 480, 297)
    assert numbers["targets"] == numbers["targets_in_rec"] == N_TARGETS["test"]
    assert (numbers["target_sets_equal"], numbers["samples_with_rec_items"]) == (217, 258)


# -- no feedback: scoring and leaderboard ------------------------------------------------------

def test_feedback_metrics_need_feedback():
    for metric in recommendation.all_metrics():
        assert getattr(metric, "needs_feedback", False) == (metric.name in FEEDBACK_METRICS), metric.name


def test_feedback_metrics_left_out_only_without_feedback():
    metrics = {m.name: m for m in recommendation.all_metrics()}

    def records(feedback):
        return [{"sample_id": f"d{k}:1", "dialog_id": f"d{k}", "context_items": [], "context_item_ranks": [],
                 "targets": [{"item": 1, "feedback": feedback, "rank": k + 1}]} for k in range(4)]

    without = score_records(records(None), metrics, ["standard"], n_boot=10)
    assert "standard/recall@1" in without
    assert not [k for k in without if k.split("/")[1] in FEEDBACK_METRICS]
    unknown = score_records(records("unknown"), metrics, ["standard"], n_boot=10)  # ReDial as before
    assert all(unknown[f"standard/{m}"]["value"] is None for m in FEEDBACK_METRICS)
    liked = score_records(records("liked"), metrics, ["standard"], n_boot=10)
    assert liked["standard/rt@1"]["value"] == 0.25


def test_a_run_on_inspired_reports_no_feedback_metrics(tmp_path):
    from crsbench.runner import run

    run_dir = run("popularity", "inspired", limit=5, n_bootstrap=10, progress=False, output_dir=tmp_path)
    result = json.loads((run_dir / "result.json").read_text())
    names = {key.split("/", 1)[1] for key in result["metrics"]}
    assert {"recall@1", "recall@10", "recall@50", "ndcg@10", "mrr@50"} <= names
    assert not names & set(FEEDBACK_METRICS)
    assert result["task"]["data"]["has_feedback"] is False
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    targets = [t for p in predictions for t in p["targets"]]
    assert targets and all(t["feedback"] is None for t in targets)


def test_leaderboard_says_why_feedback_cells_are_empty():
    built = leaderboard.build(REPO / "leaderboards")
    inspired = built[REPO / "leaderboards" / "inspired.md"]
    note = "RT@1/10/50 and AUC need per-target seeker feedback (liked / disliked), which `inspired` does not have"
    assert inspired.count(note) == 2  # under the standard and the dedup table
    assert "popularity" in inspired and "repeat-context" in inspired and "random" in inspired
    assert "need per-target seeker feedback" not in built[REPO / "leaderboards" / "redial.md"]
