"""`crsbench task check`, the checks behind it, and the data convention for third-party tasks."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from crsbench import KnowledgeGraph, Task, TaskData, hookimpl
from crsbench.cli import main
from crsbench.errors import DataError
from crsbench.plugins import get_registry
from crsbench.task import data_env_var, files_sha256, resolve_data_dir
from crsbench.task_check import check_data

REDIAL_DATA = Path(__file__).resolve().parent.parent / "tasks" / "redial" / "data"


def cli(*args) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


def sample(split, dialog, turn, texts, targets=(1,), items=(0,), **extra):
    """The sample of ``dialog``'s turn ``turn``: ``texts[:turn]`` is the context, ``texts[turn]`` the reply."""
    return {"sample_id": f"{dialog}:{turn}", "dialog_id": dialog, "turn": turn, "context": list(texts[:turn]),
            "context_roles": ["seeker" if k % 2 == 0 else "recommender" for k in range(turn)],
            "context_items": list(items), "context_entities": list(items), "targets": list(targets),
            "response": texts[turn], "response_template": texts[turn], "response_entities": [], **extra}


TEXTS = {d: [f"{d} turn {k}: a sentence long enough to count as real dialogue content" for k in range(8)]
         for d in ("a", "b", "c", "d")}


class Graph(KnowledgeGraph):
    def __init__(self, triples, n=5):
        self.entity2id = {f"e{i}": i for i in range(n)}
        self.relation2id = {"r": 0}
        self.item_ids = [0, 1, 2]
        self._triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)

    @property
    def triples(self):
        return self._triples


def data(splits, kg=None, items=(0, 1, 2)):
    return TaskData(splits=splits, items=list(items), item_names={i: str(i) for i in items}, kg=kg)


def kinds(findings):
    return sorted({f.kind for f in findings})


def test_clean_data_has_no_findings():
    splits = {"train": [sample("train", "a", 1, TEXTS["a"]), sample("train", "a", 3, TEXTS["a"])],
              "test": [sample("test", "b", 1, TEXTS["b"])]}
    assert check_data(data(splits, Graph([(0, 0, 3)])), has_feedback=False) == []


def test_types_catalogue_and_graph_findings():
    bad = sample("test", "b", 1, TEXTS["b"])
    bad["context"] = "not a list"
    outside = sample("test", "c", 1, TEXTS["c"], targets=(7,), items=(0,))
    entity = sample("test", "d", 1, TEXTS["d"])
    entity["context_entities"] = [99]
    twice = [sample("train", "a", 1, TEXTS["a"]), sample("train", "a", 1, TEXTS["a"])]
    findings = check_data(data({"train": twice, "test": [bad, outside, entity]}, Graph([(0, 0, 3), (0, 0, 9)])),
                          has_feedback=False)
    text = "\n".join(map(str, findings))
    assert kinds(findings) == ["duplicate sample id", "graph", "sample type", "target not in catalogue"], text
    assert "'context' that is not a list of strings" in text and "sample 'b:1'" in text
    assert "1 targets are not catalogue items" in text and "sample 'c:1': 7" in text
    assert "1 triples have an entity id outside 0..4" in text and "[0, 0, 9]" in text
    assert "context_entities are outside the graph's entities" in text
    assert all(f.is_error for f in findings)


def test_feedback_is_required_where_the_task_declares_it():
    splits = {"test": [sample("test", "b", 1, TEXTS["b"])]}
    assert kinds(check_data(data(splits), has_feedback=True)) == ["sample key"]
    splits["test"][0]["target_feedback"] = ["Liked"]
    assert kinds(check_data(data(splits), has_feedback=True)) == ["sample type"]
    splits["test"][0]["target_feedback"] = ["liked"]
    assert check_data(data(splits), has_feedback=True) == []


def test_a_release_split_by_turn_overlaps():
    """OpenDialKG's release splits by turn: the turns of one dialogue land in train and test."""
    splits = {"train": [sample("train", "a-t3", 3, TEXTS["a"]), sample("train", "b-t5", 5, TEXTS["b"]),
                        sample("train", "c-t4", 4, TEXTS["c"])],
              "test": [sample("test", "a-t5", 5, TEXTS["a"]), sample("test", "b-t3", 3, TEXTS["b"]),
                       sample("test", "d-t5", 5, TEXTS["d"])]}
    (finding,) = check_data(data(splits), has_feedback=False)
    assert finding.kind == "split overlap" and finding.split == "test" and not finding.is_error
    assert finding.count == 2 and "2 of 3 test dialogues have turns that also appear in train" in finding.message
    assert finding.examples == ["'a-t5', 'b-t3'"]


def test_short_common_openings_are_no_overlap():
    hello = ["Hi", "Hello!", "What do you like?"]
    splits = {"train": [sample("train", "x", 2, hello)], "test": [sample("test", "y", 2, hello)]}
    assert check_data(data(splits), has_feedback=False) == []


def test_duplicate_dialogues_within_a_split():
    splits = {"test": [sample("test", "a", 3, TEXTS["a"]), sample("test", "a-copy", 3, TEXTS["a"]),
                       sample("test", "b", 3, TEXTS["b"])]}
    (finding,) = check_data(data(splits), has_feedback=False)
    assert finding.kind == "duplicate dialogue" and finding.count == 1 and "'a' = 'a-copy'" in finding.examples[0]


@pytest.mark.parametrize("task", ["redial", "inspired"])
def test_the_bundled_tasks_are_clean(task, capsys):
    assert cli("task", "check", task) == 0
    out = capsys.readouterr().out
    assert "clean: no findings" in out and "test: " in out and "graph:" in out


@pytest.fixture
def redial_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CRSBENCH_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "redial"
    out.mkdir()
    with gzip.open(REDIAL_DATA / "train_subset_kgsf.jsonl.gz", "rt") as fh:
        train = [json.loads(next(fh)) for _ in range(20)]
    with gzip.open(REDIAL_DATA / "test_data.jsonl.gz", "rt") as fh:
        test = [json.loads(next(fh)) for _ in range(5)]
    with gzip.open(REDIAL_DATA / "movies_with_mentions.csv.gz", "rb") as fh:
        (out / "movies_with_mentions.csv").write_bytes(fh.read())

    def write(train, test):
        (out / "train_data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in train))
        (out / "test_data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in test))
    write(train, test)
    return out, train, test, write


def test_check_finds_leaked_and_duplicated_dialogues_in_a_data_dir(redial_dir, capsys):
    out, train, test, write = redial_dir
    assert cli("task", "check", "redial", "--data-dir", out) == 0
    assert "data official-full" in capsys.readouterr().out
    leak = json.loads(json.dumps(test[0]))
    leak["conversationId"], leak["messages"] = "leak-1", leak["messages"][:8]  # test dialogue's opening in train
    copy = json.loads(json.dumps(test[1]))
    copy["conversationId"] = "copy-1"  # a test dialogue twice under two ids
    write(train + [leak], test + [copy])
    assert cli("task", "check", "redial", "--data-dir", out) == 1
    text = capsys.readouterr().out
    assert "[split overlap] test: 1 of 6 test dialogues have turns that also appear in train" in text
    assert f"'{test[0]['conversationId']}'" in text
    assert "[duplicate dialogue] test: 1 dialogues repeat another dialogue" in text and "'copy-1'" in text
    assert "2 finding(s); 0 of them make 'crsbench run' refuse the data" in text


def test_the_data_dir_comes_from_the_environment(redial_dir, monkeypatch, capsys):
    out, *_ = redial_dir
    monkeypatch.setenv("CRSBENCH_DATA_REDIAL", str(out))
    assert cli("task", "check", "redial") == 0
    assert "data official-full" in capsys.readouterr().out
    monkeypatch.setenv("CRSBENCH_DATA_REDIAL", str(out / "missing"))
    assert cli("task", "check", "redial") == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: CRSBENCH_DATA_REDIAL ") and "no such directory" in err


class UnbundledTask(Task):
    name = "test-unbundled"
    version = "1"
    requires_data_dir = True
    data_source = "https://example.org/dataset (download data.json)"
    has_feedback = False

    def __init__(self, data_dir=None):
        super().__init__(data_dir)
        self.hashes, self.sha256 = files_sha256([Path(data_dir) / "data.json"])

    def load(self, limit=None):
        rows = json.loads((Path(self.data_dir) / "data.json").read_text())
        return data({"train": [sample("train", "a", 1, TEXTS["a"])],
                     "test": [sample("test", r, 1, TEXTS["b"]) for r in rows]})

    def data_info(self):
        return {"variant": "downloaded", "sha256": self.sha256, "files": self.hashes}


class Plugin:
    @hookimpl
    def register_tasks(self, register):
        register(UnbundledTask)


@pytest.fixture
def unbundled(monkeypatch):
    monkeypatch.delenv("CRSBENCH_DATA_TEST_UNBUNDLED", raising=False)
    registry = get_registry()
    registry.register_plugin(Plugin(), "test-unbundled-plugin")
    yield
    registry.unregister_plugin("test-unbundled-plugin")


def test_a_task_without_bundled_data_says_where_to_get_it(unbundled, tmp_path, capsys):
    assert data_env_var("test-unbundled") == "CRSBENCH_DATA_TEST_UNBUNDLED"
    assert cli("run", "popularity", "--task", "test-unbundled", "--output-dir", tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("Error: task 'test-unbundled' needs its data, which is not bundled (get it from: "
                   "https://example.org/dataset (download data.json)); pass --data-dir DIR or set "
                   "CRSBENCH_DATA_TEST_UNBUNDLED=DIR")
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_data_fingerprint_is_the_files_sha256(unbundled, tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "data.json").write_text('["x"]')
    monkeypatch.setenv("CRSBENCH_DATA_TEST_UNBUNDLED", str(tmp_path / "d"))
    assert resolve_data_dir(UnbundledTask, None) == str(tmp_path / "d")
    task = UnbundledTask(resolve_data_dir(UnbundledTask, None))
    first = task.data_fingerprint()
    (tmp_path / "d" / "data.json").write_text('["y"]')
    assert UnbundledTask(str(tmp_path / "d")).data_fingerprint() not in (None, first)
    with pytest.raises(DataError, match="no such directory"):
        resolve_data_dir(UnbundledTask, str(tmp_path / "nothing"))


def test_redials_fingerprint_uses_the_core_helper():
    from crsbench_tasks.redial.task import RedialTask

    task = RedialTask()
    paths = {name: REDIAL_DATA / name.removeprefix("kg/") for name in task.file_hashes}
    assert files_sha256(paths) == (task.file_hashes, task.data_fingerprint())
