"""The validity gate of ECR-RL's instruments: a judge may drive the reward, or measure the
result, only if it has been measured against people and beats the trivial predictors.

A judge's validation record (``crsbench judge validate``, docs/judges.md) holds its Pearson
and Spearman correlation with human ratings, pooled and within system, beside trivial
predictors (reply length, a year in the reply, the writing system's mean rating). The gate
asks, for the aspect the run uses (``rl_stage.reward_metric``, e.g. ``relevance``):

- a record exists for the judge's id (model + settings digest) and rubric;
- its pooled Spearman is above every trivial predictor's pooled Spearman, and its
  within-system Spearman above every trivial predictor's within-system Spearman (the
  system's mean has none: it is constant within a system);
- the lower end of its pooled Spearman CI is above 0.

The evaluation judge must pass too, and must be another judge than the reward's (another
model or other training data): a policy optimised against a judge is not measured by it.
``rl_stage.require_validated_judges: false`` runs anyway and records the failed checks.
"""
from __future__ import annotations

import logging

log = logging.getLogger("crsbench")


def verdict(record: dict | None, aspect: str) -> dict:
    """``{"ok": bool, "why": str, ...numbers}`` for one judge's validation record and aspect."""
    if record is None:
        return {"ok": False, "why": "no validation record (run `crsbench judge validate` for this judge)"}
    numbers = (record.get("aspects") or {}).get(aspect)
    if not numbers:
        return {"ok": False, "why": f"its validation record has no {aspect!r} aspect"}
    pooled, within = numbers.get("spearman"), numbers.get("within_system_spearman")
    low = (numbers.get("spearman_ci") or [None])[0]
    trivial = {name: values.get(aspect) or {} for name, values in (record.get("trivial") or {}).items()}
    best_pooled = max(((v.get("spearman"), n) for n, v in trivial.items() if v.get("spearman") is not None),
                      default=(None, None))
    best_within = max(((v.get("within_system_spearman"), n) for n, v in trivial.items()
                       if v.get("within_system_spearman") is not None), default=(None, None))
    out = {"record": {"judge_id": record.get("judge_id"), "rubric": record.get("rubric"),
                      "data": record.get("data"), "split": record.get("split")},
           "aspect": aspect, "spearman": pooled, "spearman_ci_low": low, "within_system_spearman": within,
           "best_trivial_pooled": best_pooled[1], "best_trivial_pooled_spearman": best_pooled[0],
           "best_trivial_within": best_within[1], "best_trivial_within_spearman": best_within[0]}
    problems = []
    if pooled is None or low is None or low <= 0:
        problems.append(f"pooled Spearman {pooled} has a CI reaching 0 (low {low})")
    if best_pooled[0] is not None and (pooled is None or pooled <= best_pooled[0]):
        problems.append(f"pooled Spearman {pooled:.3f} is not above {best_pooled[1]} ({best_pooled[0]:.3f})")
    if best_within[0] is not None and (within is None or within <= best_within[0]):
        problems.append(f"within-system Spearman {within} is not above {best_within[1]} ({best_within[0]:.3f})")
    out["ok"] = not problems
    out["why"] = "; ".join(problems) if problems else "beats every trivial predictor, pooled and within system"
    return out


def judge_validity(judge, aspect: str) -> dict:
    """:func:`verdict` of the judge's own validation record, with its id and rubric."""
    from crsbench.judge_validation import find_validation

    return dict(verdict(find_validation(judge.judge_id, judge.rubric_version), aspect),
                judge_id=judge.judge_id, rubric=judge.rubric_version)


def check_judges(reward_spec: dict, eval_spec: dict, aspect: str, required: bool = True):
    """Build both judges and gate them; returns ``(reward_judge, eval_judge, report)``.
    Raises :class:`~crsbench.errors.DegenerateRunError` (``Stopped:``, exit 3) when a check
    fails and ``required``."""
    from crsbench.errors import DegenerateRunError
    from crsbench.judge_eval import make_judge

    reward_judge, eval_judge = make_judge(reward_spec), make_judge(eval_spec)
    report = {role: judge_validity(judge, aspect) for role, judge in (("reward", reward_judge),
                                                                      ("evaluation", eval_judge))}
    same = reward_judge.judge_id == eval_judge.judge_id
    report["different_judges"] = not same
    failures = [f"the {role} judge {report[role]['judge_id']} ({report[role]['rubric']}) fails the validity gate: "
                f"{report[role]['why']}" for role in ("reward", "evaluation") if not report[role]["ok"]]
    if same:
        failures.append(f"the evaluation judge is the reward judge ({reward_judge.judge_id}): a policy optimised "
                        "against a judge cannot be measured by it")
    report["ok"] = not failures
    if failures:
        hint = " (rl_stage.require_validated_judges=false runs anyway, recorded)"
        if required:
            raise DegenerateRunError("; ".join(failures) + hint)
        for f in failures:
            log.warning("%s; running anyway: rl_stage.require_validated_judges is false", f)
    return reward_judge, eval_judge, report
