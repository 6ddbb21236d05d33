"""The ``redial`` task: ReDial movie dialogues, one sample per recommender turn.

Data variants:

- ``bundled`` (default): the complete official test split as test, and the 1,813 official
  training dialogues available offline split into train/valid by :func:`split_of`.
- ``official-full``: ``--data-dir DIR`` with the official layout (``train_data.jsonl``,
  ``test_data.jsonl``, ``movies_with_mentions.csv``); train_data is split by the same rule.

Preprocessed splits are ``datasets.Dataset`` objects, cached on disk under a key made of
the data files' hash and the preprocessing version.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from functools import cached_property
from pathlib import Path

from crsbench.errors import DataError
from crsbench.results import file_sha256
from crsbench.task import Task, TaskData, combined_sha256
from crsbench_tasks.redial import preprocess
from crsbench_tasks.redial.kg import DATA_DIR, KnowledgeGraph

BUNDLED_TRAIN = ("train_subset_kgsf.jsonl.gz", "train_subset_unicrs_valid_linked.jsonl.gz")
BUNDLED_TEST = "test_data.jsonl.gz"
BUNDLED_MOVIES = "movies_with_mentions.csv.gz"
OFFICIAL_FILES = ("train_data.jsonl", "test_data.jsonl", "movies_with_mentions.csv")
KG_FILES = ("dbpedia_subkg.json.gz", "entity2id.json.gz", "relation2id.json.gz", "item_ids.json.gz",
            "movieid2dbpedia.json.gz")
VALID_RULE = "valid iff int(sha256(str(conversationId)).hexdigest(), 16) % 10 == 0; else train"


def split_of(conversation_id) -> str:
    """Deterministic train/valid assignment of a training dialogue (about 10% valid)."""
    digest = hashlib.sha256(str(conversation_id).encode()).hexdigest()
    return "valid" if int(digest, 16) % 10 == 0 else "train"


def _read_text(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def cache_root() -> Path:
    return Path(os.environ.get("CRSBENCH_CACHE_DIR") or Path.home() / ".cache" / "crsbench")


class RedialTask(Task):
    name = "redial"
    version = "1.0"
    description = "ReDial movie recommendation dialogues (test: official test split)"
    protocols = ("standard", "dedup")
    default_rubric = "ecr-subjective-v1"  # registered by the judges plugin (movie recommendations)
    item_placeholder = "<movie>"  # response_template's mask for a movie mention

    def __init__(self, data_dir: str | None = None):
        super().__init__(data_dir)
        if data_dir is None:
            self.variant = "bundled"
            self.train_files = [DATA_DIR / name for name in BUNDLED_TRAIN]
            self.test_file = DATA_DIR / BUNDLED_TEST
            self.movies_file = DATA_DIR / BUNDLED_MOVIES
        else:
            root = Path(data_dir)
            if not root.is_dir():
                raise DataError(f"--data-dir {data_dir}: no such directory")
            missing = [name for name in OFFICIAL_FILES if not (root / name).is_file()]
            if missing:
                raise DataError(f"--data-dir {data_dir}: missing {', '.join(missing)} "
                                f"(the official ReDial layout has {', '.join(OFFICIAL_FILES)})")
            self.variant = "official-full"
            self.train_files = [root / "train_data.jsonl"]
            self.test_file = root / "test_data.jsonl"
            self.movies_file = root / "movies_with_mentions.csv"

    # -- provenance -------------------------------------------------------------------------
    @cached_property
    def file_hashes(self) -> dict[str, str]:
        files = [*self.train_files, self.test_file, self.movies_file, *(DATA_DIR / n for n in KG_FILES)]
        return {f"{'kg/' if p.parent == DATA_DIR and p.name in KG_FILES else ''}{p.name}": file_sha256(p)
                for p in files}

    @cached_property
    def data_sha256(self) -> str:
        return combined_sha256(self.file_hashes)

    def data_info(self) -> dict:
        return {"variant": self.variant, "sha256": self.data_sha256, "files": self.file_hashes,
                "split_rule": VALID_RULE, "preprocess_version": preprocess.PREPROCESS_VERSION,
                **({"n_dialogs": self._n_dialogs} if hasattr(self, "_n_dialogs") else {})}

    # -- loading ----------------------------------------------------------------------------
    @cached_property
    def kg(self) -> KnowledgeGraph:
        return KnowledgeGraph()

    @cached_property
    def movie_names(self) -> dict[str, str]:
        return preprocess.read_movie_names(_read_text(self.movies_file), self.movies_file.name)

    def _dialogs(self) -> dict[str, list[dict]]:
        splits = {"train": [], "valid": [], "test": []}
        seen = set()
        for path in self.train_files:
            for dialog in preprocess.read_jsonl(_read_text(path), path.name):
                cid = dialog.get("conversationId")
                if cid in seen:  # the two bundled subsets share 88 dialogues
                    continue
                seen.add(cid)
                splits[split_of(cid)].append(dialog)
        splits["test"] = preprocess.read_jsonl(_read_text(self.test_file), self.test_file.name)
        first_line: dict[str, int] = {}
        for number, dialog in enumerate(splits["test"], 1):  # a repeated test dialogue would be scored twice
            cid = str(dialog.get("conversationId"))
            if cid in first_line:
                raise DataError(f"{self.test_file.name}: conversationId {cid} appears twice (dialogues "
                                f"{first_line[cid]} and {number}); each test dialogue must appear once")
            first_line[cid] = number
        return splits

    def load(self, limit: int | None = None) -> TaskData:
        import datasets

        datasets.disable_progress_bars()
        cache = cache_root() / "redial" / f"{self.data_sha256[:16]}-p{preprocess.PREPROCESS_VERSION}"
        splits = {}
        if (cache / "done").exists():
            try:
                splits = {name: datasets.load_from_disk(str(cache / name)) for name in ("train", "valid", "test")}
                self._n_dialogs = json.loads((cache / "done").read_text())
            except Exception:  # a damaged cache is rebuilt, never trusted
                splits = {}
                shutil.rmtree(cache, ignore_errors=True)  # else _build could never replace it
        if not splits:
            splits = self._build(cache)
        if limit is not None:
            splits["test"] = _first_dialogs(splits["test"], limit)
        return TaskData(splits=splits, items=self.kg.item_ids, item_names=self.item_names,
                        kg=self.kg, extra={"movie_names": self.movie_names})

    def _build(self, cache: Path) -> dict:
        import datasets

        dialogs = self._dialogs()
        res = preprocess.make_resources(self.kg, self.movie_names)
        samples = {name: preprocess.process_dialogs(d, res) for name, d in dialogs.items()}
        for name, rows in samples.items():
            if not rows:  # (an empty datasets.Dataset cannot even be built)
                source = self.test_file if name == "test" else ", ".join(str(p) for p in self.train_files)
                rule = "" if name == "test" else f"; train and valid are split by: {VALID_RULE}"
                raise DataError(f"{source}: no {name} samples ({len(dialogs[name])} {name} dialogues, none with a "
                                f"recommender turn; at least one is needed){rule}")
        splits = {name: datasets.Dataset.from_list(rows, features=_features()) for name, rows in samples.items()}
        self._n_dialogs = {name: len(d) for name, d in dialogs.items()}
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        try:
            for name, ds in splits.items():
                ds.save_to_disk(str(tmp / name))
            (tmp / "done").write_text(json.dumps(self._n_dialogs))
            cache.parent.mkdir(parents=True, exist_ok=True)
            if not cache.exists():
                os.replace(tmp, cache)
        except OSError:
            pass  # an unwritable cache only costs time
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # left over when another process won the race
        return splits

    # -- items --------------------------------------------------------------------------------
    @cached_property
    def item_names(self) -> dict[int, str]:
        """Catalogue item -> readable title: the ReDial title where one maps, else the KG name."""
        from crsbench_tasks.redial.kg import split_uri

        names = {}
        items = set(self.kg.item_ids)
        for uri, entity in self.kg.entity2id.items():
            if entity in items:
                base, disamb = split_uri(uri)
                names[entity] = base + (f" ({disamb})" if disamb else "")
        mapper = preprocess.make_resources(self.kg, self.movie_names, linker=_NoLinker()).mapper
        for mid, title in self.movie_names.items():
            item = mapper.item(mid)
            if item is not None:
                names[item] = " ".join(title.split())
        return names

    @cached_property
    def _item_linker(self):
        from crsbench_tasks.redial.entity_linker import EntityLinker

        items = set(self.kg.item_ids)
        only_items = {uri: e for uri, e in self.kg.entity2id.items() if e in items}
        return EntityLinker(only_items, single_word_ok=items)

    def find_items(self, text: str) -> list[int]:
        return self._item_linker.link(text)

    def mention_spans(self, text: str) -> list[tuple[int, int]]:
        """Movie mentions as ReDial's texts write them: "Title (YYYY)"."""
        return [m.span() for m in preprocess.TITLE_MENTION.finditer(text)]


class _NoLinker:
    def link(self, text):
        return []


def _first_dialogs(ds, limit: int):
    order = list(dict.fromkeys(ds["dialog_id"]))[:limit]
    keep = set(order)
    return ds.filter(lambda row: row["dialog_id"] in keep)


def _features():
    import datasets

    seq = datasets.Sequence
    return datasets.Features({
        "sample_id": datasets.Value("string"), "dialog_id": datasets.Value("string"),
        "turn": datasets.Value("int32"), "context": seq(datasets.Value("string")),
        "context_roles": seq(datasets.Value("string")), "context_items": seq(datasets.Value("int64")),
        "context_entities": seq(datasets.Value("int64")),
        "context_entity_turns": seq(datasets.Value("int32")), "targets": seq(datasets.Value("int64")),
        "target_feedback": seq(datasets.Value("string")), "response": datasets.Value("string"),
        "response_template": datasets.Value("string"), "response_entities": seq(datasets.Value("int64")),
    })
