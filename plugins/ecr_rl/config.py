"""ECR-RL's profiles: ECR's profile plus the judge, critic, reward and RL settings."""
from __future__ import annotations

import copy

from crsbench_plugins.ecr.config import ECR_PROFILES

# The reward: a judge validated against people (rl_stage.reward_judge) on one aspect, plus
# small terms that keep the reply naming the recommended movie and not repeating itself.
# The judge's weight dominates the within-group spread (logged per step as each component's
# share); the earlier mix (critic 2.0, bleu 1.0, distinct 0.5, rec_hit 1.5, emotion 0.5,
# length 0.5) let length and rec_hit drown a critic whose spread was half of length's.
REWARDS = {"judge": 1.0, "rec_hit": 0.25, "distinct": 0.1}

# Two learned judges of one design trained on disjoint halves of the human ratings
# (CRSArena-Eval's ReDial conversations, split by conversation): the reward's on half a,
# the evaluation's on half b, each validated on the half it never saw (docs/judges.md).
# minilm-contrast, trained on ReDial contrasts and no ratings, scores the held-out replies
# too as a third opinion; it fails the validity gate, so nothing is claimed from it.
REWARD_JUDGE = {"name": "minilm-human-a", "rubric": "crsarena-turn-v1"}
EVAL_JUDGE = {"name": "minilm-human-b", "rubric": "crsarena-turn-v1"}
EXTRA_EVAL_JUDGES = [{"name": "minilm-contrast", "rubric": "crsarena-turn-v1"}]

_RL = {
    "reuse_ecr": True,        # copy the checkpoints of a finished `crsbench run ecr` with the same config
    "reward_judge": REWARD_JUDGE,
    "reward_metric": "relevance",
    "eval_judge": EVAL_JUDGE,  # the run's --judge replaces it
    "extra_eval_judges": EXTRA_EVAL_JUDGES,  # reported beside it, with their validity verdicts
    "require_validated_judges": True,  # false: run with a judge that fails the gate (recorded)
    # RL prompts: "generated" templates only, as at evaluation; "generated_or_reference" lets a
    # context whose generated template names no movie fall back to its reference template
    "prompts": "generated",
    # null: the judge scores every completion itself (a learned judge is cheap). A dict
    # ({"head": "ridge", ...}) trains a critic of the judge's scores first, for judges too
    # slow for the RL loop; critic_data, min_spearman, min_within_accuracy then apply.
    "critic": None,
    "critic_data": {"n_contexts": 100, "samples_per_context": 3, "temperature": 1.0, "top_p": 0.95},
    "min_spearman": 0.2,
    "min_within_accuracy": 0.5,
    "rewards": REWARDS,
    # scale_rewards="batch": a group whose replies the reward barely tells apart gets small
    # advantages (TRL's default "group" scales every group's spread, noise included, to 1)
    "rl": {"algorithm": "grpo", "n_prompts": 256, "steps": 40, "batch_size": 8, "num_generations": 4,
           "lr": 2e-5, "beta": 0.05, "max_new_tokens": 32, "temperature": 1.0, "scale_rewards": "batch",
           "min_reward_std": 1e-4, "patience": 5, "max_kl": 5.0, "collapse_patience": 5},
    # RL seeds (each trains a policy from ECR's generator) and, with control, the same RL with
    # the judge's weight at 0 per seed; all are compared on the held-out contexts
    "study": {"seeds": [0], "control": False},
    # test contexts (one per dialogue) on which ECR's and each policy's replies are compared
    "heldout": {"n_contexts": 300},
}

_SMOKE_RL = copy.deepcopy(_RL)
_SMOKE_RL.update({
    "prompts": "generated_or_reference",  # the tiny smoke models rarely name a movie
    "critic_data": {"n_contexts": 16, "samples_per_context": 2, "temperature": 1.0, "top_p": 0.95},
    "min_spearman": -1.0,     # tiny data: the gates are exercised by their own tests
    "min_within_accuracy": None,
    "rl": {"algorithm": "grpo", "n_prompts": 16, "steps": 2, "batch_size": 4, "num_generations": 2,
           "lr": 1e-4, "beta": 0.05, "max_new_tokens": 8, "temperature": 1.0, "scale_rewards": "batch",
           "min_reward_std": 0.0, "patience": 1000, "max_kl": 1e9, "collapse_patience": 1000},
    "study": {"seeds": [0, 1], "control": True},  # exercises the study's arms on tiny models
    "heldout": {"n_contexts": 12},
})

_PAPER_RL = copy.deepcopy(_RL)
_PAPER_RL.update({
    "critic_data": {"n_contexts": 1000, "samples_per_context": 4, "temperature": 1.0, "top_p": 0.95},
    "rl": {"algorithm": "grpo", "n_prompts": 4000, "steps": 500, "batch_size": 16, "num_generations": 8,
           "lr": 1e-5, "beta": 0.05, "max_new_tokens": 100, "temperature": 1.0, "scale_rewards": "batch",
           "min_reward_std": 1e-4, "patience": 10, "max_kl": 10.0, "collapse_patience": 10},
    "heldout": {"n_contexts": 1000},
})


def rl_profiles() -> dict:
    out = {}
    for name, extra in (("cpu", _RL), ("paper", _PAPER_RL), ("smoke", _SMOKE_RL)):
        cfg = copy.deepcopy(ECR_PROFILES[name])
        cfg["rl_stage"] = copy.deepcopy(extra)
        out[name] = cfg
    return out
