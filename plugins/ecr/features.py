"""Per-sample inputs of ECR's recommender: text, entities and the emotions attached to them.

Local emotion-aware entities: each context entity carries the seeker's emotions toward it,
taken from the seeker utterance that mentions it or, for an entity the recommender
mentioned, from the seeker's next utterance (the reaction). Global emotion-related
entities: per emotion label, the entities most over-represented next to that label across
the training dialogues (lift = P(entity | label) / P(entity), at least ``min_count``).
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from crsbench_plugins.ecr.emotion import EMOTIONS

N_EMOTIONS = len(EMOTIONS)


def context_text(sample: dict, turns: int) -> str:
    """The last ``turns`` turns with speaker tags, most recent last."""
    parts = [f"{'User' if role == 'seeker' else 'System'}: {text}"
             for text, role in zip(sample["context"][-turns:], sample["context_roles"][-turns:])]
    return " ".join(parts) if parts else "(start of dialogue)"


def seeker_texts(samples) -> list[str]:
    """Every distinct seeker utterance in the samples' contexts (what the classifier labels)."""
    seen = dict.fromkeys(text for s in samples for text, role in zip(s["context"], s["context_roles"])
                         if role == "seeker")
    return list(seen)


def turn_emotions(sample: dict, emotion_of: dict[str, np.ndarray]) -> list[np.ndarray | None]:
    """Emotion vector of each context turn (seeker turns only; None for the recommender's)."""
    return [emotion_of.get(text) if role == "seeker" else None
            for text, role in zip(sample["context"], sample["context_roles"])]


def entity_emotions(sample: dict, per_turn: list) -> np.ndarray:
    """[n_entities, 9]: the seeker's emotions toward each context entity (zeros if none)."""
    out = np.zeros((len(sample["context_entities"]), N_EMOTIONS), dtype=np.float32)
    for i, turn in enumerate(sample["context_entity_turns"]):
        for t in range(turn, len(per_turn)):
            if per_turn[t] is not None:  # the mentioning seeker turn, or the seeker's reaction
                out[i] = per_turn[t]
                break
    return out


def user_emotion(per_turn: list) -> np.ndarray:
    vecs = [v for v in per_turn if v is not None]
    return np.mean(vecs, axis=0).astype(np.float32) if vecs else np.zeros(N_EMOTIONS, np.float32)


def global_entities(samples, emotion_of: dict[str, np.ndarray], top_k: int, min_count: int = 3) -> np.ndarray:
    """[9, top_k] entity ids per emotion label (-1 pads labels with too few entities)."""
    pairs = set()  # (dialog, entity, label): each counted once per dialogue
    for s in samples:
        per_turn = turn_emotions(s, emotion_of)
        for entity, emo in zip(s["context_entities"], entity_emotions(s, per_turn)):
            for label in np.flatnonzero(emo > 0):
                pairs.add((s["dialog_id"], entity, int(label)))
    by_label: dict[int, Counter] = defaultdict(Counter)
    overall = Counter()
    for _, entity, label in pairs:
        by_label[label][entity] += 1
        overall[entity] += 1
    total = sum(overall.values()) or 1
    table = np.full((N_EMOTIONS, top_k), -1, dtype=np.int64)
    for label, counts in by_label.items():
        n_label = sum(counts.values())
        lift = {e: (c / n_label) / (overall[e] / total) for e, c in counts.items() if c >= min_count}
        best = sorted(lift, key=lambda e: (-lift[e], -counts[e], e))[:top_k]
        table[label, :len(best)] = best
    return table


def pad_entities(lists: list[list[int]], max_len: int) -> np.ndarray:
    """Most recent ``max_len`` entities of each list, right-padded with -1."""
    out = np.full((len(lists), max(1, max_len)), -1, dtype=np.int64)
    for i, ents in enumerate(lists):
        ents = list(ents)[-max_len:]
        out[i, :len(ents)] = ents
    return out
