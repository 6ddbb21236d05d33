"""Add plugin provenance (result schema 2) to published schema-1 result files, from git.

Schema-1 results recorded the model's entry-point name (``model.plugin``), the crsbench
version installed (``environment.libraries.crsbench``) and the git commit they ran from, but
not which distribution each plugin came from. For a result made by crsbench's own plugins
that is recoverable: this script reads ``pyproject.toml`` *at the recorded commit*
(``git show``) and fills ``plugins`` only when every plugin the result names is an entry
point of the ``crsbench`` distribution there and that commit's project version equals the
recorded crsbench version. Anything else is refused, not guessed. Each filled record says
it was backfilled, by what and from which commit (``plugins.backfilled``), so a reader can
tell it apart from provenance written by the run itself.

    python scripts/backfill_provenance.py leaderboards/results/redial/ecr-cpu-seed0-bundled.json ...
    crsbench leaderboard build
"""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from datetime import date
from pathlib import Path

from crsbench.results import write_json_atomic

REPO = Path(__file__).resolve().parents[1]


def pyproject_at(commit: str) -> dict:
    text = subprocess.run(["git", "show", f"{commit}:pyproject.toml"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout
    return tomllib.loads(text)


def backfill(doc: dict) -> dict:
    if doc.get("schema_version") != 1 or doc.get("plugins"):
        raise SystemExit("only schema-1 results without a plugins section are backfilled")
    commit = doc["environment"]["git"]["commit"]
    recorded = doc["environment"]["libraries"]["crsbench"]
    project = pyproject_at(commit)
    version = project["project"]["version"]
    if version != recorded:
        raise SystemExit(f"commit {commit[:12]} is crsbench {version}, the result records {recorded}")
    entry_points = project["project"]["entry-points"]["crsbench"]

    def record(entry_point: str, names) -> dict:
        if entry_point not in entry_points:
            raise SystemExit(f"{entry_point!r} is not a crsbench entry point at {commit[:12]}")
        return {"entry_point": entry_point, "module": entry_points[entry_point], "distribution": "crsbench",
                "version": version, "names": sorted(set(names))}

    model = doc["model"]
    config = model.get("config") or {}
    rl_stage = config.get("rl_stage") or {}
    judge_names = set()
    judge = (doc.get("extra") or {}).get("judge")
    if judge:
        judge_names.add(judge["judge"])
    if rl_stage.get("judge"):
        judge_names.add(rl_stage["judge"]["name"])
    # Every metric a schema-1 run computed came from builtin_metrics, the only metric plugin
    # crsbench shipped (and the only one in entry_points at the commit, checked by record()).
    metric_names = [key.rsplit("/", 1)[-1] for key in doc["metrics"]]
    plugins = {
        "model": record(model["plugin"], [model["name"]]),
        "task": record(doc["task"]["name"], [doc["task"]["name"]]),
        "metrics": [record("builtin_metrics", metric_names)],
        "rewards": [record("rewards", rl_stage["rewards"])] if rl_stage.get("rewards") else [],
        "judges": [record("judges", judge_names)] if judge_names else [],
        "backfilled": {"by": "scripts/backfill_provenance.py", "on": date.today().isoformat(),
                       "from": f"pyproject.toml at commit {commit}"},
    }
    out = dict(doc, schema_version=2, plugins=plugins)
    out["model"] = dict(model, distribution="crsbench", distribution_version=version)
    return out


def main(paths: list[str]) -> None:
    for path in map(Path, paths):
        doc = json.loads(path.read_text(encoding="utf-8"))
        write_json_atomic(path, backfill(doc))
        print(f"backfilled {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
