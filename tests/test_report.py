"""`crsbench report` writes Markdown and HTML from run directories."""
from crsbench.runner import run


def test_report_of_two_runs(tmp_path, run_crsbench):
    a = run("popularity", "redial", output_dir=tmp_path / "runs", limit=15, n_bootstrap=20, progress=False)
    b = run("repeat-context", "redial", output_dir=tmp_path / "runs", limit=15, n_bootstrap=20, progress=False)
    proc = run_crsbench("report", a, b, "-o", tmp_path / "rep", "-n", "2")
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "## Metrics (95% bootstrap CI over dialogues)" in md
    assert "repeat-context (repeat-context_redial_default_s0_n15) minus popularity" in md
    assert "| standard/recall@10 |" in md and "<table>" in page and "</html>" in page
    # the comparison row shows both values and a p-value
    row = next(line for line in md.splitlines() if line.startswith("| standard/recall@10 |") and line.count("|") == 8)
    assert len(row.split("|")[6].strip()) == 5  # p formatted with 3 decimals


def test_report_of_a_missing_run_is_one_line(tmp_path, run_crsbench):
    proc = run_crsbench("report", tmp_path / "nope")
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error:") and "Traceback" not in proc.stderr


def test_the_ecr_rl_section_comes_from_the_ecr_rl_plugin(tmp_path, monkeypatch):
    """A real ECR-RL result file gets its "Judges, critic and RL" section, registered by the
    ecr_rl plugin through ``register_report_sections``; without that plugin it is absent."""
    import shutil
    from pathlib import Path

    from crsbench import plugins
    from crsbench.report import write_report

    result = Path(__file__).resolve().parent.parent / "leaderboards/results/redial/ecr-rl-cpu-set96c6b242-seed0-bundled.json"
    base = run("repeat-context", "redial", output_dir=tmp_path / "runs", limit=15, n_bootstrap=20, progress=False)
    rl_run = tmp_path / "runs" / "ecr-rl-like"
    shutil.copytree(base, rl_run)
    shutil.copyfile(result, rl_run / "result.json")  # the report reads metrics and extra.rl from here

    registry = plugins.get_registry()
    assert "ecr_rl" in [e.plugin for e in registry.report_sections()]
    md = write_report([base, rl_run], tmp_path / "rep").read_text()
    assert "## Judges, critic and RL: ecr-rl (ecr-rl-like)" in md
    assert "Judges, critic and RL: repeat-context" not in md  # no RL summary in that result
    assert ("Held-out study, judged by minilm-human-b-v1~4a9d1be5/crsarena-turn-v1 on 300 test contexts "
            "(one per dialogue); metric relevance. Verdict: no claim") in md
    assert "| rl vs ecr | 0.6898 | [0.5137, 0.8766] | 0.6737 | [0.4866, 0.8596] | 0.44 | 300 |" in md
    assert "No critic: the reward judge scores every completion." in md
    assert "| judge | 0.1761 | 0.2414 | 0.0653 | [0.0483, 0.0831] | &lt;0.001 | 300 |" in md
    assert md.index("minus repeat-context") < md.index("## Judges, critic and RL")

    bare = plugins.PluginRegistry()  # no plugin at all: the core alone has nothing to say about RL
    monkeypatch.setattr(plugins, "_registry", bare)
    md = write_report([base, rl_run], tmp_path / "rep-bare").read_text()
    assert "## Metrics" in md and "Judges, critic and RL" not in md and "Held-out study" not in md


def test_the_core_report_knows_no_model():
    """Model-specific sections live in their plugins (``register_report_sections``)."""
    import re
    from pathlib import Path

    import crsbench.report

    source = Path(crsbench.report.__file__).read_text(encoding="utf-8")
    assert not re.findall(r"\b(rl|ecr|ecr_rl|critic|heldout\w*)\b", source, flags=re.I)
