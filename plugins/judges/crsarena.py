"""CRSArena-Eval: people's ratings of CRS replies and dialogues, for measuring judges.

CRSArena-Eval (Joko & Hasibi, "FACE: A Fine-Grained Reference-Free Evaluator for
Conversational Information Access", SIGIR 2026) holds the conversations of CRS Arena
(Bernard et al., WSDM 2025) with annotators' ratings of every assistant turn (relevance
0-3, interestingness 0-2) and of every dialogue (understanding, task completion, interest
arousal 0-2, efficiency 0-1, dialogue overall 0-4). The ReDial half (267 conversations,
1,296 turns rated on relevance) is bundled in ``data/`` (provenance and licence in
``data/README.md``); the complete official ``crs_arena_eval.json`` (plain or gzipped) is
read from a path.

Standard library only at import (and ``crsbench.judge``/``crsbench.judge_validation``,
which are standard library only too): the judges plugin registers this benchmark at start-up.

- :func:`load_conversations`, :func:`labelled_turns`, :func:`labelled_dialogues`: the data;
- :func:`read_run`: a run file in FACE's released format (``conv_id``,
  ``turns[{turn_ind, turn_level_pred{...}}]``, ``dial_level_pred{...}``);
- :func:`published_baselines`: the published meta-evaluation numbers, per half;
- :data:`BENCHMARK`: the :class:`crsbench.judge_validation.JudgeBenchmark` the plugin registers.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crsbench.errors import UserError

DATA_DIR = Path(__file__).resolve().parent / "data"
BUNDLED_FILE = DATA_DIR / "crs_arena_eval_redial.json.gz"
FACE_RUN_FILE = DATA_DIR / "face_run_redial.json.gz"
BASELINES_FILE = DATA_DIR / "crsarena_baselines_published.json.gz"
OFFICIAL_NAMES = ("crs_arena_eval.json", "crs_arena_eval.json.gz")

BENCHMARK_NAME = "crsarena-eval"
TURN_RUBRIC = "crsarena-turn-v1"
DIALOGUE_RUBRIC = "crsarena-dialogue-v1"
TURN_ASPECTS = ("relevance", "interestingness")
DIALOGUE_ASPECTS = ("understanding", "task_completion", "interest_arousal", "efficiency", "dialogue_overall")
ASPECT_ALIASES = {"dialog_overall": "dialogue_overall", "overall_impression": "dialogue_overall"}
# The published baselines file names the halves by the paper's table ids.
HALF_IDS = {"CRSArena-Eval_RD": "redial", "CRSArena-Eval_KG": "opendialkg"}
ROLES = {"USER": "user", "ASST": "system"}


@dataclass(frozen=True)
class LabelledTurn:
    """One assistant turn people rated. ``context``: the utterances before it, oldest first;
    ``roles``: ``user``/``system``, one per context utterance; ``labels``: the aggregated
    ratings present (relevance 0-3, interestingness 0-2)."""

    conv_id: str
    system: str
    half: str
    turn_ind: int
    context: list[str]
    roles: list[str]
    reply: str
    labels: dict[str, float]


@dataclass(frozen=True)
class LabelledDialogue:
    """One rated conversation: ``turns`` as (role, utterance), role ``user``/``system``;
    ``labels``: its aggregated dialogue-level ratings (``dialogue_overall`` spelt so)."""

    conv_id: str
    system: str
    half: str
    turns: list[tuple[str, str]]
    labels: dict[str, float]


# -- reading ----------------------------------------------------------------------------------
def read_bytes(path: str | os.PathLike) -> bytes:
    """A file's bytes, gunzipped when it is gzip (recognised by its magic bytes)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a file") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise UserError(f"{path}: broken gzip file ({exc})") from None
    return raw


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def data_sha256(path: str | os.PathLike | None = None) -> str:
    """sha256 of the (decompressed) data file: the bundled one's is that of the released JSON."""
    return hashlib.sha256(read_bytes(resolve_path(path))).hexdigest()


def resolve_path(path: str | os.PathLike | None) -> Path:
    """The bundled file (None), a file, or a directory holding the official file."""
    if path is None:
        return BUNDLED_FILE
    path = Path(path)
    if path.is_dir():
        for name in OFFICIAL_NAMES:
            if (path / name).is_file():
                return path / name
        raise UserError(f"{path}: no {' or '.join(OFFICIAL_NAMES)} in this directory "
                        "(the complete official CRSArena-Eval file, informagi/face dataset/)")
    if not path.exists():
        raise UserError(f"{path}: no such file")
    return path


def split_conv_id(conv_id: str) -> tuple[str, str]:
    """``{system}_{dataset}_{user id}`` -> (system, dataset)."""
    parts = str(conv_id).split("_")
    if len(parts) < 3 or not parts[0] or not parts[1]:
        raise UserError(f"conv_id {conv_id!r} is not {{system}}_{{dataset}}_{{user id}}")
    return parts[0], parts[1]


def load_conversations(path: str | os.PathLike | None = None) -> list[dict]:
    """The raw conversation records (the bundled ReDial half by default; ``path``: the
    complete official ``crs_arena_eval.json``, plain or gzipped, or a directory holding it).
    ``dialog_overall`` is renamed ``dialogue_overall``; malformed files are a UserError."""
    source = resolve_path(path)
    data = read_json(source)
    if not isinstance(data, list) or not data:
        raise UserError(f"{source}: expected a non-empty JSON list of conversations")
    out = []
    for i, record in enumerate(data):
        if not isinstance(record, dict) or not isinstance(record.get("conv_id"), str) \
                or not isinstance(record.get("dialogue"), list):
            raise UserError(f"{source}: conversation {i} lacks a conv_id string or a dialogue list")
        split_conv_id(record["conv_id"])
        for j, turn in enumerate(record["dialogue"]):
            if not isinstance(turn, dict) or turn.get("role") not in ROLES or "utterance" not in turn \
                    or not isinstance(turn.get("turn_ind"), int):
                raise UserError(f"{source}: {record['conv_id']} turn {j} needs turn_ind, role USER/ASST "
                                "and utterance")
        record = dict(record)
        labels = record.get("dial_level_aggregated")
        if isinstance(labels, dict):
            record["dial_level_aggregated"] = {ASPECT_ALIASES.get(k, k): v for k, v in labels.items()}
        out.append(record)
    return out


def _labels(raw: Any, aspects: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for key, value in (raw or {}).items() if isinstance(raw, dict) else ():
        key = ASPECT_ALIASES.get(key, key)
        if key in aspects and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            out[key] = float(value)
    return out


def labelled_turns(conversations: list[dict]) -> list[LabelledTurn]:
    """Every assistant turn with at least one turn-level label, in file order."""
    out = []
    for record in conversations:
        system, half = split_conv_id(record["conv_id"])
        context: list[str] = []
        roles: list[str] = []
        for turn in record["dialogue"]:
            role = ROLES[turn["role"]]
            text = str(turn["utterance"] or "")
            labels = _labels(turn.get("turn_level_aggregated"), TURN_ASPECTS) if role == "system" else {}
            if labels:
                out.append(LabelledTurn(record["conv_id"], system, half, int(turn["turn_ind"]),
                                        list(context), list(roles), text, labels))
            context.append(text)
            roles.append(role)
    return out


def labelled_dialogues(conversations: list[dict]) -> list[LabelledDialogue]:
    """Every conversation with at least one dialogue-level label, in file order."""
    out = []
    for record in conversations:
        system, half = split_conv_id(record["conv_id"])
        labels = _labels(record.get("dial_level_aggregated"), DIALOGUE_ASPECTS)
        if labels:
            turns = [(ROLES[t["role"]], str(t["utterance"] or "")) for t in record["dialogue"]]
            out.append(LabelledDialogue(record["conv_id"], system, half, turns, labels))
    return out


# -- run files (FACE's released format) -------------------------------------------------------
def read_run(path: str | os.PathLike) -> dict[tuple, dict[str, float]]:
    """Predictions of a run file: ``(conv_id, turn_ind)`` -> turn aspects and ``(conv_id,)``
    -> dialogue aspects. A malformed file is a UserError naming what is wrong."""
    data = read_json(path)
    if not isinstance(data, list):
        raise UserError(f"{path}: a run file is a JSON list of {{conv_id, turns, dial_level_pred}} records")
    out: dict[tuple, dict[str, float]] = {}
    for i, record in enumerate(data):
        if not isinstance(record, dict) or not isinstance(record.get("conv_id"), str):
            raise UserError(f"{path}: record {i} has no conv_id string")
        conv_id = record["conv_id"]
        turns = record.get("turns") or []
        if not isinstance(turns, list):
            raise UserError(f"{path}: {conv_id}: turns must be a list")
        for turn in turns:
            index = turn.get("turn_ind") if isinstance(turn, dict) else None
            if isinstance(index, float) and index.is_integer():  # the format's README says float
                index = int(index)
            if not isinstance(index, int) or isinstance(index, bool) or not isinstance(turn.get("turn_level_pred"), dict):
                raise UserError(f"{path}: {conv_id}: every turn needs an integer turn_ind and a turn_level_pred object")
            out[(conv_id, index)] = _predictions(turn["turn_level_pred"], path, conv_id)
        dial = record.get("dial_level_pred")
        if dial is not None:
            if not isinstance(dial, dict):
                raise UserError(f"{path}: {conv_id}: dial_level_pred must be an object")
            out[(conv_id,)] = _predictions(dial, path, conv_id)
    return out


def _predictions(raw: dict, path, conv_id: str) -> dict[str, float]:
    """Numbers by aspect; an alias (``dialog_overall``, ``overall_impression``) counts only
    when the canonical key is absent, as in FACE's evaluation script."""
    out = {}
    for key, value in sorted(raw.items(), key=lambda kv: kv[0] in ASPECT_ALIASES):  # canonical keys first
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{path}: {conv_id}: prediction {key!r} is not a number ({value!r})")
        out.setdefault(ASPECT_ALIASES.get(key, key), float(value))
    return out


def published_baselines(path: str | os.PathLike | None = None) -> dict[str, dict[str, dict[str, dict]]]:
    """``{half: {evaluator: {aspect: {"pearson": r, "spearman": rho}}}}`` as published
    (None where the paper has no number), halves ``redial``/``opendialkg``."""
    data = read_json(path or BASELINES_FILE)
    out: dict[str, dict] = {}
    for table, evaluators in data.items():
        half = HALF_IDS.get(table, table)
        out[half] = {name: {ASPECT_ALIASES.get(a, a): {"pearson": v.get("pearson_r"), "spearman": v.get("spearman_rho")}
                            for a, v in aspects.items()}
                     for name, aspects in evaluators.items()}
    return out


# -- the registered benchmark -----------------------------------------------------------------
def _turn_units(turn: LabelledTurn):
    from crsbench.judge import JudgeInput
    from crsbench.judge_validation import Unit

    return Unit(key=(turn.conv_id, turn.turn_ind), group=turn.conv_id, system=turn.system, half=turn.half,
                item=JudgeInput(list(turn.context), turn.reply, list(turn.roles)), labels=dict(turn.labels),
                n_turns=len(turn.context) + 1)


def dialogue_input(dialogue: LabelledDialogue):
    """How a judge sees a whole dialogue: every turn up to the last assistant turn as the
    context and that last assistant turn as the reply (the rubric asks about the whole
    conversation; user turns after the last assistant turn, rare, are dropped)."""
    from crsbench.judge import JudgeInput

    turns = list(dialogue.turns)
    last = max((i for i, (role, _) in enumerate(turns) if role == "system"), default=None)
    if last is None:
        return JudgeInput([t for _, t in turns], "", [r for r, _ in turns])
    return JudgeInput([t for _, t in turns[:last]], turns[last][1], [r for r, _ in turns[:last]])


def _dialogue_unit(dialogue: LabelledDialogue):
    from crsbench.judge_validation import Unit

    return Unit(key=(dialogue.conv_id,), group=dialogue.conv_id, system=dialogue.system, half=dialogue.half,
                item=dialogue_input(dialogue), labels=dict(dialogue.labels), n_turns=len(dialogue.turns))


def load_units(path: str | os.PathLike | None = None):
    """The benchmark's data for :mod:`crsbench.judge_validation`."""
    from crsbench.judge_validation import BenchmarkData

    source = resolve_path(path)
    conversations = load_conversations(source)
    return BenchmarkData(
        name=source.name if path is not None else "crs_arena_eval_redial.json (bundled)",
        sha256=hashlib.sha256(read_bytes(source)).hexdigest(),
        units={"turn": [_turn_units(t) for t in labelled_turns(conversations)],
               "dialogue": [_dialogue_unit(d) for d in labelled_dialogues(conversations)]})


def _benchmark():
    from crsbench.judge_validation import JudgeBenchmark

    return JudgeBenchmark(
        name=BENCHMARK_NAME,
        description="CRSArena-Eval (SIGIR 2026): people's ratings of 9 CRSs' turns and dialogues",
        rubrics={"turn": TURN_RUBRIC, "dialogue": DIALOGUE_RUBRIC},
        aspects={"turn": TURN_ASPECTS, "dialogue": DIALOGUE_ASPECTS},
        load=load_units, read_run=read_run, published=published_baselines,
        default_run=str(FACE_RUN_FILE),
        citation=("Joko & Hasibi, FACE, SIGIR 2026 (arXiv 2506.00314); Bernard et al., CRS Arena, WSDM 2025"))


__all__ = ["LabelledTurn", "LabelledDialogue", "load_conversations", "labelled_turns", "labelled_dialogues",
           "read_run", "published_baselines", "dialogue_input", "load_units", "TURN_ASPECTS", "DIALOGUE_ASPECTS",
           "BUNDLED_FILE", "FACE_RUN_FILE", "BASELINES_FILE", "BENCHMARK_NAME", "TURN_RUBRIC", "DIALOGUE_RUBRIC"]
