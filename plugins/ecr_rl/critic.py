"""A cheap learned stand-in for the LLM judge, used as an RL reward.

``Critic``: a frozen sentence encoder embeds the context tail (the last ``context_turns``
turns, joined by newlines) and the response; the features ``[c, r, c * r]`` (plus, with
``surface_features``, a few countable properties of the response: length, repetition,
punctuation) are standardised with the training mean/std and fed to one head per judge
metric, regressing the judge score scaled to [0, 1] (``(score - score_min) / (score_max -
score_min)``, judge scores are 0-9). Heads: ``mlp`` (Linear -> ReLU -> Dropout -> Linear ->
sigmoid, trained with early stopping) or ``ridge`` (one linear map fitted in closed form, its
penalty chosen by k-fold cross-validation inside the training part, output clipped to
[0, 1]). With a few hundred judged pairs the ridge head is the data-efficient choice.

``train_critic`` splits the scored pairs **by context** (``groups``: the replies of one
context stay on one side) with a seeded permutation into training (the MLP head keeps some
contexts for early stopping; the ridge penalty is chosen by grouped cross-validation) and a
held-out part (default 20% of the contexts) that only the report sees. It reports, per head
and for the mean of the heads: held-out Spearman across contexts (scipy) and R^2, and the
**within-context pairwise accuracy** (the share of same-context reply pairs that the critic
orders as the judge does; judge ties excluded, critic ties count one half), which is what a
group-relative RL advantage uses; each with a 95% bootstrap CI over held-out contexts.
``check_critic`` is the validation gate: it raises ``DegenerateRunError`` when the critic
would be a meaningless reward (held-out Spearman too low, a within-context accuracy whose CI
reaches 0.5, or flat training targets).

Files: ``critic.safetensors`` (head weights and the feature standardisation),
``critic.json`` (architecture, metrics, encoder id, score range, training report) and, from
``train_critic``, ``report.json``. docs/rewards.md describes the critic and its gate.

The encoder is injectable: any object with ``encode(texts) -> [N, D]`` (a torch tensor or a
numpy array). The default is the ECR plugin's all-MiniLM-L6-v2 ``TextEncoder``.

This module is the critic's public face; the code lives in one file per job:
``critic_model.py`` (the ``Critic``, prediction, save/load), ``critic_features.py`` (encoder,
context tail, pair and surface features), ``critic_training.py`` (``train_critic``: inputs,
split, fitting, report), ``critic_ridge.py`` (the ridge head's closed form and penalty
search), ``critic_stats.py`` (held-out Spearman, R^2, within-context accuracy and their
context-bootstrap CIs) and ``critic_gate.py`` (``check_critic``).
"""
from __future__ import annotations

# Re-exported: the documented entry points (docs/rewards.md) and what other plugins use
# (the learned judges build on encode_texts and the surface features).
from crsbench_plugins.ecr_rl.critic_features import SURFACE_FEATURES, encode_texts, surface_features
from crsbench_plugins.ecr_rl.critic_gate import MIN_TARGET_STD, check_critic
from crsbench_plugins.ecr_rl.critic_model import CONFIG_FILE, HEADS, WEIGHTS_FILE, Critic
from crsbench_plugins.ecr_rl.critic_training import DEFAULTS, REPORT_FILE, CriticReport, train_critic

__all__ = ["CONFIG_FILE", "DEFAULTS", "HEADS", "MIN_TARGET_STD", "REPORT_FILE", "SURFACE_FEATURES", "WEIGHTS_FILE",
           "Critic", "CriticReport", "check_critic", "encode_texts", "surface_features", "train_critic"]
