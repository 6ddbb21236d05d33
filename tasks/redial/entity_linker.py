"""Link DBpedia entities of the KG in free text (greedy longest match on word n-grams).

ReDial's raw data marks movies with ``@id`` but nothing else, while KG-based recommenders
(KBRD, KGSF, UniCRS, ECR) also want the actors, directors and genres a user talks about.
This linker builds one dict from normalised entity names to entity ids and scans a text
left to right, taking the longest name that starts at each word. Cheap names are left out
on purpose because they cost far more precision than they bring recall: stopwords and
other conversation filler, pure numbers, very short names, and one-word names other than
genres (most one-word DBpedia names are also ordinary English words: "Family", "Time").
Movies are excluded by default: they are linked exactly through the ``@id`` mentions.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable

from crsbench_tasks.redial.kg import split_uri

MAX_WORDS = 6
MIN_CHARS = 3

# Function words plus the filler words of movie chat; a name made only of these is not
# linked ("The Movie", "I Love You", "Good Times"...).
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is it
its itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we
were what when where which while who whom why will with would you your yours yourself
yourselves yes yeah ok okay oh hi hello hey bye goodbye thanks thank please sure well
really much many one two three first last new old good great best better bad worst like
love liked loved watch watched watching see seen saw movie movies film films show shows
series part time times day night man men woman women girl girls boy boys kid kids family
friend friends life home world people thing things way year years lot little big
""".split())

# Everyday words for the genres of the KG (the left side is normalised text).
GENRE_WORDS = {
    "scary": "Horror_film", "horror": "Horror_film", "horrors": "Horror_film",
    "action": "Action_film", "comedies": "Comedy", "comedy": "Comedy",
    "romance": "Romance_film", "romantic": "Romance_film", "romcom": "Romance_film",
    "thriller": "Thriller_film", "thrillers": "Thriller_film", "drama": "Drama",
    "dramas": "Drama", "sci fi": "Science_fiction_film", "scifi": "Science_fiction_film",
    "science fiction": "Science_fiction_film", "documentary": "Documentary",
    "documentaries": "Documentary", "animated": "Animation", "animation": "Animation",
    "fantasy": "Fantasy", "musical": "Musical_film", "musicals": "Musical_film",
    "mystery": "Mystery_film", "crime": "Crime_film", "western": "Western_(genre)",
    "sport": "Sport", "sports": "Sport", "history": "History", "historical": "History",
    "westerns": "Western_(genre)", "adventure": "Adventure_film", "family friendly": "Family_film",
    "superhero": "Superhero_film", "superheroes": "Superhero_film", "disney": "The_Walt_Disney_Company",
}

_TOKEN = re.compile(r"[a-z0-9]+")


def normalise(text: str) -> list[str]:
    """Lower-case ASCII words; apostrophes dropped ("Ocean's" -> "oceans"), other marks split."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = text.replace("'", "").replace("\u2019", "")
    return _TOKEN.findall(text)


class EntityLinker:
    """``link(text)`` -> entity ids in order of appearance (repeats kept)."""

    def __init__(self, entity2id: dict[str, int], exclude: Iterable[int] = (),
                 single_word_ok: Iterable[int] = (), degree: dict[int, int] | None = None,
                 aliases: dict[str, str] | None = None, max_words: int = MAX_WORDS):
        self.max_words = max_words
        exclude = set(exclude)
        single_word_ok = set(single_word_ok)
        degree = degree or {}
        best: dict[tuple[str, ...], tuple] = {}

        def offer(key, entity, bare):
            # Several entities share a name ("Drama", "Drama_(film_and_television)"):
            # keep the undisambiguated one, then the best connected one, then the lowest id.
            rank = (not bare, -degree.get(entity, 0), entity)
            if key not in best or rank < best[key][0]:
                best[key] = (rank, entity)

        for uri, entity in entity2id.items():
            if entity in exclude:
                continue
            name, disamb = split_uri(uri)
            key = tuple(normalise(name))
            if self._linkable(key, entity in single_word_ok):
                offer(key, entity, disamb == "")
        self.names = {key: entity for key, (_, entity) in best.items()}
        # Hand aliases win over KG names: they encode how people actually say genres, and
        # "horror films" should land on the same node as "horror" (the KG has both).
        for phrase, target in (aliases or {}).items():
            entity = entity2id.get(f"<http://dbpedia.org/resource/{target}>")
            if entity is None or entity in exclude:
                continue
            key = tuple(normalise(phrase))
            for suffix in ((), ("film",), ("films",), ("movie",), ("movies",)):
                self.names[key + suffix] = entity

    @staticmethod
    def _linkable(key: tuple[str, ...], single_word_ok: bool) -> bool:
        if not key or len(key) > MAX_WORDS:
            return False
        if all(w in STOPWORDS or w.isdigit() for w in key):
            return False
        if len(" ".join(key)) < MIN_CHARS:
            return False
        return len(key) > 1 or single_word_ok

    def spans(self, text: str) -> list[tuple[int, int, int]]:
        """(first word, end word, entity id) of every match, greedy longest first."""
        words = normalise(text)
        out, i = [], 0
        while i < len(words):
            for n in range(min(self.max_words, len(words) - i), 0, -1):
                entity = self.names.get(tuple(words[i:i + n]))
                if entity is not None:
                    out.append((i, i + n, entity))
                    i += n
                    break
            else:
                i += 1
        return out

    def link(self, text: str) -> list[int]:
        return [entity for _, _, entity in self.spans(text)]


def build_linker(kg, exclude_items: bool = True) -> EntityLinker:
    """The linker the task uses: KG names, genres as one-word names, movies excluded."""
    triples = kg.triples
    real = triples[triples[:, 1] != kg.relation2id.get("self_loop", -1)]
    degree: dict[int, int] = {}
    for column in (real[:, 0], real[:, 2]):
        for entity, count in zip(*_unique_counts(column)):
            degree[entity] = degree.get(entity, 0) + count
    genre = kg.relation2id["<http://dbpedia.org/ontology/genre>"]
    genres = set(real[real[:, 1] == genre, 2].tolist())
    exclude = kg.item_ids if exclude_items else ()
    return EntityLinker(kg.entity2id, exclude=exclude, single_word_ok=genres, degree=degree,
                        aliases=GENRE_WORDS)


def _unique_counts(column):
    import numpy as np
    values, counts = np.unique(column, return_counts=True)
    return values.tolist(), counts.tolist()
