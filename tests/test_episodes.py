"""Tests for suites.data.episodes: protocol parsing, N-way K-shot and Meta-Dataset vvvs episodes."""
import json
import math
import random
from collections import Counter

import pytest

from suites.data.episodes import DEFAULT_QUERIES, EpisodeError, parse_protocol, sample_episode

# 8 classes labelled 10, 20, ..., 80 with 20..55 images each, interleaved as in a real dataset.
SIZES = {10 * (c + 1): 20 + 5 * c for c in range(8)}
LABELS = [c for c, n in SIZES.items() for _ in range(n)]
LABELS = LABELS[::2] + LABELS[1::2]


def test_parse_protocol_reads_ways_shots_and_queries():
    assert parse_protocol("5way-1shot") == {"protocol": "nway-kshot", "ways": 5, "shots": 1,
                                            "queries": DEFAULT_QUERIES}
    assert parse_protocol("20way-5shot-3query") == {"protocol": "nway-kshot", "ways": 20,
                                                    "shots": 5, "queries": 3}
    assert parse_protocol("vvvs") == {"protocol": "vvvs"}


@pytest.mark.parametrize("text", ["5way", "5-way-1-shot", "1way-5shot", "5way-0shot",
                                  "5way-1shot-0query", "5way-1shot-15queries", " 5way-1shot",
                                  "VVVS", "", None, 5])
def test_parse_protocol_rejects_other_text_naming_it_and_the_forms(text):
    with pytest.raises(EpisodeError, match="<N>way-<K>shot") as err:
        parse_protocol(text)
    assert repr(text) in str(err.value)


def test_same_seed_gives_the_same_episode_and_other_seeds_differ():
    first = sample_episode(LABELS, "5way-2shot-3query", seed=7)
    assert sample_episode(LABELS, "5way-2shot-3query", seed=7) == first
    others = {sample_episode(LABELS, "5way-2shot-3query", seed=s).support for s in range(8, 20)}
    assert first.support not in others and len(others) > 1


def test_nway_kshot_counts_relabelling_and_disjointness():
    for seed in range(30):
        e = sample_episode(LABELS, "4way-3shot-5query", seed)
        assert len(e.classes) == len(set(e.classes)) == 4 and set(e.classes) <= set(SIZES)
        assert Counter(e.support_labels) == {i: 3 for i in range(4)}
        assert Counter(e.query_labels) == {i: 5 for i in range(4)}
        assert not set(e.support) & set(e.query)
        assert len(set(e.support)) == len(e.support)
        for index, label in zip(e.support + e.query, e.support_labels + e.query_labels):
            assert LABELS[index] == e.classes[label]
        pairs = list(zip(e.support_labels, e.support))
        assert pairs == sorted(pairs)


def test_only_classes_with_shots_plus_queries_images_are_chosen():
    labels = [0] * 5 + [1] * 30 + [2] * 4 + [3] * 30 + [4] * 30
    chosen = set()
    for seed in range(40):
        chosen |= set(sample_episode(labels, "3way-1shot-4query", seed).classes)
    assert chosen == {0, 1, 3, 4}


def test_classes_do_not_depend_on_the_order_labels_first_appear_in():
    forward = [0] * 10 + [1] * 10 + [2] * 10 + [3] * 10
    backward = forward[::-1]
    for seed in range(10):
        assert (sample_episode(forward, "2way-1shot-1query", seed).classes
                == sample_episode(backward, "2way-1shot-1query", seed).classes)
    orders = {sample_episode(LABELS, "8way-1shot-1query", s).classes for s in range(10)}
    assert len(orders) > 1 and all(sorted(o) == sorted(SIZES) for o in orders)


def test_to_dict_is_json_and_reports_ways_shots_and_derivation():
    e = sample_episode(LABELS, "3way-2shot", 1)
    d = json.loads(json.dumps(e.to_dict()))
    assert d["ways"] == 3 and d["shots_per_class"] == [2, 2, 2]
    assert d["support"] == list(e.support) and d["query_labels"] == list(e.query_labels)
    assert d["classes"] == list(e.classes) and d["seed"] == 1 and d["protocol"] == "3way-2shot"
    assert "random.Random(seed)" in d["derivation"]
    assert len(d["query"]) == 3 * DEFAULT_QUERIES


def test_too_few_classes_names_ways_and_classes():
    with pytest.raises(EpisodeError, match=r"asks 10 ways but the data has 8 classes: \[10, 20"):
        sample_episode(LABELS, "10way-1shot", 0)


def test_too_few_big_enough_classes_names_counts_and_the_ask():
    # classes have 20, 25, ..., 55 images; 50 images (40 + 10) exist only in classes 70 and 80
    with pytest.raises(EpisodeError, match=r"needs 3 classes with at least 50 images \(40 shots "
                                           r"\+ 10 queries\), but only 2 of the 8 classes .*"
                                           r"smallest 20, largest 55"):
        sample_episode(LABELS, "3way-40shot-10query", 0)


def test_empty_labels_and_bad_labels_or_seed_are_errors():
    with pytest.raises(EpisodeError, match="no labels"):
        sample_episode([], "5way-1shot", 0)
    with pytest.raises(EpisodeError, match="label 2 is 1.5"):
        sample_episode([0, 1, 1.5], "2way-1shot", 0)
    with pytest.raises(EpisodeError, match="seed must be an integer"):
        sample_episode(LABELS, "2way-1shot", "7")


# vvvs: 60 classes of 10..300 images, deterministic but uneven.
VVVS_SIZES = [10 + (c * 37) % 291 for c in range(60)]
VVVS_LABELS = [c for c, n in enumerate(VVVS_SIZES) for _ in range(n)]


def _composition(e):
    shots = Counter(e.support_labels)
    queries = Counter(e.query_labels)
    return [shots[i] for i in range(len(e.classes))], [queries[i] for i in range(len(e.classes))]


def test_vvvs_invariants_hold_and_ways_and_shots_vary():
    assert min(VVVS_SIZES) == 10 and max(VVVS_SIZES) >= 290
    ways_seen, support_sizes, shot_lists = set(), set(), set()
    for seed in range(200):
        e = sample_episode(VVVS_LABELS, "vvvs", seed)
        ways = len(e.classes)
        shots, queries = _composition(e)
        counts = [VVVS_SIZES[c] for c in e.classes]
        q = min(10, min(n // 2 for n in counts))
        assert 5 <= ways <= 50 and len(set(e.classes)) == ways
        assert len(e.support) <= 500 and len(e.support) >= ways
        assert min(shots) >= 1
        assert queries == [q] * ways
        assert all(k + q <= n for k, n in zip(shots, counts))
        assert not set(e.support) & set(e.query)
        for index, label in zip(e.support + e.query, e.support_labels + e.query_labels):
            assert VVVS_LABELS[index] == e.classes[label]
        assert e.to_dict()["shots_per_class"] == shots
        ways_seen.add(ways)
        support_sizes.add(len(e.support))
        shot_lists.add(tuple(shots))
    assert len(ways_seen) > 20 and min(ways_seen) < 10 and max(ways_seen) > 45
    assert len(support_sizes) > 50 and max(support_sizes) > 400
    assert any(len(set(s)) > 1 for s in shot_lists)
    assert sample_episode(VVVS_LABELS, "vvvs", 3) == sample_episode(VVVS_LABELS, "vvvs", 3)


def test_vvvs_query_count_follows_the_smallest_chosen_class():
    # every class has 6 images: q = min(10, floor(6 / 2)) = 3 and each class keeps 3 for support
    labels = [c for c in range(12) for _ in range(6)]
    for seed in range(20):
        shots, queries = _composition(sample_episode(labels, "vvvs", seed))
        assert set(queries) == {3} and max(shots) <= 3


def test_vvvs_support_size_is_capped_at_500():
    # Uncapped, 50 classes of 300 images would often ask for more than 1000 support images; the
    # shots are floored shares of the capped size, so the support set comes close to 500.
    labels = [c for c in range(50) for _ in range(300)]
    sizes = [len(sample_episode(labels, "vvvs", s).support) for s in range(40)]
    assert 480 < max(sizes) <= 500 and min(sizes) < 200


def test_vvvs_with_fewer_than_five_classes_uses_them_all():
    labels = [0] * 7 + [1] * 3 + [2] * 12 + [3] * 1
    for seed in range(20):
        e = sample_episode(labels, "vvvs", seed)
        assert sorted(e.classes) == [0, 1, 2]  # class 3 has 1 image: not eligible
        shots, queries = _composition(e)
        assert queries == [1, 1, 1]
        assert all(k + 1 <= {0: 7, 1: 3, 2: 12}[c] for k, c in zip(shots, e.classes))


def test_vvvs_needs_two_classes_with_two_images():
    with pytest.raises(EpisodeError, match=r"at least 2 classes with 2 or more images, but 1 of "
                                           r"the 3 classes .*smallest 1, largest 9"):
        sample_episode([0] * 9 + [1] + [2], "vvvs", 0)


def test_vvvs_shot_formula_matches_meta_dataset_for_a_known_draw():
    # Redo the documented draws by hand with the same random.Random and compare.
    e = sample_episode(VVVS_LABELS, "vvvs", 11)
    rng = random.Random(11)
    ways = rng.randint(5, 50)
    classes = rng.sample(list(range(60)), ways)
    counts = [VVVS_SIZES[c] for c in classes]
    q = min(10, min(n // 2 for n in counts))
    beta = rng.random()
    size = min(500, sum(math.floor(beta * min(100, n - q) + 1) for n in counts))
    weights = [math.exp(rng.uniform(math.log(0.5), math.log(2))) * n for n in counts]
    shots = [min(math.floor(w / sum(weights) * (size - ways)) + 1, n - q)
             for w, n in zip(weights, counts)]
    assert tuple(classes) == e.classes
    assert _composition(e) == (shots, [q] * ways)
