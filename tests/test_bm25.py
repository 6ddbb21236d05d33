"""The `bm25` baseline: Okapi BM25 as the formula says, documents from the training split only,
better than popularity on real ReDial validation dialogues, and task-agnostic (it runs on the
tutorial's third-party example-books task)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from test_tutorial_task import installed, run_on_books  # noqa: F401  (installed is a fixture)

from crsbench import TaskData, UserError
from crsbench.model import RunContext
from crsbench_plugins.baselines.bm25 import BM25Index, BM25Model, tokenize
from crsbench_plugins.baselines.bm25_validation import search, validation_recall
from crsbench_plugins.baselines.models import PopularityModel


def okapi(doc: dict[str, int], query: dict[str, int], docs: list[dict[str, int]], k1: float, b: float) -> float:
    """BM25 written out term by term from its textbook definition (the non-negative IDF)."""
    n = len(docs)
    avgdl = sum(sum(d.values()) for d in docs) / n
    total = 0.0
    for term, qtf in query.items():
        df = sum(1 for d in docs if d.get(term))
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        tf = doc.get(term, 0)
        total += qtf * idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * sum(doc.values()) / avgdl))
    return total


DOCS = [{"space": 2, "wars": 1, "jedi": 1}, {"space": 1, "horror": 3}, {"comedy": 2, "wedding": 1}, {"wars": 1}]
VOCAB = ["space", "wars", "jedi", "horror", "comedy", "wedding", "unseen"]


def as_matrix(rows: list[dict[str, int]]):
    return sp.csr_matrix(np.array([[row.get(term, 0) for term in VOCAB] for row in rows], dtype=float))


@pytest.mark.parametrize(("k1", "b"), [(1.2, 0.75), (3.0, 0.5), (0.5, 0.0), (2.0, 1.0)])
def test_index_scores_are_okapi_bm25(k1, b):
    queries = [{"space": 1, "wars": 2}, {"horror": 1, "unseen": 4}, {"wedding": 1, "jedi": 1, "space": 1}, {}]
    got = BM25Index(as_matrix(DOCS), k1=k1, b=b).scores(as_matrix(queries))
    want = np.array([[okapi(d, q, DOCS, k1, b) for d in DOCS] for q in queries])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0, 0] > got[0, 1] > 0 and got[0, 2] == 0 and not got[3].any()  # no shared term: 0


class Refuse:
    """A split that must not be read: fitting may touch only the training split."""

    def __init__(self, name):
        self.name = name

    def __iter__(self):
        raise AssertionError(f"bm25 read the {self.name} split while fitting")

    __len__ = __getitem__ = __iter__


def sample(dialog, context, targets, template="", response=""):
    return {"sample_id": f"{dialog}:{len(context)}", "dialog_id": dialog, "turn": len(context), "context": context,
            "context_roles": ["seeker"] * len(context), "context_items": [], "context_entities": [],
            "targets": targets, "response": response, "response_template": template, "response_entities": []}


def fitted(data, **settings) -> BM25Model:
    model = BM25Model({**BM25Model.profiles["default"], **settings}, RunContext(run_dir=Path(".")))
    model.fit(data)
    return model


def tiny_task(held_out=None) -> TaskData:
    train = [
        sample("a", ["Hi", "I want a scary film about ghosts"], [1], "<item> is scary", "Haunting is scary"),
        sample("a", ["Hi", "I want a scary film about ghosts", "Haunting is scary", "Great, thanks"], [], "bye", "bye"),
        sample("b", ["Any space adventure?"], [2, 3], "<item> or <item>", "Stars or Moon"),
        sample("c", ["Something with space battles"], [2], "<item>", "Stars"),
    ]
    splits = {"train": train, "valid": held_out or Refuse("valid"), "test": held_out or Refuse("test")}
    return TaskData(splits=splits, items=[1, 2, 3, 4], item_names={1: "Haunting", 2: "Stars", 3: "Moon", 4: "Lake"},
                    item_placeholder="<item>")


def test_documents_are_the_training_texts_and_the_hand_computed_scores_follow():
    model = fitted(tiny_task(), k1=1.5, b=0.75, query_turns=0, doc_context_turns=0, doc_response=True,
                   doc_after_turns=1, name_weight=2, kg_weight=1, stopwords=True)
    # Written out by hand from tiny_task: contexts (function words dropped), the reply without
    # its placeholders, the next turn of the dialogue (doc_after_turns=1), the name twice.
    docs = {1: {"hi": 1, "want": 1, "scary": 2, "film": 1, "ghosts": 1, "great": 1, "thanks": 1, "haunting": 2},
            2: {"space": 2, "adventure": 1, "something": 1, "battles": 1, "stars": 2},
            3: {"space": 1, "adventure": 1, "moon": 2},
            4: {"lake": 2}}
    dense = model.counts.toarray()
    counts = {int(item): {term: int(dense[row, col]) for term, col in model.vocab.items() if dense[row, col]}
              for row, item in enumerate(model.items)}
    assert counts == docs
    batch = [sample("q", ["I loved the ghosts in that scary space movie"], [1])]
    query = {"ghosts": 1, "scary": 1, "space": 1}  # "loved", "movie" are in no document
    want = {item: okapi(docs[item], query, list(docs.values()), 1.5, 0.75) for item in docs}
    got = dict(zip(model.items.tolist(), model.score(batch)[0]))
    assert got == pytest.approx(want, rel=1e-12)
    assert model.recommend(batch)[0] == sorted(want, key=lambda item: -want[item])


def test_an_empty_context_gets_the_popularity_ranking():
    data = tiny_task()
    model = fitted(data)
    popularity = PopularityModel({}, RunContext(run_dir=Path(".")))
    popularity.fit(data)
    assert model.recommend([sample("q", [], [1]), sample("r", ["zzz unknown words"], [2])]) == [popularity.ranking] * 2


def test_held_out_splits_are_never_read_and_add_nothing():
    model = fitted(tiny_task())  # Refuse raises if fit touches valid or test
    leaky = sample("t", ["a word only the test split has: xylophone"], [4], "<item> xylophone", "Lake xylophone")
    assert "xylophone" not in fitted(tiny_task(held_out=[leaky])).vocab
    assert model.summary["train_samples"] == 4 and model.summary["train_samples_with_targets"] == 3


def test_the_redial_documents_are_built_from_the_train_split(redial):
    data = TaskData(splits={"train": redial.splits["train"], "valid": Refuse("valid"), "test": Refuse("test")},
                    items=redial.items, item_names=redial.item_names, kg=redial.kg,
                    item_placeholder=redial.item_placeholder)
    model = fitted(data, stopwords=False)
    texts = [t for s in redial.splits["train"] for t in [*s["context"], s["response"], s["response_template"]]]
    texts += list(redial.item_names.values()) + [redial.kg.entity_name(e) for e in range(redial.kg.num_entities)]
    allowed = {w for t in texts for w in tokenize(t, stopwords=False)}
    assert set(model.vocab) <= allowed
    test_only = {w for s in redial.splits["test"] for t in s["context"] for w in tokenize(t, stopwords=False)} - allowed
    assert len(test_only) > 100 and not test_only & set(model.vocab)


def test_the_settings_search_reads_validation_and_never_test():
    data = tiny_task()
    data.splits["valid"] = [sample("v", ["a ghosts story please"], [1]), sample("w", ["space battles again"], [2])]
    record = search(data, ("standard", "dedup"), rounds=1, log=lambda line: None)  # Refuse guards "test"
    assert record["best"].keys() == BM25Model.profiles["default"].keys()
    assert all(record["best"][key] in values for key, values in record["candidates"].items())
    assert record["best_scores"]["scores"]["standard/recall@1"] == 1.0  # both targets ranked first
    assert len(record["tried"]) == 1 + sum(len(v) - 1 for v in record["candidates"].values())


@pytest.fixture(scope="module")
def redial():
    from crsbench.plugins import lookup
    from crsbench.task import task_defaults

    task = lookup("tasks", "redial").obj(data_dir=None)
    data = task.load()
    task_defaults(data, task)  # as a run does: the item placeholder
    return data


def test_bm25_beats_popularity_on_a_slice_of_redial_validation(redial):
    dialogs = sorted({s["dialog_id"] for s in redial.splits["valid"]})[:80]
    valid = [s for s in redial.splits["valid"] if s["dialog_id"] in set(dialogs)]
    n_targets = sum(len(s["targets"]) for s in valid)
    assert n_targets > 250
    bm25 = validation_recall(BM25Model, BM25Model.profiles["default"], redial, ("standard", "dedup"), valid)
    popularity = validation_recall(PopularityModel, {}, redial, ("standard", "dedup"), valid)
    for protocol in ("standard", "dedup"):
        assert bm25[f"{protocol}/recall@10"] > popularity[f"{protocol}/recall@10"] + 0.03, (bm25, popularity)
        assert bm25[f"{protocol}/recall@50"] > popularity[f"{protocol}/recall@50"] + 0.05, (bm25, popularity)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("k1", -1, "bm25: k1 must be a number >= 0.0, got -1"),
    ("b", 1.5, "bm25: b must be between 0.0 and 1.0, got 1.5"),
    ("query_turns", 2.5, "bm25: query_turns must be a whole number >= 0, got 2.5"),
    ("stopwords", "yes", "bm25: stopwords must be true or false, got 'yes'"),
])
def test_a_wrong_setting_is_a_user_error(key, value, message):
    with pytest.raises(UserError) as err:
        fitted(tiny_task(), **{key: value})
    assert str(err.value) == message


def test_bm25_runs_on_the_example_books_task(installed, run_crsbench, tmp_path):  # noqa: F811
    result = run_on_books(run_crsbench, installed, tmp_path, "bm25")
    assert result["model"]["name"] == "bm25" and result["task"]["name"] == "example-books"
    assert result["plugins"]["task"]["distribution"] == "crsbench-example-task"
    extra = result["extra"]["bm25"]
    assert extra["graph_edges"] > 0 and extra["train_samples_with_targets"] > 0  # the books' graph and dialogues
    assert extra["settings"] == BM25Model.profiles["default"]
    assert result["metrics"]["standard/recall@10"]["n"] == 4
    records = [json.loads(line) for line in (tmp_path / "runs").glob("*/predictions.jsonl").__next__().open()]
    assert all(len(r["top"]) == 10 for r in records if r["targets"])  # every book ranked (top keeps 20)


def test_a_wrong_setting_on_the_command_line_is_one_error_line(installed, run_crsbench, tmp_path):  # noqa: F811
    proc = run_crsbench("run", "bm25", "--task", "example-books", "--set", "b=2", "--no-progress",
                        "--output-dir", tmp_path / "runs", pythonpath=[installed])
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"Error: bm25: b must be between 0\.0 and 1\.0, got 2(\.0)?", last), proc.stderr
    assert "Traceback" not in proc.stderr
