"""Judges measured against people: the CRSArena-Eval loader, the statistics, FACE's
published row reproduced from its released predictions, the trivial predictors recomputed
independently, ``crsbench judge validate`` / ``score-run`` end to end, ``--data-dir`` with
both halves, the judges leaderboard, and one ``Error:`` line for each user mistake."""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from crsbench import hookimpl
from crsbench.judge import Judge, JudgeScore
from crsbench.judge_stats import _spearman
from crsbench.judge_validation import find_validation, read_validation, record_filename, score_run, write_validation
from crsbench_plugins.judges import crsarena
from crsbench_plugins.judges import plugin as judges_plugin
from crsbench_plugins.judges.rubrics import CRSARENA_DIALOGUE, CRSARENA_TURN

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = REPO_ROOT / "plugins" / "judges" / "data"


def raw(name: str):
    return json.loads(gzip.decompress((DATA / name).read_bytes()))


def call_main(args, capsys) -> tuple[int, str, str]:
    from crsbench.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


class LengthJudge(Judge):
    """Scores every metric by the reply's length: 9 * (1 - 1 / (1 + words)), strictly
    increasing in the word count, so its Spearman equals the reply-length predictor's."""

    name = "test-length"
    calls = 0

    @property
    def model_id(self):
        return self.options.get("model_id", "test/length")

    def score(self, items):
        type(self).calls += len(items)
        out = []
        for item in items:
            words = len(str(item.response).split())
            value = 9 * (1 - 1 / (1 + words)) if not self.options.get("reverse") else 9 / (1 + words)
            out.append(JudgeScore({m: value for m in self.metrics}))
        return out


class TestPlugin:
    @hookimpl
    def register_judges(self, register):
        register(LengthJudge)


@pytest.fixture
def registry(isolated_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("CRSBENCH_CACHE_DIR", str(tmp_path / "cache"))
    isolated_registry.register_plugin(judges_plugin, "judges")
    isolated_registry.register_plugin(TestPlugin(), "test_length")
    LengthJudge.calls = 0
    return isolated_registry


# -- the data and its provenance ---------------------------------------------------------------
def test_bundled_files_match_their_provenance():
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for name in ("crs_arena_eval_redial.json.gz", "face_run_redial.json.gz", "crsarena_baselines_published.json.gz"):
        digest = hashlib.sha256(gzip.decompress((DATA / name).read_bytes())).hexdigest()
        line = next(line for line in readme.splitlines() if f"`{name}`" in line)
        assert f"`{digest}`" in line, name
    assert "informagi/face" in readme and "cd4b3f7bcf0c99020e0f4ebc1a3d331220a8953d" in readme and "MIT" in readme
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'crsbench_plugins = \[[^\]]*"\*/data/\*"', pyproject)  # the files ship in the wheel


def test_loader_on_the_bundled_half():
    conversations = crsarena.load_conversations()
    assert len(conversations) == 267 == len(raw("crs_arena_eval_redial.json.gz"))
    turns = crsarena.labelled_turns(conversations)
    assert sum("relevance" in t.labels for t in turns) == 1296
    assert len(turns) == 1299 and all(set(t.labels) <= set(crsarena.TURN_ASPECTS) for t in turns)
    systems = {}
    for c in conversations:
        systems[c["conv_id"].split("_")[0]] = systems.get(c["conv_id"].split("_")[0], 0) + 1
    assert systems == {"kbrd": 61, "crbcrs": 60, "chatgpt": 52, "unicrs": 48, "barcor": 46}
    first = turns[0]
    record = conversations[0]
    assert first.conv_id == record["conv_id"] and first.system == "barcor" and first.half == "redial"
    assert first.context == [record["dialogue"][0]["utterance"]] and first.roles == ["user"]
    assert first.reply == record["dialogue"][1]["utterance"]
    for t in turns[:200]:
        assert len(t.context) == len(t.roles) == t.turn_ind
    dialogues = crsarena.labelled_dialogues(conversations)
    assert len(dialogues) == 267
    assert all(set(d.labels) == set(crsarena.DIALOGUE_ASPECTS) for d in dialogues)
    assert [r for r, _ in dialogues[0].turns][:2] == ["user", "system"]
    # the whole dialogue reaches a judge: everything before its last assistant turn, and that turn
    item = crsarena.dialogue_input(dialogues[0])
    assert item.context + [item.response] == [u for _, u in dialogues[0].turns][:len(item.context) + 1]


def test_loader_reads_plain_and_gzipped_files_and_renames_dialog_overall(tmp_path):
    records = raw("crs_arena_eval_redial.json.gz")[:3]
    for r in records:
        r["dial_level_aggregated"]["dialog_overall"] = r["dial_level_aggregated"].pop("dialogue_overall")
    plain = tmp_path / "crs_arena_eval.json"
    plain.write_text(json.dumps(records))
    packed = tmp_path / "copy.json.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for source in (plain, packed, tmp_path):
        loaded = crsarena.load_conversations(source)
        assert len(loaded) == 3 and "dialogue_overall" in loaded[0]["dial_level_aggregated"]
        assert "dialog_overall" not in loaded[0]["dial_level_aggregated"]
    assert crsarena.labelled_dialogues(loaded)[0].labels["dialogue_overall"] == records[0]["dial_level_aggregated"]["dialog_overall"]


def test_run_files_in_faces_format(tmp_path):
    run = tmp_path / "run.json"
    run.write_text(json.dumps([{"conv_id": "kbrd_redial_u1", "turns": [{"turn_ind": 1.0, "turn_level_pred": {
        "relevance": 2, "interestingness": None}}], "dial_level_pred": {"overall_impression": 1.5, "dialogue_overall": 1}}]))
    predictions = crsarena.read_run(run)
    assert predictions[("kbrd_redial_u1", 1)] == {"relevance": 2.0}  # a float index, a missing value
    assert predictions[("kbrd_redial_u1",)] == {"dialogue_overall": 1.0}  # the canonical key wins over an alias
    face = crsarena.read_run(crsarena.FACE_RUN_FILE)
    assert sum(len(k) == 1 for k in face) == 267


def test_rubrics_are_pinned_and_worded_from_the_dataset():
    for rubric, fingerprint in ((CRSARENA_TURN, "d6699062f4297c6b"), (CRSARENA_DIALOGUE, "2b3df306daa5c7c4")):
        rubric.check()
        assert rubric.compute_fingerprint() == fingerprint, f"{rubric.name} changed: new name and fingerprint"
    assert CRSARENA_TURN.metrics == crsarena.TURN_ASPECTS
    assert CRSARENA_DIALOGUE.metrics == crsarena.DIALOGUE_ASPECTS
    text = CRSARENA_TURN.text
    assert "make sense and meet the user's interests" in text and "want to continue the conversation" in text


# -- statistics --------------------------------------------------------------------------------
def test_weighted_ranks_equal_ranking_the_resampled_data():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, size=40).astype(float)  # many ties, like human labels
    y = x + rng.normal(0, 2, size=40).round(1)
    counts = rng.integers(0, 4, size=(25, 40)).astype(float)
    got = _spearman(x, y, counts)
    for row, value in zip(counts, got):
        idx = np.repeat(np.arange(40), row.astype(int))
        assert value == pytest.approx(stats.spearmanr(x[idx], y[idx])[0], abs=1e-12)


# -- FACE's published row ----------------------------------------------------------------------
def test_face_run_reproduces_the_published_redial_row(registry):
    from crsbench.judge_validation import get_benchmark

    [record] = score_run(str(crsarena.FACE_RUN_FILE), benchmark=get_benchmark("crsarena-eval"), name="FACE",
                         n_bootstrap=0)
    published = crsarena.published_baselines()["redial"]["FACE"]
    assert set(record["aspects"]) == set(crsarena.TURN_ASPECTS + crsarena.DIALOGUE_ASPECTS) == set(published)
    for aspect, numbers in published.items():
        for stat in ("pearson", "spearman"):
            assert abs(record["aspects"][aspect][stat] - numbers[stat]) <= 0.002, (aspect, stat)
    # within-system relevance, as the data README states it
    assert record["aspects"]["relevance"]["within_system_spearman"] == pytest.approx(0.477, abs=0.0015)
    assert record["published"]["FACE"]["relevance"]["spearman"] == 0.55


def test_trivial_predictors_recomputed_from_the_raw_file(registry, tmp_path, capsys):
    code, out, err = call_main(["judge", "score-run", DATA / "face_run_redial.json.gz", "--name", "FACE",
                                "--n-bootstrap", "50", "--output", tmp_path / "face.json"], capsys)
    assert code == 0, err
    record = read_validation(tmp_path / "face.json")
    # independently: from the raw JSON, with scipy
    turns = [(c["conv_id"].split("_")[0], t) for c in raw("crs_arena_eval_redial.json.gz")
             for t in c["dialogue"] if "relevance" in (t.get("turn_level_aggregated") or {})]
    gold = np.array([t["turn_level_aggregated"]["relevance"] for _, t in turns], dtype=float)
    systems = np.array([s for s, _ in turns])
    length = np.array([len(t["utterance"].split()) for _, t in turns], dtype=float)
    year = np.array([bool(re.search(r"\(\d{4}\)", t["utterance"])) for _, t in turns], dtype=float)
    means = {s: gold[systems == s].mean() for s in set(systems)}
    system_mean = np.array([means[s] for s in systems])
    trivial = record["trivial"]
    expected = {"reply length (words)": length, "contains a (YYYY) year": year, "system mean label": system_mean}
    for name, values in expected.items():
        got = trivial[name]["relevance"]
        assert got["spearman"] == pytest.approx(stats.spearmanr(values, gold)[0], abs=1e-6), name
        assert got["pearson"] == pytest.approx(stats.pearsonr(values, gold)[0], abs=1e-6), name
        assert got["n"] == 1296
        lo, hi = got["spearman_ci"]
        assert lo < got["spearman"] < hi
    within = np.mean([stats.spearmanr(length[systems == s], gold[systems == s])[0] for s in sorted(set(systems))])
    assert trivial["reply length (words)"]["relevance"]["within_system_spearman"] == pytest.approx(within, abs=1e-6)
    assert trivial["system mean label"]["relevance"]["within_system_spearman"] is None  # constant within a system
    # the data README's numbers: length .17-.18, year .22, system mean .33
    assert 0.17 <= trivial["reply length (words)"]["relevance"]["spearman"] <= 0.185
    assert 0.21 <= trivial["contains a (YYYY) year"]["relevance"]["spearman"] <= 0.225
    assert 0.32 <= trivial["system mean label"]["relevance"]["spearman"] <= 0.335
    assert "FACE (published)" in out and "system mean label" in out


# -- the command end to end --------------------------------------------------------------------
def test_validate_a_registered_judge_end_to_end(registry, tmp_path, capsys):
    out_file = tmp_path / "length.json"
    args = ["judge", "validate", "test-length", "--limit", "60", "--n-bootstrap", "100", "--no-progress",
            "--output", out_file]
    code, out, err = call_main(args, capsys)
    assert code == 0, err
    assert LengthJudge.calls == 120  # 60 turns + 60 dialogues
    turn = read_validation(tmp_path / "length__crsarena-turn-v1__redial.json")
    dialogue = read_validation(tmp_path / "length__crsarena-dialogue-v1__redial.json")
    assert turn["judge_id"] == "test/length" and turn["rubric"] == "crsarena-turn-v1" and turn["split"] == "all"
    assert turn["data"]["n_turns"] == 60 and turn["data"]["limit"] == 60 and turn["data"]["half"] == "redial"
    assert turn["data"]["sha256"] == hashlib.sha256(gzip.decompress(crsarena.BUNDLED_FILE.read_bytes())).hexdigest()
    assert set(turn["aspects"]) == {"relevance", "interestingness"}
    assert set(dialogue["aspects"]) == set(crsarena.DIALOGUE_ASPECTS)
    for aspect in ("relevance", "interestingness"):  # a monotone function of length ranks as length does
        judged, length = turn["aspects"][aspect], turn["trivial"]["reply length (words)"][aspect]
        assert judged["spearman"] == pytest.approx(length["spearman"], abs=1e-9)
        assert judged["within_system_spearman"] == pytest.approx(length["within_system_spearman"], abs=1e-9)
        assert judged["spearman_ci"] == pytest.approx(length["spearman_ci"], abs=1e-9)  # same draws
    for key in ("schema", "judge", "created", "crsbench_version", "git_commit", "trivial", "published"):
        assert key in turn
    assert turn["judge"]["rubric_version"] == "crsarena-turn-v1"
    assert re.search(r"relevance +judge +0\.\d{3} \[", out)
    # the rerun is answered from the score cache
    code, _, err = call_main(args, capsys)
    assert code == 0, err
    assert LengthJudge.calls == 120
    # one rubric only
    code, _, err = call_main(args[:5] + ["--rubric", "crsarena-turn-v1", "--output", tmp_path / "t.json"], capsys)
    assert code == 0 and (tmp_path / "t.json").is_file() and read_validation(tmp_path / "t.json")["rubric"] == "crsarena-turn-v1"


def test_limit_samples_whole_conversations_of_every_system():
    """--limit N: the first N units of a fixed pseudo-random order of conversations (the
    order a full run scores in, so an interrupted run's cached part is such a sample too)."""
    from crsbench.judge_validation import _limited, scoring_order

    units = crsarena.load_units()
    limited = _limited(units.units, 200)
    turns = limited["turn"]
    assert len(turns) == 200 and len(limited["dialogue"]) == 200
    assert {u.system for u in turns} == {u.system for u in units.units["turn"]}  # all 5 systems
    groups = [u.group for u in turns]
    assert all(g not in groups[groups.index(g) + groups.count(g):] for g in set(groups))  # conversations whole
    assert turns == scoring_order(units.units["turn"])[:200] == _limited(crsarena.load_units().units, 200)["turn"]
    assert sorted(u.key for u in scoring_order(units.units["turn"])) == sorted(u.key for u in units.units["turn"])


def complete_file(tmp_path: Path) -> Path:
    """A synthetic 'complete' file: the bundled half plus 40 of its conversations relabelled
    as OpenDialKG ones, their ratings shuffled so the two halves differ."""
    records = raw("crs_arena_eval_redial.json.gz")
    rng = np.random.default_rng(0)
    other = []
    for r in records[:40]:
        r = json.loads(json.dumps(r))
        system, _, rest = r["conv_id"].split("_", 2)
        r["conv_id"] = f"{system}_opendialkg_{rest}"
        for t in r["dialogue"]:
            if "turn_level_aggregated" in t:
                t["turn_level_aggregated"] = {k: float(rng.integers(0, 3)) for k in t["turn_level_aggregated"]}
        other.append(r)
    folder = tmp_path / "official"
    folder.mkdir()
    (folder / "crs_arena_eval.json").write_text(json.dumps(records + other))
    return folder


def test_data_dir_with_both_halves_reports_each(registry, tmp_path, capsys):
    folder = complete_file(tmp_path)
    code, out, err = call_main(["judge", "validate", "test-length", "--data-dir", folder, "--rubric",
                                "crsarena-turn-v1", "--n-bootstrap", "20", "--no-progress",
                                "--output", tmp_path / "v.json"], capsys)
    assert code == 0, err
    halves = {h: read_validation(tmp_path / f"v__crsarena-turn-v1__{h}.json") for h in ("redial", "opendialkg")}
    assert halves["redial"]["aspects"]["relevance"]["n"] == 1296
    n_other = sum(1 for c in json.loads((folder / "crs_arena_eval.json").read_text())[-40:] for t in c["dialogue"]
                  if "relevance" in (t.get("turn_level_aggregated") or {}))
    assert halves["opendialkg"]["aspects"]["relevance"]["n"] == n_other
    assert halves["opendialkg"]["data"]["sha256"] == hashlib.sha256((folder / "crs_arena_eval.json").read_bytes()).hexdigest()
    assert halves["opendialkg"]["published"]["FACE"]["relevance"]["spearman"] == \
        crsarena.published_baselines()["opendialkg"]["FACE"]["relevance"]["spearman"]
    assert halves["redial"]["aspects"]["relevance"] != halves["opendialkg"]["aspects"]["relevance"]
    assert "half opendialkg" in out and "half redial" in out


# -- the leaderboard ---------------------------------------------------------------------------
def test_judges_leaderboard_build_and_check(registry, tmp_path, capsys):
    root = tmp_path / "lb"
    code, _, err = call_main(["judge", "score-run", DATA / "face_run_redial.json.gz", "--name", "FACE",
                              "--n-bootstrap", "30", "--publish", "--root", root], capsys)
    assert code == 0, err
    # a judge whose name needs escaping and that is worse than trivial (it prefers short replies)
    code, _, err = call_main(["judge", "validate", "test-length", "--judge-option", "reverse=true",
                              "--judge-option", "model_id=bad|judge*_x", "--rubric", "crsarena-turn-v1",
                              "--n-bootstrap", "30", "--no-progress", "--publish", "--root", root], capsys)
    assert code == 0, err
    files = sorted(p.name for p in (root / "results" / "judges").iterdir())
    assert files == ["FACE-b098bac3__run-file__redial.json", "bad-judge-_x__crsarena-turn-v1__redial.json"] or \
        len(files) == 2
    md = (root / "judges.md").read_text(encoding="utf-8")
    assert r"bad\|judge\*\_x" in md and "bad|judge" not in md
    bad_row = next(line for line in md.splitlines() if line.startswith(r"| bad\|judge") and "0." in line)
    assert "below a trivial predictor" in bad_row and "▼" in bad_row
    face_row = next(line for line in md.splitlines() if line.startswith("| FACE~") or line.startswith(r"| FACE\~"))
    assert "▼" not in face_row
    assert "| FACE | published (paper) | 0.550 |" in md and "| reply length (words) | trivial predictor |" in md
    csv_text = (root / "judges.csv").read_text(encoding="utf-8")
    assert csv_text.startswith("origin,task,") and ",reported,"[1:] in csv_text
    code, out, _ = call_main(["leaderboard", "check", "--root", root], capsys)
    assert code == 0 and "up to date" in out
    # a changed record makes the tables stale, and build fixes it
    path = root / "results" / "judges" / files[0]
    record = json.loads(path.read_text())
    record["aspects"]["relevance"]["spearman"] = 0.123
    path.write_text(json.dumps(record))
    code, _, err = call_main(["leaderboard", "check", "--root", root], capsys)
    assert code == 1 and "judges.md (stale)" in err
    code, _, _ = call_main(["leaderboard", "build", "--root", root], capsys)
    assert code == 0 and "0.123" in (root / "judges.md").read_text(encoding="utf-8")
    # records alone: deleting them removes the generated tables
    for p in (root / "results" / "judges").iterdir():
        p.unlink()
    code, _, _ = call_main(["leaderboard", "build", "--root", root], capsys)
    assert not (root / "judges.md").exists() and not (root / "judges.csv").exists()


def test_records_are_found_by_judge_id_and_rubric(tmp_path, registry, capsys):
    root = tmp_path / "lb"
    code, _, err = call_main(["judge", "validate", "test-length", "--limit", "30", "--n-bootstrap", "0",
                              "--rubric", "crsarena-turn-v1", "--no-progress", "--output", tmp_path / "x.json"], capsys)
    assert code == 0, err
    record = read_validation(tmp_path / "x.json")
    assert record_filename(record) == "test-length__crsarena-turn-v1__redial.json"
    assert find_validation("test/length", "crsarena-turn-v1", root=root) is None
    write_validation(record, root / "results" / "judges" / record_filename(record))
    found = find_validation("test/length", "crsarena-turn-v1", root=root)
    assert found["judge_id"] == "test/length" and found["data"]["limit"] == 30  # only a --limit one: returned
    code, _, err = call_main(["judge", "validate", "test-length", "--limit", "30", "--n-bootstrap", "0", "--rubric",
                              "crsarena-turn-v1", "--no-progress", "--publish", "--root", root], capsys)
    assert code == 0, err  # a --limit record can be published; the table says it is a sample
    assert "a sample of 30 units per level only (--limit" in (root / "judges.md").read_text()
    complete = dict(record, data=dict(record["data"], limit=None), split="grouped 5-fold by conversation")
    write_validation(complete, root / "results" / "judges" / "z.json")
    assert find_validation("test/length", "crsarena-turn-v1", root=root)["split"].startswith("grouped")
    assert find_validation("test/length", "crsarena-dialogue-v1", root=root) is None
    with pytest.raises(Exception, match="missing 'aspects'"):
        write_validation({k: v for k, v in record.items() if k != "aspects"}, tmp_path / "bad.json")


def test_held_out_predictions_recorded_under_a_judges_own_id(registry, tmp_path, capsys):
    """How a learned judge publishes its cross-validated predictions: a run file scored under
    its judge id and rubric, with the held-out protocol as the split; the gate finds it."""
    root = tmp_path / "lb"
    code, _, err = call_main(["judge", "score-run", DATA / "face_run_redial.json.gz", "--judge-id", "learned~0123abcd",
                              "--rubric", "crsarena-turn-v1", "--split", "grouped 5-fold CV by conversation",
                              "--n-bootstrap", "20", "--publish", "--root", root], capsys)
    assert code == 0, err
    record = find_validation("learned~0123abcd", "crsarena-turn-v1", root=root)
    assert record["split"] == "grouped 5-fold CV by conversation" and record["levels"] == ["turn"]
    assert set(record["aspects"]) == {"relevance", "interestingness"}
    assert record["_path"].endswith("learned-0123abcd__crsarena-turn-v1__redial.json")
    assert "run file · rubric crsarena-turn-v1 · split grouped 5-fold CV by conversation" in (root / "judges.md").read_text()


# -- user mistakes: one Error line, exit 2 ------------------------------------------------------
@pytest.mark.parametrize("case", ["unknown judge", "missing run file", "malformed run file", "missing data dir",
                                  "unknown rubric", "bad data file", "rubric as option"])
def test_bad_inputs_give_one_error_line(case, registry, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"conv_id": "x_redial_1", "turns": [{"turn_ind": "one"}]}]))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "crs_arena_eval.json").write_text("{not json")
    args = {"unknown judge": ["judge", "validate", "no-such-judge"],
            "missing run file": ["judge", "score-run", tmp_path / "nope.json"],
            "malformed run file": ["judge", "score-run", bad],
            "missing data dir": ["judge", "validate", "test-length", "--data-dir", tmp_path / "nowhere"],
            "unknown rubric": ["judge", "validate", "test-length", "--rubric", "ecr-subjective-v1"],
            "bad data file": ["judge", "validate", "test-length", "--data-dir", broken],
            "rubric as option": ["judge", "validate", "test-length", "--judge-option", "rubric=crsarena-turn-v1"]}[case]
    code, _, err = call_main(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), (code, err)
    assert "Traceback" not in err
    assert not (tmp_path / "lb").exists()


def test_the_judge_command_and_the_loader_import_nothing_heavy(tmp_path):
    code = ("import sys, json\n"
            "import crsbench_plugins.judges.crsarena, crsbench.judge_validation, crsbench.judge_leaderboard\n"
            "light = [m for m in ('scipy', 'torch', 'transformers') if m in sys.modules]\n"
            "from crsbench.cli import main\n"
            "try:\n    main(['judge', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(json.dumps([light, [m for m in ('scipy', 'torch', 'transformers') if m in sys.modules]]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [[], []]
