"""End-to-end runs of the baselines through the CLI on real ReDial test dialogues."""
import json

import pytest

from crsbench.cli import main
from crsbench.results import SCHEMA_VERSION, read_result


def cli(*args):
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    runs = {}
    for model in ("popularity", "repeat-context", "random"):
        assert cli("run", model, "--task", "redial", "--limit", "40", "--n-bootstrap", "200",
                   "--output-dir", str(out), "--no-progress") == 0
        runs[model] = out / f"{model}_redial_default_s0_n40"
    return runs


def test_run_directory_contents(small_runs):
    run_dir = small_runs["popularity"]
    for name in ("config.json", "log.txt", "predictions.jsonl", "result.json", "item_names.json"):
        assert (run_dir / name).is_file(), name
    records = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len({r["dialog_id"] for r in records}) == 40
    assert all(r["response"] is None for r in records)  # popularity does not generate


def test_result_file_records_provenance(small_runs):
    result = read_result(small_runs["popularity"])
    assert result["schema_version"] == SCHEMA_VERSION
    assert result["task"]["name"] == "redial" and result["task"]["version"]
    assert result["task"]["protocols"] == ["standard", "dedup"]
    assert len(result["task"]["data"]["sha256"]) == 64 and result["task"]["data"]["variant"] == "bundled"
    assert result["model"]["name"] == "popularity" and result["model"]["profile"] == "default"
    assert result["seeds"] == {"run": 0, "bootstrap": 0}
    assert "torch" in result["environment"]["libraries"] and result["environment"]["device"] == "cpu"
    assert "commit" in result["environment"]["git"]
    assert result["peak_memory_mb"] > 0 and result["timings"]["total"] > 0
    assert any("does not generate" in note for note in result["notes"])
    assert not any(key.startswith("generation/") for key in result["metrics"])
    r10 = result["metrics"]["standard/recall@10"]
    assert r10["ci_low"] <= r10["value"] <= r10["ci_high"]
    assert result["evaluation"]["n_targets"]["standard"] == r10["n"] > 0
    assert result["evaluation"]["n_targets"]["dedup"] <= r10["n"]


def test_evaluate_rescoring_reproduces_metrics(small_runs):
    run_dir = small_runs["repeat-context"]
    before = read_result(run_dir)["metrics"]
    assert cli("evaluate", str(run_dir)) == 0
    assert read_result(run_dir)["metrics"] == before


def test_same_seed_same_metrics(small_runs, tmp_path):
    assert cli("run", "random", "--task", "redial", "--limit", "40", "--n-bootstrap", "200",
               "--output-dir", str(tmp_path), "--no-progress") == 0
    again = read_result(tmp_path / "random_redial_default_s0_n40")["metrics"]
    assert again == read_result(small_runs["random"])["metrics"]


def test_repeat_context_gains_vanish_under_dedup(small_runs):
    rep = read_result(small_runs["repeat-context"])["metrics"]
    pop = read_result(small_runs["popularity"])["metrics"]
    assert rep["standard/recall@10"]["value"] > pop["standard/recall@10"]["value"]
    # With context items removed from the ranking, repeat-context *is* popularity.
    for key in pop:
        if key.startswith("dedup/"):
            assert rep[key]["value"] == pop[key]["value"], key


def test_compare_and_samples(small_runs, capsys):
    assert cli("compare", str(small_runs["popularity"]), str(small_runs["repeat-context"]),
               "--n-bootstrap", "200") == 0
    out = capsys.readouterr().out
    assert "standard/recall@10" in out and "p" in out
    assert cli("samples", str(small_runs["repeat-context"]), "-n", "2") == 0
    out = capsys.readouterr().out
    assert out.count("===") == 4 and "reference:" in out


def test_resume_refuses_changed_config(small_runs, capsys):
    out_dir = small_runs["popularity"].parent
    code = cli("run", "popularity", "--task", "redial", "--limit", "40", "--n-bootstrap", "100",
               "--output-dir", str(out_dir), "--no-progress")
    assert code == 2
    assert "different configuration" in capsys.readouterr().err


def test_the_result_records_the_commit_the_run_started_from(tmp_path, monkeypatch):
    """A commit made while a long run works must not be credited with its result."""
    from crsbench import results

    states = iter([{"commit": "a" * 40, "dirty": False}] + [{"commit": "b" * 40, "dirty": True}] * 10)
    monkeypatch.setattr(results, "git_state", lambda *a, **k: next(states))
    assert cli("run", "popularity", "--task", "redial", "--limit", "5", "--n-bootstrap", "10",
               "--output-dir", str(tmp_path), "--no-progress") == 0
    result = read_result(tmp_path / "popularity_redial_default_s0_n5")
    assert result["environment"]["git"] == {"commit": "a" * 40, "dirty": False}
