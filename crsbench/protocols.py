"""Recommendation evaluation protocols.

Predictions store, per sample, the 1-based rank of every target and of every distinct
context item in the model's full ranking (``None`` = not ranked). A protocol turns those
into the ranks that are evaluated:

- ``standard``: every target, ranked against the whole catalogue (what the papers count).
- ``dedup``: targets already mentioned in the context are not evaluated, and context items
  are removed from the ranking (so a target moves up past every context item above it).
"""
from __future__ import annotations

import math

PROTOCOLS = ("standard", "dedup")


def evaluated_ranks(protocol: str, record: dict) -> list[tuple[int, str, float]]:
    """(item, feedback, rank) for each target the protocol evaluates; unranked -> inf."""
    targets = record["targets"]
    if protocol == "standard":
        return [(t["item"], t["feedback"], _rank(t["rank"])) for t in targets]
    if protocol == "dedup":
        context = set(record.get("context_items", []))
        context_ranks = [_rank(r) for r in record.get("context_item_ranks", [])]
        out = []
        for t in targets:
            if t["item"] in context:
                continue
            rank = _rank(t["rank"])
            if math.isfinite(rank):
                rank -= sum(1 for r in context_ranks if r < rank)
            out.append((t["item"], t["feedback"], rank))
        return out
    raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")


def _rank(value) -> float:
    return math.inf if value is None else float(value)
