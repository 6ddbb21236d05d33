"""EntityLinker on hand-made names, then the linker the redial task builds from the real KG."""
from __future__ import annotations

import pytest

from crsbench_tasks.redial.entity_linker import GENRE_WORDS, EntityLinker, build_linker, normalise
from crsbench_tasks.redial.kg import KnowledgeGraph


def uri(name: str) -> str:
    return f"<http://dbpedia.org/resource/{name}>"


NAMES = {
    "Tom_Hanks": 1,
    "Tom": 2,                       # one word: only with single_word_ok
    "New_York": 3,
    "New_York_City": 4,             # longer than New York
    "The_Movie": 5,                 # stopwords only
    "I_Love_You": 6,                # stopwords only
    "Horror_film": 7,
    "Titanic_(1997_film)": 8,       # a catalogue item
    "Drama": 9,
    "Drama_(film_and_television)": 10,
    "Steven_Spielberg": 11,
    "Ocean's_Eleven": 12,
    "Amélie": 13,
    "1984": 14,                     # digits only
    "Up_(2009_film)": 15,           # too short
    "Comedy": 16,
    "Heat_(1995_film)": 17,
    "Heat_(1972_film)": 18,
}
E2I = {uri(name): entity for name, entity in NAMES.items()}


def test_normalise():
    assert normalise("Ocean's  Eleven!") == ["oceans", "eleven"]
    assert normalise("Amélie, SCI-FI") == ["amelie", "sci", "fi"]
    assert normalise("Spider\u2019s web") == ["spiders", "web"]


def test_longest_match_wins():
    linker = EntityLinker(E2I)
    assert linker.link("I moved to New York City last year") == [4]
    assert linker.link("New York is nice, and so is New York City") == [3, 4]
    assert linker.spans("we love new york city") == [(2, 5, 4)]


def test_order_and_repeats_are_kept():
    linker = EntityLinker(E2I)
    assert linker.link("Steven Spielberg and Tom Hanks, then Steven Spielberg again") == [11, 1, 11]


def test_stopword_only_and_number_names_are_not_linked():
    linker = EntityLinker(E2I, single_word_ok=[14])
    assert linker.link("The movie was great, I love you") == []
    assert linker.link("it came out in 1984") == []
    assert ("the", "movie") not in linker.names and ("1984",) not in linker.names


def test_one_word_names_only_when_allowed():
    plain = EntityLinker(E2I)
    assert plain.link("Tom said drama") == []
    allowed = EntityLinker(E2I, single_word_ok=[2, 9, 15])
    assert allowed.link("Tom said drama") == [2, 9]
    assert allowed.link("Tom Hanks") == [1]  # the longer name still wins
    assert allowed.link("Up was sad") == []  # too short even when allowed


def test_undisambiguated_name_preferred_then_degree():
    linker = EntityLinker(E2I, single_word_ok=[9, 10, 17, 18])
    assert linker.link("a drama") == [9]
    assert linker.link("Heat") == [17]  # same rank: lowest id
    assert EntityLinker(E2I, single_word_ok=[17, 18], degree={18: 5}).link("Heat") == [18]


def test_genre_aliases():
    linker = EntityLinker(E2I, aliases=GENRE_WORDS)
    assert linker.link("something scary") == [7]
    assert linker.link("I like horror movies and comedies") == [7, 16]
    assert linker.link("any horror film will do") == [7]
    assert linker.link("horror") == [7]
    # an alias whose target is not in the KG is ignored
    assert linker.link("a western") == []
    assert EntityLinker(E2I, aliases={"spooky": "No_such_entity"}).link("spooky") == []


def test_excluded_entities_are_not_linked():
    with_items = EntityLinker(E2I, single_word_ok=[8])
    assert with_items.link("Have you seen Titanic?") == [8]
    without = EntityLinker(E2I, single_word_ok=[8], exclude=[8])
    assert without.link("Have you seen Titanic?") == []
    assert EntityLinker(E2I, exclude=[7], aliases=GENRE_WORDS).link("horror") == []


def test_accents_and_apostrophes():
    linker = EntityLinker(E2I, single_word_ok=[13])
    assert linker.link("Oceans eleven and Ocean's Eleven") == [12, 12]
    assert linker.link("I liked Amelie") == [13]


# -- the real KG ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kg():
    return KnowledgeGraph()


@pytest.fixture(scope="module")
def linker(kg):
    return build_linker(kg)


def names(kg, entities):
    return [kg.id2entity[e] for e in entities]


def test_real_kg_actor_and_genre(kg, linker):
    found = linker.link("I love Tom Hanks and horror movies")
    assert names(kg, found) == [uri("Tom_Hanks"), uri("Horror_film")]


def test_real_kg_everyday_genre_words(kg, linker):
    assert names(kg, linker.link("something scary, or a comedy")) == [uri("Horror_film"), uri("Comedy")]
    assert names(kg, linker.link("sci-fi and science fiction")) == [uri("Science_fiction_film")] * 2


def test_real_kg_excludes_movies_and_filler(kg, linker):
    items = set(kg.item_ids)
    assert not set(linker.link("Have you seen Titanic or The Dark Knight?")) & items
    assert linker.link("Hi! I am good, thanks. What kind of movies do you like?") == []
    with_items = build_linker(kg, exclude_items=False)
    assert any(e in items for e in with_items.link("Have you seen The Dark Knight?"))
