"""Built-in rewards for RL-trained models: bleu, distinct, rec_hit, emotion, length, critic.

Registering imports only ``rewards.py`` (numpy and the metric helpers); torch, nltk, the
emotion annotator and the critic load when a reward first scores.
"""
from crsbench import hookimpl


@hookimpl
def register_rewards(register):
    from crsbench_plugins.rewards.rewards import ALL_REWARDS

    for reward_class in ALL_REWARDS:
        register(reward_class)
