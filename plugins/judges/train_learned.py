"""Train the learned judges (``learned.py``) and write their validation records.

    python -m crsbench_plugins.judges.train_learned all --publish   # both judges, records, tables
    python -m crsbench_plugins.judges.train_learned human          # minilm-human only (about 1 min)
    python -m crsbench_plugins.judges.train_learned contrast       # minilm-contrast only
    python -m crsbench_plugins.judges.train_learned human-a        # minilm-human-a (human-b: the mirror)

Measured on the busy 2-core machine: ``human`` about 1 min; ``contrast`` about 10 min with a
cold embedding cache (encoding some 30,000 ReDial texts with MiniLM), 2 min with a warm one.

Writes ``plugins/judges/data/minilm_{human,contrast,human_a,human_b}.{npz,json}`` (``--out DIR`` elsewhere)
and, with ``--publish``, the validation records under ``leaderboards/results/judges/``
(``--root``), then rebuilds the leaderboard tables. Everything is seeded and computed in
closed form or by a deterministic optimiser, so a rerun reproduces the weights (up to float
rounding of the encoder).

``minilm-human`` (ridge, one head per aspect) on the bundled CRSArena-Eval ReDial half:

- **grouped K-fold cross-validation by conversation** (default 5 folds, seed 0): every
  conversation's turns are predicted by a model that never saw that conversation; the
  ridge penalty and the scalar features' relative penalty are chosen inside each training
  part by a second grouped cross-validation (nested), never on the held-out fold;
- **leave one system out**: trained on four systems, tested on the fifth (again nested);
- the shipped weights are trained on all the data with the penalty chosen by grouped CV.
The record carries the out-of-fold numbers (``split`` says so) and the leave-one-system-out
numbers under ``leave_one_system_out``.

``minilm-human-a`` / ``minilm-human-b``: minilm-human's design (same features, ridge, penalty
by a grouped 5-fold CV of the training data) trained on one of two disjoint parts of the
conversations (``ab_split``: stratified by system, sha256-seeded, deterministic) and validated
on the other part only; the record's ``data`` counts are those of the held-out part. ECR-RL
can reward with one and evaluate with the other.

``minilm-contrast`` (pairwise logistic regression, one head per aspect) on contrasts built
from the bundled ReDial task's TRAIN split only: each real recommender reply against, in the
same context, negatives: the reply of a random turn of another dialogue, of another turn of
the same dialogue, the recommender's previous turn repeated, the reply's first three words,
and a generic reply. The loss asks the real reply to outscore each negative. The relevance
head sees every kind of negative, the interestingness head the dull ones (fragment, generic,
repeat). The L2 penalty is chosen by the pairwise log-loss on the same contrasts built from
ReDial's VALID split; the test split is never read. The intercept centres the training
contrasts' scores at 4.5 (0-9 through a sigmoid). Validated on every labelled turn of
CRSArena-Eval's ReDial half.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from crsbench_plugins.judges.learned import DATA_DIR
# the training itself: ridge in train_ridge.py, shared data and records in train_data.py
from crsbench_plugins.judges.train_minilm_contrast import train_contrast
from crsbench_plugins.judges.train_minilm_human import AB_PARTS, train_human, train_part


# -- records ----------------------------------------------------------------------------------
def publish(records: list[dict], root: str | Path) -> list[Path]:
    from crsbench import leaderboard
    from crsbench.judge_validation import RESULTS_SUBDIR, record_filename, write_validation

    paths = [write_validation(r, Path(root) / RESULTS_SUBDIR / record_filename(r)) for r in records]
    # the same bytes in the package, so an installed crsbench (no leaderboards/) finds them
    shipped = Path(__file__).resolve().parent / "data" / "validation"
    for path in paths:
        shipped.mkdir(parents=True, exist_ok=True)
        (shipped / path.name).write_bytes(path.read_bytes())
    leaderboard.write(root)
    return paths


# -- CLI --------------------------------------------------------------------------------------
def summarise(record: dict) -> str:
    from crsbench.judge_validation import format_estimate, summary_lines

    lines = summary_lines(record)
    loso = record.get("leave_one_system_out")
    if loso:
        for aspect, stats in loso["aspects"].items():
            per = ", ".join(f"{s} {v:.3f}" for s, v in loso["per_system_spearman"][aspect].items())
            lines.append(f"  leave one system out, {aspect}: Spearman pooled "
                         f"{format_estimate(stats['spearman'], stats['spearman_ci'])}, within system "
                         f"{format_estimate(stats['within_system_spearman'], stats['within_system_spearman_ci'])}; "
                         f"per held-out system: {per}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crsbench_plugins.judges.train_learned", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=("human", "contrast", "human-a", "human-b", "all"))
    parser.add_argument("--out", default=str(DATA_DIR), help="directory for the weights (default: the shipped ones)")
    parser.add_argument("--publish", action="store_true", help="write the validation records and rebuild the tables")
    parser.add_argument("--root", default="leaderboards", help="leaderboard directory for --publish")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    from crsbench.errors import UserError

    try:
        records = []
        out = Path(args.out)
        if args.which in ("human", "all"):
            record = train_human(out, n_bootstrap=args.n_bootstrap)
            record.pop("_oof")
            records.append(record)
        if args.which in ("contrast", "all"):
            records.append(train_contrast(out, n_bootstrap=args.n_bootstrap))
        for part in AB_PARTS:
            if args.which in (f"human-{part}", "all"):
                record = train_part(out, part, n_bootstrap=args.n_bootstrap)
                del record["_heldout"], record["_predictions"]
                records.append(record)
        for record in records:
            print(summarise(record))
        if args.publish:
            for path in publish(records, args.root):
                print(f"published {path}")
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
