from crsbench import KnowledgeGraph
from crsbench.kg import require_kg
from crsbench_example_task import BookTask, mentions, spell


def test_every_recommender_turn_is_a_sample():
    data = BookTask().load()
    assert {name: len(samples) for name, samples in data.splits.items()} == {"train": 10, "valid": 2, "test": 4}
    first = data.splits["test"][0]
    assert first["context"] == ["I liked Dune a lot. What else is like it?"]
    assert first["targets"] == [1] and first["response_template"] == "Read <item>, it is another epic."
    assert "target_feedback" not in first  # the task has no feedback (has_feedback = False)


def test_the_graph_links_books_to_authors_and_genres():
    kg = require_kg(BookTask().load(), "any graph model")
    assert isinstance(kg, KnowledgeGraph) and kg.item_ids == list(range(10))
    asimov = kg.entity2id["author:Isaac Asimov"]
    assert {(h, t) for h, r, t in kg.triples.tolist() if r == 0 and t == asimov} == {(1, asimov), (2, asimov)}
    assert kg.entity_name(2) == "I, Robot" and kg.entity_name(asimov) == "Isaac Asimov"


def test_mentions_are_spelled_out():
    assert mentions("try @3 or @12.") == [3, 12]
    assert spell("try @1 or @12", {1: "A", 12: "L"}) == "try A or L"


def test_mention_spans_cover_the_titles():
    text = "I loved Dune and I, Robot."
    assert [text[a:b] for a, b in sorted(BookTask().mention_spans(text))] == ["Dune", "I, Robot"]
