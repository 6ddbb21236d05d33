"""Leaderboards: built from stored result files only, deterministic, checked, published."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from crsbench import leaderboard, results
from crsbench.errors import UserError
from crsbench.leaderboard import build, check, leaderboard_group, load_results, publish, write
from crsbench.results import build_result, seal, write_json_atomic

SHA_A = "a" * 64
SHA_B = "b" * 64


def cell(value, n=100):
    return {"value": value, "ci_low": value - 0.01, "ci_high": value + 0.01, "n": n}


def make_result(model="popularity", profile="default", seed=0, variant="full", sha=SHA_A,
                task_version="1", generates=False, extra_metrics=None, split="test", plugins="default"):
    if plugins == "default":
        plugins = {"model": provenance("baselines", names=[model]), "task": provenance("redial", names=["redial"]),
                   "metrics": [provenance("builtin_metrics", names=["recall@10"])], "rewards": [], "judges": []}
    metrics = {"standard/recall@1": cell(0.0123), "standard/recall@10": cell(0.1354),
               "dedup/recall@10": cell(0.1111), "standard/auc": cell(0.5)}
    if generates:
        metrics.update({"generation/bleu-2": cell(0.08, 50), "generation/dist-2": cell(0.3, 50),
                        "generation/mean_length": cell(14.25, 50)})
    metrics.update(extra_metrics or {})
    return build_result(
        task={"name": "redial", "version": task_version, "protocols": ["standard", "dedup"],
              "data": {"variant": variant, "sha256": sha, "files": {}}},
        model={"name": model, "version": "0.1", "plugin": "baselines", "profile": profile,
               "config": {}, "generates": generates},
        seeds={"run": seed, "bootstrap": 0},
        evaluation={"split": split, "n_bootstrap": 1000, "ci_level": 0.95, "resampling": "dialog",
                    "n_samples": 10, "n_dialogs": 5, "n_targets": {"standard": 100, "dedup": 80},
                    "n_responses": 50 if generates else 0, "limit": None},
        metrics=metrics, timings={"total": 1.0}, device="cpu", created="2024-01-01T00:00:00+00:00",
        plugins=plugins)


def provenance(entry_point, distribution="crsbench", version="0.1.0", names=()):
    return {"entry_point": entry_point, "module": f"{entry_point}_module", "distribution": distribution,
            "version": version, "names": list(names)}


def put(root: Path, name: str, result: dict) -> Path:
    path = root / "results" / result["task"]["name"] / name
    write_json_atomic(path, result)
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "leaderboards"
    put(root, "popularity-default-seed0-full.json", make_result())
    put(root, "lm-default-seed1-full.json", make_result(model="lm", seed=1, generates=True))
    return root


def test_build_twice_is_byte_identical(root):
    first = build(root)
    assert set(first) == {root / "redial.md", root / "redial.csv"}
    assert first == build(root)
    write(root)
    before = {p: p.read_bytes() for p in first}
    write(root)
    assert before == {p: p.read_bytes() for p in first}
    assert b"\r\n" not in before[root / "redial.md"]


def test_markdown_tables_and_cells(root):
    md = build(root)[root / "redial.md"]
    assert "### Recommendation · protocol `standard`" in md
    assert "### Recommendation · protocol `dedup`" in md
    assert md.index("protocol `standard`") < md.index("protocol `dedup`")
    assert "0.135 [0.125, 0.145]" in md  # standard R@10 of a run
    assert "`popularity-default-seed0-full.json`" in md
    # generation table lists the generating model only, with missing metrics as "–"
    generation = md.split("### Generation")[1]
    assert "| lm |" in generation and "popularity" not in generation
    assert "14.2 [14.2, 14.3]" in generation  # mean length: one decimal
    assert "| – |" in generation


def test_csv_long_format(root):
    csv_text = build(root)[root / "redial.csv"]
    lines = csv_text.splitlines()
    assert lines[0] == ",".join(leaderboard.CSV_FIELDS)
    assert any(line.startswith("measured,redial,1,full,aaaaaaaaaaaa,test,,standard,popularity,")
               and ",recall@10,0.1354," in line for line in lines)
    assert len(lines) == 1 + 4 + 7  # header + popularity's 4 metrics + lm's 7


def test_check_passes_after_build_and_fails_after_edits(root):
    assert sorted(check(root)) == [f"{root / 'redial.csv'} (missing)", f"{root / 'redial.md'} (missing)"]
    write(root)
    assert check(root) == []
    # editing a result makes the tables stale
    path = root / "results" / "redial" / "popularity-default-seed0-full.json"
    doc = json.loads(path.read_text())
    doc["metrics"]["standard/recall@10"]["value"] = 0.2
    write_json_atomic(path, doc)
    assert f"{root / 'redial.md'} (stale)" in check(root)
    write(root)
    assert check(root) == []
    # editing a table by hand is caught too
    md = root / "redial.md"
    md.write_text(md.read_text() + "hand edit\n")
    assert check(root) == [f"{md} (stale)"]


def test_extra_generated_file_reported_and_removed(root):
    write(root)
    (root / "README.md").write_text("# hand-written\n")
    stray = root / "oldtask.md"
    stray.write_text(leaderboard.MD_MARKER + "\n\nold\n")
    assert check(root) == [f"{stray} (extra)"]
    write(root)
    assert not stray.exists() and (root / "README.md").exists()
    assert check(root) == []


def test_variants_and_versions_never_share_a_table(tmp_path):
    root = tmp_path / "lb"
    put(root, "a.json", make_result(model="m1"))
    put(root, "b.json", make_result(model="m2", variant="subset", sha=SHA_B))
    put(root, "c.json", make_result(model="m3", task_version="2"))
    put(root, "d.json", make_result(model="m4", sha=SHA_B))  # same variant name, other data
    md = build(root)[root / "redial.md"]
    sections = md.split("\n## ")[1:]
    assert len(sections) == 4
    for model in ("m1", "m2", "m3", "m4"):
        holding = [s for s in sections if f"| {model} |" in s]
        assert len(holding) == 1
        others = {"m1", "m2", "m3", "m4"} - {model}
        assert not any(f"| {o} |" in holding[0] for o in others)
    assert any(s.startswith("redial v2 ") for s in sections)
    assert any("`subset` (sha256 `bbbbbbbbbbbb`)" in s for s in sections)


def test_reported_section_present_and_labelled(root):
    repo_reported = Path(__file__).resolve().parents[1] / "leaderboards" / "reported" / "ecr_table1.json"
    (root / "reported").mkdir(parents=True)
    (root / "reported" / "ecr_table1.json").write_text(repo_reported.read_text())
    md = build(root)[root / "redial.md"]
    reported = md.split("## Reported by the papers (not reproduced here)")[1]
    assert "Zhang et al., Towards Empathetic Conversational Recommender Systems, RecSys 2024, Table 1" in reported
    assert "Data variant: full ReDial (official splits)" in reported
    assert "| ECR | 0.049 | 0.220 | 0.428 | 0.055 | 0.238 | 0.452 | 0.541 |" in reported
    assert "| KBRD | 0.037 | 0.175 | 0.360 | – | – | – | – |" in reported
    # measured tables come first and never contain the paper rows
    assert "| ECR |" not in md.split("## Reported by the papers")[0]


def test_malformed_reported_file_names_it(tmp_path):
    bad = tmp_path / "reported" / "bad.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"source": "x", "task": "redial", "rows": []}))
    with pytest.raises(UserError, match="bad.json"):
        build(tmp_path)


def test_judge_tables_separate_judges_and_rubrics(tmp_path):
    root = tmp_path / "lb"
    put(root, "a.json", make_result(model="m1", extra_metrics={
        "judge/org/judge-a/r1/helpfulness": cell(0.7, 40)}))
    put(root, "b.json", make_result(model="m2", extra_metrics={
        "judge/org/judge-a/r2/helpfulness": cell(0.6, 40)}))
    put(root, "c.json", make_result(model="m3", extra_metrics={
        "judge/judge-b/r1/helpfulness": cell(0.5, 40)}))
    md = build(root)[root / "redial.md"]
    tables = {head: body for head, body in
              (part.split("\n", 1) for part in md.split("### Judge ")[1:])}
    assert set(tables) == {"`org/judge-a` · rubric `r1`", "`org/judge-a` · rubric `r2`",
                           "`judge-b` · rubric `r1`"}
    for head, model in (("`org/judge-a` · rubric `r1`", "m1"), ("`org/judge-a` · rubric `r2`", "m2"),
                        ("`judge-b` · rubric `r1`", "m3")):
        body = tables[head].split("\n### ")[0].split("\n## ")[0]
        assert f"| {model} |" in body
        assert sum(f"| {m} |" in body for m in ("m1", "m2", "m3")) == 1
        assert "helpfulness" in body


def test_bad_judge_key_is_an_error(tmp_path):
    put(tmp_path, "a.json", make_result(extra_metrics={"judge/only-two/parts": cell(0.5)}))
    with pytest.raises(UserError, match="a.json"):
        build(tmp_path)


def test_unknown_metric_gets_its_own_column(tmp_path):
    put(tmp_path, "a.json", make_result(extra_metrics={"standard/hit@5": cell(0.2)}))
    md = build(tmp_path)[tmp_path / "redial.md"]
    standard = md.split("protocol `standard`")[1].split("###")[0]
    assert standard.splitlines()[2].endswith("| AUC | hit@5 |")
    assert "0.200 [0.190, 0.210]" in standard


def test_malformed_result_file_names_it(tmp_path):
    bad = tmp_path / "results" / "redial" / "broken.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(UserError, match="broken.json"):
        load_results(tmp_path)
    bad.write_text(json.dumps({"schema_version": 1, "task": {"name": "redial"}}))
    with pytest.raises(UserError, match="broken.json"):
        load_results(tmp_path)


def test_result_filed_under_wrong_task_is_an_error(tmp_path):
    path = tmp_path / "results" / "other" / "a.json"
    write_json_atomic(path, make_result())
    with pytest.raises(UserError, match="a.json"):
        load_results(tmp_path)


def test_older_schema_is_upgraded_through_read_result(tmp_path, monkeypatch):
    current = results.SCHEMA_VERSION
    put(tmp_path, "old.json", make_result())  # written with the current schema
    monkeypatch.setattr(results, "SCHEMA_VERSION", current + 1)

    def upgrade(doc):
        doc = dict(doc, schema_version=current + 1)
        doc["model"] = dict(doc["model"], version="upgraded")
        return doc

    monkeypatch.setitem(results._UPGRADES, current, upgrade)
    [loaded] = load_results(tmp_path)
    assert loaded["schema_version"] == current + 1
    assert "| popularity | upgraded | crsbench 0.1.0 |" in build(tmp_path)[tmp_path / "redial.md"]


def test_a_schema_1_result_reads_with_unknown_provenance_and_cannot_be_published(tmp_path):
    doc = make_result(plugins=None)
    doc["schema_version"] = 1
    del doc["plugins"]
    path = put(tmp_path / "runs", "result.json", doc)
    loaded = results.read_result(path)
    assert loaded["schema_version"] == results.SCHEMA_VERSION and loaded["plugins"] is None
    with pytest.raises(UserError, match="records no plugin provenance"):
        publish(path, tmp_path / "lb")


def test_publish_refuses_a_plugin_without_a_version(tmp_path):
    doc = make_result()
    doc["plugins"]["metrics"].append(provenance("loose_metrics", distribution=None, version=None))
    run = tmp_path / "run"
    write_json_atomic(run / "result.json", seal(doc))
    with pytest.raises(UserError, match="metrics plugin 'loose_metrics'"):
        publish(run, tmp_path / "lb")
    doc["plugins"]["metrics"][-1]["distribution"] = "loose-metrics"
    doc["plugins"]["metrics"][-1]["version"] = "1.0"
    write_json_atomic(run / "result.json", seal(doc))
    assert publish(run, tmp_path / "lb").is_file()


def test_the_table_shows_the_models_distribution(tmp_path):
    doc = make_result(model="third")
    doc["plugins"]["model"] = provenance("third_plugin", distribution="crsbench-third", version="2.1")
    put(tmp_path, "third.json", doc)
    md = build(tmp_path)[tmp_path / "redial.md"]
    assert "| Model | Version | Package | Profile |" in md and "| third | 0.1 | crsbench-third 2.1 | default |" in md
    assert "crsbench-third 2.1" in build(tmp_path)[tmp_path / "redial.csv"]


def test_publish_copies_and_refuses_overwrite(tmp_path):
    run = tmp_path / "runs" / "r1"
    write_json_atomic(run / "result.json", seal(make_result(variant="full ReDial")))
    root = tmp_path / "lb"
    target = publish(run, root)
    assert target == root / "results" / "redial" / "popularity-default-seed0-full-ReDial.json"
    assert json.loads(target.read_text()) == json.loads((run / "result.json").read_text())
    assert check(root) == []  # tables rebuilt
    assert publish(run, root) == target  # identical result: no-op, no error

    changed = make_result(variant="full ReDial")
    changed["metrics"]["standard/recall@10"]["value"] = 0.3
    write_json_atomic(run / "result.json", seal(changed))
    with pytest.raises(UserError, match="--force"):
        publish(run, root)
    publish(run, root, force=True)
    assert json.loads(target.read_text())["metrics"]["standard/recall@10"]["value"] == 0.3
    assert "0.300 [" in (root / "redial.md").read_text()


def test_publish_rejects_invalid_result(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(UserError, match="newer"):
        publish(run, tmp_path / "lb")


def test_cli_build_check_publish(tmp_path):
    runner = CliRunner()
    root = tmp_path / "lb"
    run = tmp_path / "run"
    write_json_atomic(run / "result.json", seal(make_result()))

    res = runner.invoke(leaderboard_group, ["publish", str(run), "--root", str(root)])
    assert res.exit_code == 0, res.output
    assert "published" in res.output

    res = runner.invoke(leaderboard_group, ["check", "--root", str(root)])
    assert res.exit_code == 0, res.output

    (root / "redial.md").write_text("edited\n")
    res = runner.invoke(leaderboard_group, ["check", "--root", str(root)])
    assert res.exit_code == 1
    assert "redial.md (stale)" in res.output and "crsbench leaderboard build" in res.output

    res = runner.invoke(leaderboard_group, ["build", "--root", str(root)])
    assert res.exit_code == 0 and "redial.md" in res.output
    assert runner.invoke(leaderboard_group, ["check", "--root", str(root)]).exit_code == 0

    other = make_result()
    other["metrics"]["standard/recall@1"]["value"] = 0.5
    write_json_atomic(run / "result.json", seal(other))
    res = runner.invoke(leaderboard_group, ["publish", str(run), "--root", str(root)])
    assert res.exit_code == 2 and "--force" in res.output
    res = runner.invoke(leaderboard_group, ["publish", str(run), "--root", str(root), "--force"])
    assert res.exit_code == 0, res.output


def test_repository_leaderboards_are_up_to_date():
    """What CI runs: the committed tables match the committed result and reported files."""
    root = Path(__file__).resolve().parents[1] / "leaderboards"
    assert check(root) == [], "run `crsbench leaderboard build`"


def test_builtin_metrics_all_have_a_column_or_are_csv_only():
    """Every built-in metric name lands in a named column (or is deliberately CSV-only)."""
    from crsbench.metrics import generation, recommendation

    from crsbench import leaderboard_markdown as md

    rec = {m.name for m in recommendation.all_metrics()}
    gen = {m.name for m in generation.all_metrics()}
    assert [c[0] for c in md.table_columns(md.RECOMMENDATION_COLUMNS, rec)] == \
        [c[0] for c in md.RECOMMENDATION_COLUMNS]
    assert [c[0] for c in md.table_columns(md.GENERATION_COLUMNS, gen, md.CSV_ONLY)] == \
        [c[0] for c in md.GENERATION_COLUMNS]
    for label, aliases, _ in md.RECOMMENDATION_COLUMNS + md.GENERATION_COLUMNS:
        assert aliases[0] in rec | gen, label  # canonical names are the metrics' real names


def test_limited_run_gets_its_own_table(tmp_path):
    put(tmp_path, "full.json", make_result(model="full"))
    limited = make_result(model="quick")
    limited["evaluation"]["limit"] = 20
    put(tmp_path, "quick.json", limited)
    md = build(tmp_path)[tmp_path / "redial.md"]
    sections = md.split("\n## ")[1:]
    assert len(sections) == 2
    [quick] = [s for s in sections if "| quick |" in s]
    assert "first 20 dialogues only" in quick and "| full |" not in quick
