"""Per-sample inputs of ECR's recommender: text, entities and the emotions attached to them.

Local emotion-aware entities: each context entity carries the seeker's emotions toward it,
taken from the seeker utterance that mentions it or, for an entity the recommender
mentioned, from the seeker's next utterance (the reaction). Global emotion-aware entities
come from the co-occurrence of entities under a shared emotion in the training dialogues
(``emotion_dialogues`` here, counted by ``prompt_model.CoAppearance``).
"""
from __future__ import annotations

import numpy as np

from crsbench_plugins.ecr.emotion_base import EMOTIONS

N_EMOTIONS = len(EMOTIONS)


def context_text(sample: dict, turns: int, sep: str | None = None) -> str:
    """The last ``turns`` turns with speaker tags, most recent last; with ``sep`` (the text
    encoder's separator token) each turn ends with it, as the official prompt text does
    (``User: ...</s>System: ...</s>``, ECR/UniCRS dataset_rec.py)."""
    parts = [f"{'User' if role == 'seeker' else 'System'}: {text}"
             for text, role in zip(sample["context"][-turns:], sample["context_roles"][-turns:])]
    if sep:
        return "".join(f"{part}{sep}" for part in parts) if parts else "(start of dialogue)"
    return " ".join(parts) if parts else "(start of dialogue)"


def longest_samples(samples) -> dict:
    """dialog_id -> the dialogue's sample with the longest context (which holds the others')."""
    longest: dict = {}
    for s in samples:
        if len(s["context"]) >= len(longest.get(s["dialog_id"], {"context": ()})["context"]):
            longest[s["dialog_id"]] = s
    return longest


def every_turn(samples: list[dict]) -> tuple[list[dict], list[list[int]]]:
    """Stage 1's examples: one per turn of each dialogue, seeker turns included, with the
    entities and items the turn mentions as labels (both official process.py write a sample
    for every turn; the pre-training dataset skips turns without any). Recommender turns are
    the samples themselves (labels: ``response_entities`` + ``targets``); a seeker turn is read
    from the dialogue's longest sample: its context is the turns before it and its labels the
    entities first mentioned in it (``context_entity_turns``). Without that key, recommender
    turns only."""
    out, labels = [], []
    for s in samples:
        found = list(dict.fromkeys(list(s["response_entities"]) + [int(t) for t in s["targets"]]))
        if found:
            out.append(s)
            labels.append(found)
    if not samples or "context_entity_turns" not in samples[0]:
        return out, labels
    longest = longest_samples(samples)
    for dialog_id in sorted(longest, key=str):
        s = longest[dialog_id]
        ents, turns = list(s["context_entities"]), list(s["context_entity_turns"])
        for t, role in enumerate(s["context_roles"]):
            found = [e for e, k in zip(ents, turns) if k == t]
            if role != "seeker" or not found:
                continue
            before = [k for k in range(len(ents)) if turns[k] < t]
            out.append({"sample_id": f"{s['sample_id']}/seeker-turn-{t}", "dialog_id": dialog_id,
                        "context": s["context"][:t], "context_roles": s["context_roles"][:t],
                        "context_entities": [ents[k] for k in before],
                        "context_entity_turns": [turns[k] for k in before],
                        "response": s["context"][t], "response_role": "seeker"})
            labels.append(found)
    return out, labels


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


def emotion_dialogues(samples, emotion_of: dict[str, np.ndarray]) -> list[list[tuple[int, tuple[int, ...]]]]:
    """Per training dialogue, its context entities in order, each with the labels of the
    seeker's emotions toward it, most probable first (what ECR's co-occurrence counts read).
    A dialogue is read from its sample with the longest context, which holds the others."""
    longest = longest_samples(samples)
    out = []
    for dialog_id in sorted(longest, key=str):
        s = longest[dialog_id]
        emo = entity_emotions(s, turn_emotions(s, emotion_of))
        out.append([(int(e), tuple(int(k) for k in np.argsort(-row, kind="stable") if row[k] > 0))
                    for e, row in zip(s["context_entities"], emo)])
    return out


def pad_entities(lists: list[list[int]], max_len: int) -> np.ndarray:
    """Most recent ``max_len`` entities of each list, right-padded with -1."""
    out = np.full((len(lists), max(1, max_len)), -1, dtype=np.int64)
    for i, ents in enumerate(lists):
        ents = list(ents)[-max_len:]
        out[i, :len(ents)] = ents
    return out
