"""Features of a (context, reply) pair for the learned judges (``learned.py``).

A pair becomes one float vector: the MiniLM sentence embedding (all-MiniLM-L6-v2, the ECR
plugin's ``TextEncoder``, L2-normalised) of the reply ``r``, its product with the embedding of
the last user turn ``u * r``, and 23 scalars (``SCALARS`` and the reply's
``crsbench_plugins.ecr_rl.critic.surface_features``): cosines of the reply with the user's
turn and with the recommender's earlier turns, whether it repeats one of them, word overlap
with the user's turn, the number of "(YYYY)" titles, list format, whether the user asked a
question or for recommendations, and countable properties of the reply (length, repetition,
punctuation, a year, ...). The user's turn alone, the previous recommender turn and its
product with the reply were tried as further blocks and did not help (docs/judges.md).

``FEATURE_VERSION`` names this recipe; it is part of each learned judge's settings, so a
change here changes the judge id (and cached scores are not mixed up). Change the version
whenever the vector changes.

numpy is imported here; the judges import this module only when they first score.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from crsbench_plugins.ecr_rl.critic import encode_texts, surface_features

FEATURE_VERSION = "f1"
EMBED_DIM = 384
USER_ROLES = {"user", "seeker", "human"}
TITLE = re.compile(r"\((?:19|20)\d\d\)")
LIST_LINE = re.compile(r"(?m)^\s*(?:\d+[.:)]|[-*\u2022])\s+")
REQUEST = re.compile(r"\b(recommend|suggest|suggestion|recommendation|looking for|any (good )?(movie|film)s?)\b", re.I)
WORD = re.compile(r"[a-z0-9']+")
STOP = frozenset("""a an the and or but to of in on at for with is are was were be been it its this that i
you me my your we he she they them do did does have has had not no yes so what which who how
can could would will just like about some any one there here as if then than too very""".split())
SCALARS = ("cos_user_reply", "cos_prev_reply", "max_cos_earlier_reply", "repeats_earlier_reply",
           "user_word_overlap", "has_prev", "log_turn", "n_titles", "list_format", "user_question",
           "user_request", "user_log_words", "reply_question_to_question")


@dataclass(frozen=True)
class Pair:
    """The parts of a pair the features use: the last user turn, the recommender's turns
    before the reply (oldest first) and the reply."""

    user: str
    earlier: tuple[str, ...]
    reply: str
    n_turns: int


def is_user(role: str | None) -> bool:
    return str(role).lower() in USER_ROLES


def split_pair(context: Sequence[str], reply: str, roles: Sequence[str] | None = None) -> Pair:
    """The last user turn and the earlier recommender turns of ``context``. Without
    ``roles`` the turns alternate and the last one is the user's (as ``JudgeInput`` says)."""
    context = ["" if t is None else str(t) for t in context]
    n = len(context)
    if roles is None:
        user_flags = [(n - 1 - i) % 2 == 0 for i in range(n)]
    else:
        if len(roles) != n:
            raise ValueError(f"{len(roles)} roles for {n} context turns")
        user_flags = [is_user(r) for r in roles]
    users = [t for t, u in zip(context, user_flags) if u]
    system = tuple(t for t, u in zip(context, user_flags) if not u)
    return Pair(user=users[-1] if users else "", earlier=system, reply="" if reply is None else str(reply),
                n_turns=n)


def _words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def scalar_features(pair: Pair) -> list[float]:
    """The text-only scalars (the cosines are filled in by :func:`featurize`)."""
    user_words = {w for w in _words(pair.user) if w not in STOP}
    reply_words = {w for w in _words(pair.reply) if w not in STOP}
    overlap = len(user_words & reply_words) / len(user_words) if user_words else 0.0
    norm = " ".join(pair.reply.lower().split())
    repeats = float(any(norm and norm == " ".join(e.lower().split()) for e in pair.earlier))
    user_question = float("?" in pair.user)
    return [repeats, overlap, float(bool(pair.earlier)), math.log1p(pair.n_turns),
            float(len(TITLE.findall(pair.reply))), float(len(LIST_LINE.findall(pair.reply)) >= 2), user_question,
            float(bool(REQUEST.search(pair.user))), math.log1p(len(pair.user.split())),
            user_question * float("?" in pair.reply)]


def feature_names() -> list[str]:
    from crsbench_plugins.ecr_rl.critic import SURFACE_FEATURES

    blocks = [f"{name}[{i}]" for name in ("reply", "user*reply") for i in range(EMBED_DIM)]
    return blocks + list(SCALARS) + [f"reply_{s}" for s in SURFACE_FEATURES]


def featurize(pairs: Sequence[Pair], encoder, cache: bool = False, batch_size: int = 64) -> np.ndarray:
    """[N, F] float64 features of ``pairs`` (see the module docstring); ``encoder``: any object
    with ``encode(texts)`` (the MiniLM ``TextEncoder``); ``cache``: through the on-disk
    embedding cache (training), off for scoring (new texts every call)."""
    texts = list(dict.fromkeys(t for p in pairs for t in (p.user, p.reply, *p.earlier[-3:])))
    if not texts:
        return np.zeros((0, len(feature_names())))
    emb = encode_texts(encoder, texts, batch_size=batch_size, cache=cache).numpy().astype(np.float64)
    if emb.shape[1] != EMBED_DIM:
        raise ValueError(f"learned judge features expect {EMBED_DIM}-dim embeddings, the encoder gives {emb.shape[1]}")
    index = {t: i for i, t in enumerate(texts)}
    rows = []
    for p in pairs:
        r, u = emb[index[p.reply]], emb[index[p.user]]
        earlier = [float(emb[index[e]] @ r) for e in p.earlier[-3:]]
        cosines = [float(u @ r), earlier[-1] if earlier else 0.0, max(earlier, default=0.0)]
        rows.append(np.concatenate([r, u * r, cosines, scalar_features(p), surface_features(p.reply)]))
    return np.vstack(rows)


def n_scalars() -> int:
    """How many scalar features end the vector (after the embedding blocks)."""
    return len(feature_names()) - 2 * EMBED_DIM
