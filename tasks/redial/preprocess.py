"""Raw ReDial dialogues -> one sample per recommender turn (pure python + numpy).

The rules follow UniCRS's ReDial preprocessing, checked against its processed test split
(``data/unicrs_test_processed.jsonl.gz``, tests/test_redial_reference.py):

- consecutive messages of one sender form one turn, joined with a space;
- every recommender (``respondentWorkerId``) turn is a sample, also the first turn of a
  dialogue the recommender opens (its context is empty; UniCRS writes it as ``[""]``);
- ``@id`` mentions become the movie title (``movieMentions``, else movies_with_mentions.csv),
  whitespace is collapsed and HTML entities are unescaped;
- the targets are the recommender's movie mentions in that turn that map to a catalogue
  item, one per mention (a movie named twice counts twice, as in UniCRS's ``rec``).

Movie -> entity mapping: KGSF's movieid2dbpedia first. UniCRS's own linking covers far more
movies (most 2017-2018 releases are null there), so a movie that this leaves unmapped is
matched by title to a recommendable KG entity: same name, preferring "(<year> film)",
"(film)", no disambiguation, then other film-like ones, and never an entity that
movieid2dbpedia already gives to another movie (so "Jumanji (2017)" does not become the 1995
film). With this rule 99.5% of the reference's 4,810 test targets are reproduced.
"""
from __future__ import annotations

import csv
import html
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field

from crsbench.errors import DataError
from crsbench_tasks.redial.kg import split_uri

PREPROCESS_VERSION = "2"  # bump whenever the samples change; part of the cache key
MENTION = re.compile(r"@(\d+)")
PLACEHOLDER = "<movie>"
UNKNOWN_MOVIE = "a movie"  # an @id that no table names (never happens in the real data)
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
FEEDBACK = {1: "liked", 0: "disliked"}  # 2 ("did not say") and missing -> "unknown"
# How a ReDial text spells a movie: "Title (YYYY)", the capitalised words before a year in
# brackets ("Kill Bill (2003)", "Happy Gilmore (1996)"); RedialTask.mention_spans finds them.
TITLE_MENTION = re.compile(
    r"(?:(?:[A-Z0-9][\w'’:.&,!-]*|of|the|a|an|and|in|on|for|to|at|with|from|or|is|&|-|–)\s+)*"
    r"(?:[A-Z0-9][\w'’:.&,!-]*\s*)?\(\s*\d{4}\s*\)")


def clean(text: str) -> str:
    return html.unescape(" ".join(text.split()))


def split_title(title: str) -> tuple[str, str | None]:
    """``"Police Academy  (1984)"`` -> ``("Police Academy", "1984")``."""
    title = " ".join(title.split())
    m = _TITLE_YEAR.match(title)
    return (m.group(1), m.group(2)) if m else (title, None)


def read_movie_names(text: str, source: str = "movies_with_mentions.csv") -> dict[str, str]:
    try:
        return {row["movieId"]: row["movieName"] for row in csv.DictReader(io.StringIO(text))}
    except KeyError as exc:
        raise DataError(f"{source}: no {exc.args[0]!r} column") from None


def read_jsonl(text: str, source: str) -> list[dict]:
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{source}:{number}: not a JSON object (one dialogue per line)")
        check_dialog(record, f"{source}:{number}")
        out.append(record)
    return out


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def check_dialog(dialog: dict, where: str) -> None:
    """A raw ReDial dialogue has the official release's field types, or a DataError names the
    line and the field (the preprocessing below relies on them)."""
    def bad(field: str, value, expected: str):
        raise DataError(f"{where}: {field} is {_kind(value)}, expected {expected} (the official ReDial format)")

    cid = dialog.get("conversationId")
    if "conversationId" not in dialog:
        raise DataError(f"{where}: the dialogue has no 'conversationId'")
    if isinstance(cid, bool) or not isinstance(cid, (str, int)):
        bad("conversationId", cid, "a string or an integer")
    messages = dialog.get("messages")
    if not isinstance(messages, list):
        bad("messages", messages, "a list of message objects")
    for k, message in enumerate(messages):
        if not isinstance(message, dict):
            bad(f"messages[{k}]", message, "an object with 'text' and 'senderWorkerId'")
        if not isinstance(message.get("text"), str):
            bad(f"messages[{k}].text", message.get("text"), "a string")
        sender = message.get("senderWorkerId")
        if isinstance(sender, bool) or not isinstance(sender, (int, str)):
            bad(f"messages[{k}].senderWorkerId", sender, "an integer or a string")
    mentions = dialog.get("movieMentions")
    if isinstance(mentions, dict):
        for mid, title in mentions.items():
            if title is not None and not isinstance(title, str):
                bad(f"movieMentions[{mid!r}]", title, "a title string or null")
    elif mentions not in (None, []):  # null or [] are read as no mentions
        bad("movieMentions", mentions, "an object (movie id -> title)")
    for field in ("initiatorQuestions", "respondentQuestions"):
        questions = dialog.get(field)
        if isinstance(questions, list) and not questions:
            continue  # the release writes an empty questionnaire as []
        if questions is not None and not isinstance(questions, dict):
            bad(field, questions, "an object (movie id -> answers)")
        for mid, answers in (questions or {}).items():
            if not isinstance(answers, dict):
                bad(f"{field}[{mid!r}]", answers, "an object of answers")
            for key in ("suggested", "seen", "liked"):
                value = answers.get(key)
                if value is not None and (isinstance(value, bool) or value not in (0, 1, 2)):
                    bad(f"{field}[{mid!r}].{key}", value, "0, 1 or 2")


class MovieMapper:
    """ReDial movie id -> catalogue item (KG entity id), see the module docstring."""

    def __init__(self, movieid2dbpedia: dict, entity2id: dict[str, int], item_ids, names: dict[str, str]):
        self.items = set(item_ids)
        self.names = names
        self.direct = {}
        for mid, uri in movieid2dbpedia.items():
            entity = entity2id.get(uri) if uri else None
            if entity in self.items:
                self.direct[mid] = entity
        claimed = set(self.direct.values())
        self.by_name: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for uri, entity in entity2id.items():
            if entity in self.items and entity not in claimed:
                base, disamb = split_uri(uri)
                self.by_name[base.lower()].append((disamb, entity))
        self._cache: dict[str, int | None] = {}

    def item(self, mid: str, title: str | None = None) -> int | None:
        """``title`` (the dialogue's) is only used for ids the csv does not name."""
        if mid in self.direct:
            return self.direct[mid]
        title = self.names.get(mid) or title
        if title not in self._cache:
            self._cache[title] = self._by_title(title)
        return self._cache[title]

    def _by_title(self, title: str | None) -> int | None:
        if not title:
            return None
        name, year = split_title(title)
        candidates = self.by_name.get(name.lower())
        if not candidates:
            return None
        return min(candidates, key=lambda c: (_preference(c[0], year), c[0], c[1]))[1]


def _preference(disamb: str, year: str | None) -> int:
    """Lower is better: how likely a disambiguation names the film of that year."""
    if year and disamb == f"{year} film":
        return 0
    if disamb == "film":
        return 1
    if disamb == "":
        return 2
    film_like = "film" in disamb and not any(w in disamb for w in ("series", "score", "soundtrack"))
    if film_like and year and year in disamb:
        return 3
    if film_like:
        return 4
    found = _YEAR.search(disamb)
    if found and year and found.group(1) == year:
        return 5
    return 6


@dataclass
class Resources:
    """Everything preprocessing needs besides the dialogues."""
    mapper: MovieMapper
    linker: object  # EntityLinker: ``link(text) -> list[int]``
    names: dict[str, str] = field(default_factory=dict)  # movie id -> title (csv)


@dataclass
class _Turn:
    role: str
    text: str = ""           # titles in
    template: str = ""       # <movie> in
    items: list = field(default_factory=list)      # catalogue items, one per mention
    movie_ids: list = field(default_factory=list)  # ReDial ids of those items
    entities: list = field(default_factory=list)   # items and linked entities, in text order
    linked: list = field(default_factory=list)     # linked entities only


def _feedback(dialog: dict, mid: str) -> str:
    questions = dialog.get("initiatorQuestions")
    answer = questions.get(mid) if isinstance(questions, dict) else None
    liked = answer.get("liked") if isinstance(answer, dict) else None
    return FEEDBACK.get(liked, "unknown")


def _message(text: str, titles: dict, res: Resources, turn: _Turn) -> tuple[str, str]:
    """Fill ``turn`` with one message's movies and entities; return (text, template)."""
    shown, masked = [], []
    parts = MENTION.split(text)  # text, id, text, id, ..., text
    for k, part in enumerate(parts):
        if k % 2 == 0:
            shown.append(part)
            masked.append(part)
            linked = res.linker.link(part)
            turn.linked.extend(linked)
            turn.entities.extend(linked)
            continue
        title = titles.get(part) or res.names.get(part)
        # The raw title, as UniCRS does: its trailing space survives ("Anchorman , did"),
        # doubled spaces go when the whole utterance is cleaned.
        shown.append(title if title else UNKNOWN_MOVIE)
        masked.append(PLACEHOLDER if title else UNKNOWN_MOVIE)
        item = res.mapper.item(part, title)
        if item is not None:
            turn.items.append(item)
            turn.movie_ids.append(part)
            turn.entities.append(item)
    return clean("".join(shown)), clean("".join(masked))


def _turns(dialog: dict, res: Resources) -> list[_Turn]:
    seeker = dialog.get("initiatorWorkerId")
    titles = dialog.get("movieMentions") or {}
    if not isinstance(titles, dict):
        titles = {}
    turns: list[_Turn] = []
    sender = object()
    texts: list[str] = []
    templates: list[str] = []
    for message in dialog.get("messages") or []:
        if message.get("senderWorkerId") != sender:
            if turns:
                turns[-1].text, turns[-1].template = " ".join(texts), " ".join(templates)
            sender = message.get("senderWorkerId")
            turns.append(_Turn("seeker" if sender == seeker else "recommender"))
            texts, templates = [], []
        shown, masked = _message(str(message.get("text", "")), titles, res, turns[-1])
        texts.append(shown)
        templates.append(masked)
    if turns:
        turns[-1].text, turns[-1].template = " ".join(texts), " ".join(templates)
    return turns


def process_dialog(dialog: dict, res: Resources) -> list[dict]:
    """The samples of one dialogue, in turn order."""
    try:
        dialog_id = str(dialog["conversationId"])
    except KeyError:
        raise DataError("a dialogue has no 'conversationId'") from None
    turns = _turns(dialog, res)
    samples = []
    for index, turn in enumerate(turns):
        if turn.role != "recommender":
            continue
        before = turns[:index]
        last_turn = {e: k for k, t in enumerate(before) for e in t.entities}
        context_entities = list(dict.fromkeys(e for t in before for e in t.entities))
        samples.append({
            "sample_id": f"{dialog_id}:{index}",
            "dialog_id": dialog_id,
            "turn": index,
            "context": [t.text for t in before],
            "context_roles": [t.role for t in before],
            "context_items": [item for t in before for item in t.items],
            "context_entities": context_entities,
            # the turn that last mentions each context entity (emotion-aware models use it)
            "context_entity_turns": [last_turn[e] for e in context_entities],
            "targets": list(turn.items),
            "target_feedback": [_feedback(dialog, mid) for mid in turn.movie_ids],
            "response": turn.text,
            "response_template": turn.template,
            "response_entities": list(dict.fromkeys(turn.linked)),
        })
    return samples


def make_resources(kg, movie_names: dict[str, str], linker=None) -> Resources:
    """Mapper and linker from the bundled KG and a movie id -> title table."""
    from crsbench_tasks.redial.entity_linker import build_linker
    from crsbench_tasks.redial.kg import read_json

    mapper = MovieMapper(read_json("movieid2dbpedia.json", kg.data_dir), kg.entity2id,
                         kg.item_ids, movie_names)
    return Resources(mapper, linker or build_linker(kg), movie_names)


def process_dialogs(dialogs, res: Resources) -> list[dict]:
    return [sample for dialog in dialogs for sample in process_dialog(dialog, res)]
