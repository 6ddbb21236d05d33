"""The critic's validation gate: ``check_critic`` stops a critic that would be a meaningless reward."""
from __future__ import annotations

from typing import Any, Mapping

from crsbench.errors import DegenerateRunError

MIN_TARGET_STD = 1e-3  # in [0, 1] units: 0.009 judge points


def _fmt(value) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def check_critic(report: Mapping[str, Any], min_spearman: float = 0.3, per_head: bool = False,
                 min_target_std: float = MIN_TARGET_STD, min_within_accuracy: float | None = 0.5) -> Mapping[str, Any]:
    """The validation gate. Raises ``DegenerateRunError`` naming the numbers when

    - the held-out Spearman of the combined (mean-of-heads) score is undefined or below
      ``min_spearman`` (with ``per_head``, also any head's);
    - with ``min_within_accuracy`` (None: not checked), the within-context pairwise accuracy
      of the combined score is undefined or its 95% CI does not lie above it: the critic
      cannot rank the replies of one context, which is all a group-relative advantage uses;
    - the training targets of the combined score or of any head have ~zero variance
      (std below ``min_target_std`` on the [0, 1] scale): the judge gave (nearly) one score.

    Returns the report when the critic passes.
    """
    heads = report.get("heads") or {}
    combined = report.get("combined") or {}
    per_head_text = ", ".join(f"{m} {_fmt(h.get('spearman'))}" for m, h in heads.items())
    within = combined.get("within_context") or {}
    detail = (f"held-out Spearman combined {_fmt(combined.get('spearman'))} (per head: {per_head_text}); "
              f"R^2 combined {_fmt(combined.get('r2'))}; within-context pairwise accuracy "
              f"{_fmt(within.get('accuracy'))} [{_fmt(within.get('ci_low'))}, {_fmt(within.get('ci_high'))}] "
              f"on {within.get('n_pairs', 0)} pairs of {within.get('n_contexts', 0)} held-out contexts; "
              f"n_heldout={report.get('n_heldout')}, n_train={report.get('n_train')}")
    problems = []
    flat = [(m, h.get("train_target_std", 0.0)) for m, h in heads.items()
            if (h.get("train_target_std") or 0.0) < min_target_std]
    if (combined.get("train_target_std") or 0.0) < min_target_std:
        problems.append(f"training targets of the combined score have ~zero variance "
                        f"(std {combined.get('train_target_std') or 0.0:.2g} < {min_target_std:g})")
    if flat:
        problems.append("training targets have ~zero variance for head(s) "
                        + ", ".join(f"{m} (std {s:.2g})" for m, s in flat))
    rho = combined.get("spearman")
    if rho is None:
        problems.append(f"held-out Spearman of the combined score is undefined (constant predictions or "
                        f"targets), need >= {min_spearman:g}")
    elif rho < min_spearman:
        problems.append(f"held-out Spearman of the combined score {rho:.3f} < {min_spearman:g}")
    if min_within_accuracy is not None:
        if within.get("accuracy") is None:
            problems.append("within-context pairwise accuracy is undefined (no held-out context has two replies "
                            "the judge scored differently)")
        elif within["ci_low"] <= min_within_accuracy:
            problems.append(f"within-context pairwise accuracy {within['accuracy']:.3f} has a 95% CI "
                            f"[{within['ci_low']:.3f}, {within['ci_high']:.3f}] that reaches {min_within_accuracy:g}: "
                            f"the critic cannot rank the replies of one context")
    if per_head:
        low = [(m, h.get("spearman")) for m, h in heads.items()
               if h.get("spearman") is None or h["spearman"] < min_spearman]
        if low:
            problems.append(f"held-out Spearman below {min_spearman:g} for head(s) "
                            + ", ".join(f"{m} {_fmt(v)}" for m, v in low))
    if problems:
        raise DegenerateRunError("critic failed its validation gate: " + "; ".join(problems) + f" [{detail}]")
    return report
