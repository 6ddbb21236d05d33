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
