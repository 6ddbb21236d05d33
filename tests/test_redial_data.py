"""The ``redial`` task on real data: the bundled ReDial files and a tiny official layout.

One uncached load of the bundled data (~7 s) is shared by the module; it goes to a private
cache directory so that the cache tests see exactly what this module wrote.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
from collections import Counter

import pytest

from crsbench.errors import DataError
from crsbench_tasks.redial import preprocess
from crsbench_tasks.redial.kg import DATA_DIR
from crsbench_tasks.redial.task import BUNDLED_TEST, BUNDLED_TRAIN, RedialTask, split_of

N_TEST_DIALOGS = 1342
N_TEST_SAMPLES = 7978
N_TRAIN_VALID_DIALOGS = 1813
FEEDBACK_VALUES = {"liked", "disliked", "unknown"}
HAND_PICKED = "20381"  # a short test dialogue: merged turns, liked/disliked/unknown targets


def _raw(name: str) -> list[dict]:
    with gzip.open(DATA_DIR / name, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("redial-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRSBENCH_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def task(cache_dir):
    return RedialTask()


@pytest.fixture(scope="module")
def data(task):
    return task.load()


@pytest.fixture(scope="module")
def rows(data):
    return {name: ds.to_list() for name, ds in data.splits.items()}


@pytest.fixture(scope="module")
def raw_test():
    return _raw(BUNDLED_TEST)


@pytest.fixture(scope="module")
def raw_train():
    out = {}
    for name in BUNDLED_TRAIN:
        for dialog in _raw(name):
            out.setdefault(dialog["conversationId"], dialog)
    return out


def _by_dialog(samples) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for s in samples:
        out.setdefault(s["dialog_id"], []).append(s)
    return out


def _sender_runs(dialog) -> list:
    """The sender of each turn (a run of consecutive messages of one sender)."""
    senders = [m["senderWorkerId"] for m in dialog["messages"]]
    return [s for k, s in enumerate(senders) if k == 0 or senders[k - 1] != s]


# -- splits ----------------------------------------------------------------------------------

def test_split_sizes(data, rows, raw_test, raw_train):
    test_ids = {r["dialog_id"] for r in rows["test"]}
    assert len(test_ids) == N_TEST_DIALOGS == len(raw_test)
    assert len(rows["test"]) == N_TEST_SAMPLES
    train_ids = {r["dialog_id"] for r in rows["train"]}
    valid_ids = {r["dialog_id"] for r in rows["valid"]}
    assert len(train_ids) + len(valid_ids) == N_TRAIN_VALID_DIALOGS == len(raw_train)
    assert train_ids | valid_ids == set(raw_train)


def test_valid_is_the_sha256_rule_and_disjoint_from_train(rows):
    train_ids = {r["dialog_id"] for r in rows["train"]}
    valid_ids = {r["dialog_id"] for r in rows["valid"]}
    assert not train_ids & valid_ids
    for cid in valid_ids:
        assert int(hashlib.sha256(cid.encode()).hexdigest(), 16) % 10 == 0
        assert split_of(cid) == "valid"
    for cid in train_ids:
        assert int(hashlib.sha256(cid.encode()).hexdigest(), 16) % 10 != 0
        assert split_of(cid) == "train"
    assert 0.05 < len(valid_ids) / (len(train_ids) + len(valid_ids)) < 0.15
    assert split_of(20381) == split_of("20381")  # ids read as numbers split the same way


def test_no_test_conversation_in_train(rows):
    test_ids = {r["dialog_id"] for r in rows["test"]}
    other = {r["dialog_id"] for name in ("train", "valid") for r in rows[name]}
    assert not test_ids & other
    assert min(int(c) for c in test_ids) > max(int(c) for c in other)


# -- samples ---------------------------------------------------------------------------------

def _check_sample(s: dict, n_entities: int) -> None:
    assert isinstance(s["sample_id"], str) and isinstance(s["dialog_id"], str)
    assert isinstance(s["turn"], int) and s["turn"] >= 0
    assert s["sample_id"] == f"{s['dialog_id']}:{s['turn']}"
    assert isinstance(s["context"], list) and all(isinstance(t, str) for t in s["context"])
    assert len(s["context"]) == len(s["context_roles"]) == s["turn"]
    assert set(s["context_roles"]) <= {"seeker", "recommender"}
    # merged turns alternate, and a recommender turn always follows a seeker turn
    assert all(a != b for a, b in zip(s["context_roles"], s["context_roles"][1:]))
    assert not s["context_roles"] or s["context_roles"][-1] == "seeker"
    for key in ("context_items", "context_entities", "targets", "response_entities"):
        assert isinstance(s[key], list) and all(isinstance(e, int) for e in s[key]), key
        assert all(0 <= e < n_entities for e in s[key]), key
    assert len(set(s["context_entities"])) == len(s["context_entities"])
    assert len(set(s["response_entities"])) == len(s["response_entities"])
    assert set(s["context_items"]) <= set(s["context_entities"])
    assert isinstance(s["target_feedback"], list) and len(s["target_feedback"]) == len(s["targets"])
    assert set(s["target_feedback"]) <= FEEDBACK_VALUES
    assert isinstance(s["response"], str) and s["response"].strip()
    assert isinstance(s["response_template"], str)
    if "context_entity_turns" in s:  # the turn that last mentions each context entity
        turns = s["context_entity_turns"]
        assert len(turns) == len(s["context_entities"])
        assert all(isinstance(t, int) and 0 <= t < s["turn"] for t in turns)


def test_every_sample_field_has_the_right_type(task, rows):
    n_entities = task.kg.num_entities
    for name, samples in rows.items():
        assert samples, name
        for s in samples:
            _check_sample(s, n_entities)


def test_turns_merge_consecutive_messages_of_one_sender(rows, raw_test):
    by_dialog = _by_dialog(rows["test"])
    for dialog in raw_test:
        runs = _sender_runs(dialog)
        recommender_turns = [k for k, s in enumerate(runs) if s != dialog["initiatorWorkerId"]]
        assert [s["turn"] for s in by_dialog[dialog["conversationId"]]] == recommender_turns
        last = by_dialog[dialog["conversationId"]][-1]
        assert len(last["context"]) == last["turn"]
    # hand-picked: messages 3 and 4 (both from the recommender) form turn 2
    dialog = next(d for d in raw_test if d["conversationId"] == HAND_PICKED)
    samples = {s["turn"]: s for s in by_dialog[HAND_PICKED]}
    assert dialog["messages"][2]["senderWorkerId"] == dialog["messages"][3]["senderWorkerId"]
    assert samples[2]["response"] == (
        "There is a movie called Uncle Buck and it is absolutely hilarious. Well Uncle Buck is "
        "family friendly I could do better I am sure. How abut The Hunger Games (2012) and "
        "The Hunger Games: Catching Fire (2013)")
    assert samples[2]["response_template"] == (
        "There is a movie called <movie> and it is absolutely hilarious. Well <movie> is family "
        "friendly I could do better I am sure. How abut <movie> and <movie>")
    # two seeker messages in a row before the last recommender turn: one context turn
    assert samples[10]["context"][-1] == ("We havent seen that one but they do like super heroes "
                                          "I think that should be enough movies for one sleepover")
    assert samples[10]["context_roles"] == ["recommender", "seeker"] * 5


def test_mentions_are_replaced_by_titles(rows, raw_test):
    mention = re.compile(r"@\d")
    for s in rows["test"]:
        assert not any(mention.search(t) for t in s["context"]), s["sample_id"]
        assert not mention.search(s["response"]) and not mention.search(s["response_template"])
    first = next(s for s in rows["test"] if s["sample_id"] == "20001:1")
    assert raw_test[0]["messages"][0]["text"] == "Hi I am looking for a movie like @111776"
    assert first["context"] == ["Hi I am looking for a movie like Super Troopers (2001)"]
    assert first["response"] == "You should watch Police Academy (1984)"
    assert first["response_template"] == "You should watch <movie>"
    # every mention of the recommender's turn is a <movie> slot in the template
    by_dialog = _by_dialog(rows["test"])
    for dialog in raw_test[:200]:
        runs, turn, texts = [], -1, {}
        for k, m in enumerate(dialog["messages"]):
            if k == 0 or dialog["messages"][k - 1]["senderWorkerId"] != m["senderWorkerId"]:
                turn += 1
            texts.setdefault(turn, []).append(m["text"])
        for s in by_dialog[dialog["conversationId"]]:
            n_mentions = sum(len(re.findall(r"@\d+", t)) for t in texts[s["turn"]])
            assert s["response_template"].count("<movie>") == n_mentions, s["sample_id"]


def test_targets_are_catalogue_items(data, rows):
    items = set(data.items)
    assert len(items) == 6281
    n_targets = 0
    for samples in rows.values():
        for s in samples:
            assert set(s["targets"]) <= items and set(s["context_items"]) <= items
            n_targets += len(s["targets"])
    assert n_targets > 4000
    assert sum(len(s["targets"]) for s in rows["test"]) == 4820
    assert set(data.item_names) >= items and all(data.item_names[i] for i in items)


def test_target_feedback_comes_from_initiator_questions(rows, raw_test):
    dialog = next(d for d in raw_test if d["conversationId"] == HAND_PICKED)
    asked = dialog["initiatorQuestions"]
    # the two questionnaires disagree here: only the seeker's answers count
    assert asked["177915"]["liked"] == 0 and dialog["respondentQuestions"]["177915"]["liked"] == 2
    assert asked["133236"]["liked"] == 1 and dialog["respondentQuestions"]["133236"]["liked"] == 2
    assert asked["181715"]["liked"] == 2
    samples = {s["turn"]: s for s in rows["test"] if s["dialog_id"] == HAND_PICKED}
    assert sorted(samples) == [0, 2, 4, 6, 8, 10]
    # turn 2: Uncle Buck twice (disliked), The Hunger Games and Catching Fire (liked)
    assert samples[2]["target_feedback"] == ["disliked", "disliked", "liked", "liked"]
    assert len(samples[2]["targets"]) == 4 and samples[2]["targets"][0] == samples[2]["targets"][1]
    assert samples[4]["target_feedback"] == ["liked"]    # Wonder Woman (2017)
    assert samples[6]["target_feedback"] == ["liked"]    # X-Men: Apocalypse: seeker 1, recommender 2
    assert samples[8]["target_feedback"] == ["unknown"]  # Logan (2017): 2 = "did not say"
    assert samples[0]["targets"] == [] and samples[10]["targets"] == []
    # whole split: initiatorQuestions given as [] (no answers) -> every target "unknown"
    no_answers = {d["conversationId"] for d in raw_test if not isinstance(d["initiatorQuestions"], dict)}
    assert no_answers
    for s in rows["test"]:
        if s["dialog_id"] in no_answers:
            assert set(s["target_feedback"]) <= {"unknown"}
    counts = Counter(f for s in rows["test"] for f in s["target_feedback"])
    assert counts["liked"] > counts["disliked"] > 0 and counts["unknown"] > 0


def test_first_recommender_turn_with_empty_context(rows, raw_test):
    opening = [s for s in rows["test"] if s["turn"] == 0]
    assert all(s["context"] == [] and s["context_roles"] == [] and s["context_items"] == []
               and s["context_entities"] == [] for s in opening)
    opened_by_recommender = [d for d in raw_test
                             if d["messages"][0]["senderWorkerId"] != d["initiatorWorkerId"]]
    assert len(opening) == len(opened_by_recommender) == 891
    hand = next(s for s in opening if s["dialog_id"] == HAND_PICKED)
    assert hand["response"] == "Hi there are you interested in some classic comedies?"


def test_limit_keeps_the_first_n_test_dialogues(task, rows, raw_test):
    limited = task.load(limit=5)
    test = limited.splits["test"].to_list()
    first = [d["conversationId"] for d in raw_test[:5]]
    assert list(dict.fromkeys(s["dialog_id"] for s in test)) == first
    assert test == [s for s in rows["test"] if s["dialog_id"] in first]
    assert len(limited.splits["train"]) == len(rows["train"])
    assert len(limited.splits["valid"]) == len(rows["valid"])


def test_data_info(task, data):
    info = task.data_info()
    assert info["variant"] == "bundled"
    assert re.fullmatch(r"[0-9a-f]{64}", info["sha256"])
    files = info["files"]
    for name in (*BUNDLED_TRAIN, BUNDLED_TEST, "movies_with_mentions.csv.gz"):
        assert files[name] == _sha256(DATA_DIR / name)
    assert files["kg/entity2id.json.gz"] == _sha256(DATA_DIR / "entity2id.json.gz")
    assert {"kg/dbpedia_subkg.json.gz", "kg/item_ids.json.gz", "kg/movieid2dbpedia.json.gz"} <= set(files)
    assert info["n_dialogs"] == {"train": 1630, "valid": 183, "test": N_TEST_DIALOGS}
    assert "sha256" in info["split_rule"] and info["preprocess_version"] == preprocess.PREPROCESS_VERSION
    json.dumps(info)  # goes into run records as is


def test_cache_is_reused(monkeypatch, data, task, cache_dir):
    def boom(*args, **kwargs):
        raise AssertionError("preprocessing ran although the cache holds the splits")

    monkeypatch.setattr(preprocess, "process_dialogs", boom)
    monkeypatch.setattr(preprocess, "process_dialog", boom)
    again = RedialTask().load()
    assert {k: len(v) for k, v in again.splits.items()} == {k: len(v) for k, v in data.splits.items()}
    assert again.splits["test"][0] == data.splits["test"][0]
    entries = [p.name for p in (cache_dir / "redial").iterdir()]
    assert entries == [f"{task.data_sha256[:16]}-p{preprocess.PREPROCESS_VERSION}"]


def test_find_items_finds_titles_in_text(task, data):
    found = task.find_items("Have you seen Titanic? The Dark Knight is better.")
    assert [data.item_names[i] for i in found] == ["Titanic (1997)", "The Dark Knight (2008)"]
    assert set(found) <= set(data.items)
    assert task.find_items("I had a nice day, thanks for asking") == []


# -- the official --data-dir layout ------------------------------------------------------------

def _write_official(root, raw_test, raw_train, n_test=3) -> dict:
    """A tiny official-layout directory; returns the conversation ids per split."""
    root.mkdir(parents=True, exist_ok=True)
    train, valid = [], []
    for cid, dialog in raw_train.items():  # five of each side of the split rule
        side = train if split_of(cid) == "train" else valid
        if len(side) < 5:
            side.append(dialog)
        if len(train) == len(valid) == 5:
            break
    test = raw_test[:n_test]
    dialogs = train + valid + test
    (root / "train_data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in train + valid))
    (root / "test_data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in test))
    mentioned = {mid for d in dialogs for m in d["messages"] for mid in re.findall(r"@(\d+)", m["text"])}
    with gzip.open(DATA_DIR / "movies_with_mentions.csv.gz", "rt", encoding="utf-8", newline="") as f:
        table = list(csv.DictReader(f))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["movieId", "movieName", "nbMentions"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(row for row in table if row["movieId"] in mentioned)
    (root / "movies_with_mentions.csv").write_text(out.getvalue())
    return {"train": [d["conversationId"] for d in train], "valid": [d["conversationId"] for d in valid],
            "test": [d["conversationId"] for d in test]}


def test_official_data_dir(tmp_path, monkeypatch, task, rows, raw_test, raw_train):
    monkeypatch.setenv("CRSBENCH_CACHE_DIR", str(tmp_path / "cache"))
    ids = _write_official(tmp_path / "redial", raw_test, raw_train)
    calls = []
    real = preprocess.process_dialogs
    monkeypatch.setattr(preprocess, "process_dialogs", lambda *a, **k: calls.append(1) or real(*a, **k))

    official = RedialTask(str(tmp_path / "redial"))
    loaded = official.load()
    assert len(calls) == 3  # train, valid, test
    info = official.data_info()
    assert info["variant"] == "official-full"
    assert info["sha256"] != task.data_sha256 and re.fullmatch(r"[0-9a-f]{64}", info["sha256"])
    for name in ("train_data.jsonl", "test_data.jsonl", "movies_with_mentions.csv"):
        assert info["files"][name] == _sha256(tmp_path / "redial" / name)
    assert info["n_dialogs"] == {"train": 5, "valid": 5, "test": 3}
    for split in ("train", "valid", "test"):
        assert list(dict.fromkeys(loaded.splits[split]["dialog_id"])) == ids[split]
    # the same dialogues give the same samples as in the bundled variant
    expected = [s for s in rows["test"] if s["dialog_id"] in ids["test"]]
    assert loaded.splits["test"].to_list() == expected
    expected_valid = [s for s in rows["valid"] if s["dialog_id"] in ids["valid"]]
    assert loaded.splits["valid"].to_list() == expected_valid

    # a second load comes from the cache
    again = RedialTask(str(tmp_path / "redial")).load()
    assert len(calls) == 3
    assert again.splits["test"].to_list() == expected


def test_damaged_cache_is_rebuilt_and_replaced(tmp_path, monkeypatch, raw_test, raw_train):
    monkeypatch.setenv("CRSBENCH_CACHE_DIR", str(tmp_path / "cache"))
    _write_official(tmp_path / "redial", raw_test, raw_train, n_test=2)
    first = RedialTask(str(tmp_path / "redial")).load().splits["test"].to_list()
    (entry,) = (tmp_path / "cache" / "redial").iterdir()
    for arrow in (entry / "test").glob("*.arrow"):
        arrow.write_bytes(b"not arrow")
    assert RedialTask(str(tmp_path / "redial")).load().splits["test"].to_list() == first
    assert [p.name for p in (tmp_path / "cache" / "redial").iterdir()] == [entry.name]  # no tmp left
    calls = []
    monkeypatch.setattr(preprocess, "process_dialogs", lambda *a, **k: calls.append(1) or [])
    assert RedialTask(str(tmp_path / "redial")).load().splits["test"].to_list() == first
    assert not calls  # the rebuilt cache is used again


def test_missing_file_is_a_data_error_naming_it(tmp_path, raw_test, raw_train):
    root = tmp_path / "redial"
    _write_official(root, raw_test, raw_train, n_test=1)
    (root / "movies_with_mentions.csv").unlink()
    with pytest.raises(DataError, match="movies_with_mentions.csv"):
        RedialTask(str(root))
    with pytest.raises(DataError, match="no such directory"):
        RedialTask(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("name, lines, where", [
    ("train_data.jsonl", ["GOOD", "{not json"], "train_data.jsonl:2"),
    ("test_data.jsonl", ["GOOD", "", "GOOD", "[1, 2]"], "test_data.jsonl:4"),  # blank lines count
])
def test_malformed_jsonl_line_is_a_data_error_naming_file_and_line(
        tmp_path, monkeypatch, raw_test, raw_train, name, lines, where):
    monkeypatch.setenv("CRSBENCH_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "redial"
    _write_official(root, raw_test, raw_train, n_test=1)
    good = json.dumps(raw_test[0])
    (root / name).write_text("".join((good if line == "GOOD" else line) + "\n" for line in lines))
    with pytest.raises(DataError, match=re.escape(where)):
        RedialTask(str(root)).load()
