"""How `bm25`'s defaults were chosen: a coordinate search on a task's VALIDATION split.

    python -m crsbench_plugins.baselines.bm25_validation --task redial [--output FILE]

The model is fitted on the training split (as in a run), ranks every validation sample that has
targets, and the harness's own prediction records and protocols score it (``crsbench.evaluation``,
no bootstrap). The criterion is validation ``standard`` R@10 + R@50. Starting from the
defaults, each setting in turn is set to the best of its candidate values, the others fixed,
for ``--rounds`` passes. The test split is never read. The records of the searches that set
the shipped defaults are in bm25_search/ next to this file (explained in
plugins/baselines/README.md).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

CANDIDATES = {
    "k1": [0.3, 0.6, 0.9, 1.2, 1.5, 2.0, 3.0, 4.0, 6.0],
    "b": [0.0, 0.25, 0.5, 0.75, 0.9, 1.0],
    "query_turns": [0, 1, 2, 3, 5, 8],
    "doc_context_turns": [0, 1, 2, 3, 5],
    "doc_response": [True, False],
    "doc_after_turns": [0, 1, 2, 4, 8, 16],
    "name_weight": [0, 1, 2, 4, 8, 16, 32, 64],
    "kg_weight": [0, 1, 2, 4],
    "stopwords": [True, False],
}
KS = (1, 10, 50)


def validation_recall(model_cls, config: dict, data, protocols, samples=None) -> dict[str, float]:
    """``{"standard/recall@10": ...}`` of ``model_cls(config)`` fitted on ``data`` and ranking
    ``samples`` (default: the validation split), scored as a run scores the test split."""
    import tempfile

    from crsbench.evaluation import predict, score_records
    from crsbench.metrics.recommendation import RecallAtK
    from crsbench.model import RunContext

    samples = list(data.splits["valid"]) if samples is None else list(samples)
    with tempfile.TemporaryDirectory() as tmp:
        model = model_cls(dict(config), RunContext(run_dir=Path(tmp)))
        model.fit(data)
        records = predict(model, samples, data.items, progress=False)
    metrics = {m.name: m for m in (RecallAtK(k) for k in KS)}
    return {key: row["value"] for key, row in score_records(records, metrics, protocols, n_boot=0).items()}


def criterion(scores: dict[str, float]) -> float:
    return scores["standard/recall@10"] + scores["standard/recall@50"]


def search(data, protocols, rounds: int = 2, log=print) -> dict:
    from crsbench_plugins.baselines.bm25 import DEFAULTS, BM25Model
    from crsbench_plugins.baselines.models import PopularityModel

    tried: dict[str, dict] = {}

    def evaluate(config: dict) -> float:
        key = json.dumps(config, sort_keys=True)
        if key not in tried:
            t0 = time.perf_counter()
            scores = validation_recall(BM25Model, config, data, protocols)
            tried[key] = {"config": dict(config), "scores": scores, "criterion": criterion(scores),
                          "seconds": round(time.perf_counter() - t0, 1)}
            log(f"{criterion(scores):.4f}  {_fmt(scores)}  {config}")
        return tried[key]["criterion"]

    popularity = validation_recall(PopularityModel, {}, data, protocols)
    log(f"popularity  {_fmt(popularity)}")
    best = dict(DEFAULTS)
    evaluate(best)
    for _ in range(rounds):
        changed = False
        for key, values in CANDIDATES.items():
            scored = {json.dumps(v): evaluate({**best, key: v}) for v in values}
            top = max(values, key=lambda v: (scored[json.dumps(v)], v == best[key]))
            if top != best[key]:
                best[key], changed = top, True
        if not changed:
            break
    return {"criterion": "validation standard recall@10 + recall@50", "candidates": CANDIDATES,
            "popularity": popularity, "defaults_before": dict(DEFAULTS), "best": best,
            "best_scores": tried[json.dumps(best, sort_keys=True)],
            "tried": sorted(tried.values(), key=lambda row: -row["criterion"])}


def _fmt(scores: dict[str, float]) -> str:
    return " ".join(f"{k.replace('recall@', 'R@')}={v:.3f}" for k, v in scores.items())


def main(argv=None) -> None:
    from crsbench.plugins import lookup
    from crsbench.task import task_defaults

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="redial")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", type=Path, help="write the search record (JSON) here")
    args = parser.parse_args(argv)
    task_cls = lookup("tasks", args.task).obj
    task = task_cls(data_dir=None)
    data = task.load()
    task_defaults(data, task)  # as a run does: the item placeholder, mention spans
    record = {"task": args.task, "task_version": task_cls.version, "data": task.data_info(),
              **search(data, task_cls.protocols, args.rounds)}
    print("best:", record["best"], _fmt(record["best_scores"]["scores"]))
    if args.output:
        from crsbench.results import write_json_atomic

        write_json_atomic(args.output, record)


if __name__ == "__main__":
    main()
