"""The ``inspired`` task: INSPIRED movie dialogues, one sample per recommender turn.

One data variant, ``bundled``: UniCRS's DBpedia-linked release of INSPIRED with its official
train/valid/test splits (801/99/99 dialogues), complete, so there is no ``--data-dir``.
INSPIRED has no per-movie seeker feedback: samples have no ``target_feedback`` and the task
declares ``has_feedback = False``, so RT@k and AUC are not computed (README.md).

Preprocessing takes about a second, so the splits are rebuilt on every load (no disk cache).
"""
from __future__ import annotations

import gzip
from functools import cached_property
from pathlib import Path

from crsbench.errors import DataError
from crsbench.results import file_sha256
from crsbench.task import Task, TaskData, combined_sha256
from crsbench_tasks.inspired import preprocess
from crsbench_tasks.inspired.kg import DATA_DIR, KG_FILES, load_kg

SPLITS = ("train", "valid", "test")
SPLIT_FILES = {split: f"{split}_data_dbpedia.jsonl.gz" for split in SPLITS}
SPLIT_RULE = "official INSPIRED splits as released by UniCRS (train/valid/test_data_dbpedia.jsonl)"


def _read_text(path: Path) -> str:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


class InspiredTask(Task):
    name = "inspired"
    version = "1.0"
    description = "INSPIRED movie recommendation dialogues (official splits; no seeker feedback)"
    protocols = ("standard", "dedup")
    has_feedback = False  # no liked/disliked labels: RT@k and AUC are undefined here
    default_rubric = "ecr-subjective-v1"  # movie recommender replies, as on ReDial
    item_placeholder = "<movie>"  # response_template's mask for a movie mention

    def __init__(self, data_dir: str | None = None):
        super().__init__(data_dir)
        if data_dir is not None:
            raise DataError(f"--data-dir {data_dir}: the inspired task has only its bundled data "
                            "(the complete release), so it takes no data directory")
        self.variant = "bundled"

    # -- provenance -------------------------------------------------------------------------
    @cached_property
    def file_hashes(self) -> dict[str, str]:
        hashes = {name: file_sha256(DATA_DIR / name) for name in SPLIT_FILES.values()}
        hashes.update({f"kg/{name}": file_sha256(DATA_DIR / name) for name in KG_FILES})
        return hashes

    @cached_property
    def data_sha256(self) -> str:
        return combined_sha256(self.file_hashes)

    def data_info(self) -> dict:
        # has_feedback is recorded here too, so a leaderboard built only from result files
        # can say why the RT@k and AUC cells of this task are empty.
        return {"variant": self.variant, "sha256": self.data_sha256, "files": self.file_hashes,
                "split_rule": SPLIT_RULE, "preprocess_version": preprocess.PREPROCESS_VERSION,
                "has_feedback": self.has_feedback,
                **({"n_dialogs": self._n_dialogs} if hasattr(self, "_n_dialogs") else {})}

    # -- loading ----------------------------------------------------------------------------
    @cached_property
    def kg(self):
        return load_kg()

    def raw_dialogs(self, split: str) -> list[list[dict]]:
        path = DATA_DIR / SPLIT_FILES[split]
        return preprocess.read_jsonl(_read_text(path), path.name)

    def load(self, limit: int | None = None) -> TaskData:
        import datasets

        datasets.disable_progress_bars()
        res = preprocess.Resources(self.kg.entity2id, frozenset(self.kg.item_ids))
        dialogs = {split: self.raw_dialogs(split) for split in SPLITS}
        self._n_dialogs = {split: len(d) for split, d in dialogs.items()}
        if limit is not None:
            dialogs["test"] = dialogs["test"][:limit]  # ids stay those of the full split
        splits = {split: datasets.Dataset.from_list(preprocess.process_dialogs(split, d, res),
                                                    features=_features())
                  for split, d in dialogs.items()}
        return TaskData(splits=splits, items=self.kg.item_ids, item_names=self.item_names,
                        kg=self.kg)

    # -- items --------------------------------------------------------------------------------
    @cached_property
    def item_names(self) -> dict[int, str]:
        """Catalogue item -> its DBpedia name, disambiguation in brackets ("Joker (2019 film)")."""
        from crsbench_tasks.redial.kg import split_uri

        items = set(self.kg.item_ids)
        names = {}
        for uri, entity in self.kg.entity2id.items():
            if entity in items:
                base, disamb = split_uri(uri)
                names[entity] = base + (f" ({disamb})" if disamb else "")
        return names

    @cached_property
    def _item_linker(self):
        from crsbench_tasks.redial.entity_linker import EntityLinker

        items = set(self.kg.item_ids)
        only_items = {uri: e for uri, e in self.kg.entity2id.items() if e in items}
        return EntityLinker(only_items, single_word_ok=items)

    def find_items(self, text: str) -> list[int]:
        return self._item_linker.link(text)

    @cached_property
    def _mention_pattern(self):
        import re

        # INSPIRED writes a movie by its bare title ("Hustlers"): the catalogue's names, longest
        # first, as whole words; two-letter names ("Up", "It") would mask ordinary words.
        names = sorted({n for n in self.item_names.values() if len(n) > 2}, key=len, reverse=True)
        return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, names)) + r")(?!\w)")

    def mention_spans(self, text: str) -> list[tuple[int, int]]:
        """Movie mentions by catalogue title (case as the catalogue writes it)."""
        return [m.span() for m in self._mention_pattern.finditer(text)]


def _features():
    import datasets

    seq = datasets.Sequence
    return datasets.Features({
        "sample_id": datasets.Value("string"), "dialog_id": datasets.Value("string"),
        "turn": datasets.Value("int32"), "context": seq(datasets.Value("string")),
        "context_roles": seq(datasets.Value("string")), "context_items": seq(datasets.Value("int64")),
        "context_entities": seq(datasets.Value("int64")),
        "context_entity_turns": seq(datasets.Value("int32")), "targets": seq(datasets.Value("int64")),
        "response": datasets.Value("string"), "response_template": datasets.Value("string"),
        "response_entities": seq(datasets.Value("int64")),
    })
