"""From a model to prediction records: rankings and replies per test sample, cleaned and
ranked, with the batches appended to a partial file so a killed run resumes after them.

Prediction records (one JSON line per test sample) hold everything metrics need, so a
run can be re-scored later (``crsbench evaluate``) without the model.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

TOP_K_STORED = 20  # ranked items kept per sample for display (`crsbench samples`)


def _batches(seq, size):
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


def _clean_ranking(ranking, in_catalogue: np.ndarray, model: str = "model", sample_id=None) -> np.ndarray:
    """Catalogue items only, first occurrence kept, order preserved. A ranking must be a
    sequence of integer item ids: a string, a float, a bool or None in it is a model bug,
    reported as one error naming the model and the sample (never coerced: "3" is not item 3)."""
    try:
        arr = np.asarray(ranking if not isinstance(ranking, (str, bytes, dict, set)) else None)
    except (TypeError, ValueError):
        arr = np.asarray(None)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        from crsbench.errors import UserError

        items = list(ranking) if isinstance(ranking, (list, tuple)) else None
        bad = next((x for x in items if isinstance(x, bool) or not isinstance(x, (int, np.integer))), None) \
            if items else None
        what = f"holds {bad!r} ({type(bad).__name__}), not an integer item id" if items else \
            f"is a {type(ranking).__name__}, not a list of integer item ids"
        raise UserError(f"model {model!r} returned an invalid ranking for sample {sample_id!r}: it {what}")
    arr = arr.astype(np.int64, copy=False)
    arr = arr[(arr >= 0) & (arr < len(in_catalogue))]
    arr = arr[in_catalogue[arr]]
    _, first = np.unique(arr, return_index=True)
    return arr[np.sort(first)]


def predict(model, samples: list[dict], items: list[int], find_items=None,
            batch_size: int = 64, progress: bool = True, partial: Path | None = None,
            item_placeholder: str | None = None) -> list[dict]:
    """Run the model over ``samples`` and return one prediction record per sample.

    With ``partial`` (a file in the run directory) each finished batch is appended to it and
    flushed to disk, and a rerun continues after the batches found there, so a killed run
    loses at most one batch. Lines are trusted only as a prefix of this call's batch plan
    (same pass, batch number, sample indices and sample ids), so a rerun with another
    ``--batch-size`` or other samples starts over. The two passes (rankings, then replies)
    keep their batches, so an uninterrupted run's records are what they were before this
    file existed, and a resumed run gets the same records provided the model's output for a
    batch does not depend on random state carried over from earlier batches (models whose
    output does set ``resumable_predictions = False`` and always predict from the start).
    A model that caches recommend-pass results for its replies (ECR) recomputes them after a
    resume in other groupings: equal up to float rounding (no record differed in tests).
    ``CRSBENCH_TEST_PREDICT_DELAY`` (seconds per batch) is a test hook that slows prediction
    so a test can kill it midway.
    """
    from tqdm.auto import tqdm

    in_catalogue = np.zeros(max(items) + 1, dtype=bool)
    in_catalogue[items] = True
    records = [_base_record(s) for s in samples]
    delay = float(os.environ.get("CRSBENCH_TEST_PREDICT_DELAY") or 0)

    rec_idx = [i for i, s in enumerate(samples) if s["targets"]]
    plan = [("rec", number, idx) for number, idx in enumerate(_batches(rec_idx, batch_size))]
    if model.generates:
        plan += [("gen", number, idx) for number, idx in enumerate(_batches(list(range(len(samples))), batch_size))]
    if not getattr(model, "resumable_predictions", True):
        partial = None
    done, log_fh = _open_partial(partial, plan, samples)
    try:
        bar = tqdm(total=len(rec_idx), desc="recommend", unit="sample", disable=not progress)
        for kind, number, idx in plan:
            if kind == "gen" and number == 0:
                bar.close()
                bar = tqdm(total=len(samples), desc="generate", unit="sample", disable=not progress)
            values = done.get((kind, number))
            if kind == "rec":
                if values is None:
                    rankings = model.recommend([samples[i] for i in idx])
                    if len(rankings) != len(idx):
                        raise ValueError(f"model {model.name!r} returned {len(rankings)} rankings for {len(idx)} samples")
                    for i, ranking in zip(idx, rankings):
                        ranking = _clean_ranking(ranking, in_catalogue, model.name, samples[i]["sample_id"])
                        _add_ranks(records[i], ranking, len(in_catalogue))
                    _append(log_fh, kind, number, idx, samples, [{k: records[i][k] for k in RANK_FIELDS} for i in idx])
                    time.sleep(delay)
                else:
                    for i, fields in zip(idx, values):
                        records[i].update(fields)
            else:
                if values is None:
                    values = model.generate([samples[i] for i in idx])
                    if len(values) != len(idx):
                        raise ValueError(f"model {model.name!r} returned {len(values)} responses for {len(idx)} samples")
                    _append(log_fh, kind, number, idx, samples, list(values))
                    time.sleep(delay)
                for i, text in zip(idx, values):
                    records[i]["response"] = text
                    records[i]["hyp_items"] = count_item_mentions(text, find_items, item_placeholder)
            bar.update(len(idx))
        bar.close()
    finally:
        if log_fh is not None:
            try:
                log_fh.close()
            except OSError:  # only after a failed append, whose error is already on its way
                pass
    return records


RANK_FIELDS = ("targets", "context_item_ranks", "top")


def _open_partial(path: Path | None, plan: list[tuple[str, int, list[int]]], samples: list[dict]):
    """Batches already in the partial file ({(pass, number): values}) and the file, open to
    append. The file's lines are trusted while they repeat ``plan`` in order (same pass, batch,
    sample indices and ids); a torn last line (a kill mid-write) and everything from the first
    line that does not match are dropped from the file."""
    if path is None:
        return {}, None
    import logging

    path = Path(path)
    done: dict[tuple[str, int], list] = {}
    keep = 0
    if path.exists():
        with open(path, "rb") as fh:
            for (kind, number, idx), raw in zip(plan, fh):
                try:
                    row = json.loads(raw) if raw.endswith(b"\n") else None
                    ok = (row is not None and row["pass"] == kind and row["batch"] == number
                          and row["idx"] == list(idx) and len(row["values"]) == len(idx)
                          and row["sample_ids"] == [samples[i]["sample_id"] for i in idx])
                except (ValueError, KeyError, TypeError):
                    ok = False
                if not ok:
                    break
                done[(kind, number)] = row["values"]
                keep += len(raw)
        with open(path, "r+b") as fh:  # drop what was not trusted, so appends stay clean
            fh.truncate(keep)
        if done:
            logging.getLogger("crsbench").info("prediction: resuming after %d of %d batches (%s)",
                                               len(done), len(plan), path.name)
    return done, open(path, "a", encoding="utf-8")


def _append(fh, kind: str, number: int, idx: list[int], samples: list[dict], values: list) -> None:
    if fh is None:
        return
    try:
        fh.write(json.dumps({"pass": kind, "batch": number, "idx": list(idx),
                             "sample_ids": [samples[i]["sample_id"] for i in idx], "values": values},
                            ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    except OSError as exc:
        from crsbench.errors import UserError
        from crsbench.results import DISK_FULL_ERRNOS

        if exc.errno not in DISK_FULL_ERRNOS:
            raise
        raise UserError(f"could not write {fh.name}: {exc.strerror}; the batches before it are kept "
                        "and a rerun of the same command resumes after them") from None


def count_item_mentions(text: str, find_items=None, placeholder: str | None = None) -> int:
    """Item mentions in a reply: the task's placeholders left in it plus the items it names."""
    found = text.count(placeholder) if placeholder else 0
    if find_items is not None:
        found += len(find_items(text))
    return found


def _base_record(sample: dict) -> dict:
    context_items = list(dict.fromkeys(sample.get("context_items", [])))
    # A task without seeker feedback (Task.has_feedback = False) has no target_feedback:
    # its targets get feedback None, and the feedback metrics are left out when scoring.
    feedback = sample.get("target_feedback")
    if feedback is None:
        feedback = [None] * len(sample["targets"])
    return {
        "sample_id": sample["sample_id"],
        "dialog_id": sample["dialog_id"],
        "context_items": context_items,
        "targets": [{"item": int(item), "feedback": fb, "rank": None}
                    for item, fb in zip(sample["targets"], feedback)],
        "context_item_ranks": [None] * len(context_items),
        "top": [],
        "response": None,
        "reference": sample.get("response", ""),
        "hyp_items": 0,
    }


def _add_ranks(record: dict, ranking: np.ndarray, size: int) -> None:
    position = np.zeros(size, dtype=np.int64)
    position[ranking] = np.arange(1, len(ranking) + 1)

    def rank_of(item):
        return int(position[item]) if 0 <= item < size and position[item] > 0 else None

    for t in record["targets"]:
        t["rank"] = rank_of(t["item"])
    record["context_item_ranks"] = [rank_of(i) for i in record["context_items"]]
    record["top"] = [int(i) for i in ranking[:TOP_K_STORED]]
