"""Few-shot episodes drawn from a labelled dataset, reproducibly from one seed (host side).

Protocols (the text a suite or config names):
- ``"<N>way-<K>shot"`` or ``"<N>way-<K>shot-<Q>query"`` (``"5way-5shot"``, ``"5way-1shot-10query"``):
  N classes (N >= 2), K support and Q query images per class (K, Q >= 1; Q defaults to
  ``DEFAULT_QUERIES`` = 15).
- ``"vvvs"``: Meta-Dataset's variable-way variable-shot episodes (Triantafillou et al., ICLR 2020,
  "Meta-Dataset", section 3.2 and appendix), with its default constants (below).

Everything random comes from one ``random.Random(seed)``, drawn in this order; classes and the
image indices of each class are sorted first, so the order in which classes first appear in the
labels never matters:

N-way K-shot
  1. ``rng.sample(eligible, N)``: the episode classes, in episode order (episode label i is
     ``classes[i]``); eligible are the classes with at least K + Q images.
  2. For each episode class in episode order, ``rng.sample(indices, K + Q)``: the first K are its
     support images, the other Q its query images.

vvvs (C = number of classes with at least 2 images, the only eligible ones)
  1. ``rng.randint(5, min(50, C))``: the number of ways N. Departure from Meta-Dataset, which
     cannot sample an episode then: when 2 <= C < 5 the range is ``[C, C]`` (the draw is still made).
  2. ``rng.sample(eligible, N)``: the episode classes, in episode order.
  3. No draw: queries per class ``q = min(10, min_c floor(count_c / 2))``.
  4. ``rng.random()``: beta; the support size is
     ``|S| = min(500, sum_c floor(beta * min(100, count_c - q) + 1))``.
  5. ``rng.uniform(log 0.5, log 2)`` once per class in episode order: alpha_c; then
     ``R_c = exp(alpha_c) * count_c / sum_c' exp(alpha_c') * count_c'`` and the support shots
     ``k_c = min(floor(R_c * (|S| - N)) + 1, count_c - q)``.
  6. For each class in episode order, ``rng.sample(indices, k_c + q)``: first k_c support, rest query.

These formulas were checked against google-research/meta-dataset, ``meta_dataset/data/sampling.py``
(``sample_num_ways_uniformly``, ``compute_num_query``, ``sample_support_set_size``,
``sample_num_support_per_class``) and the defaults in ``learn/gin/setups/data_config_common.gin``.
Meta-Dataset writes the support-size term as ``floor(beta * x + 1)``, the paper's
``ceil(beta' * x)`` with beta' in (0, 1]; it is used here as written, so every class contributes
at least 1 and ``|S| >= N``. Meta-Dataset draws with numpy, so the same seed gives different
episodes there; and Python promises only ``random()`` itself to stay the same across versions, so
the seed reproduces an episode on one Python version (the stored ``to_dict()`` is the record).

Support and query index lists are ordered by (episode label, dataset index): the draw decides
which images are in them, the order carries no randomness. Shuffle them when training needs it.
"""
import math
import operator
import random
import re
from dataclasses import dataclass

DEFAULT_QUERIES = 15

VVVS = "vvvs"
MIN_WAYS, MAX_WAYS = 5, 50
MAX_QUERIES = 10
MAX_SUPPORT = 500
MAX_SUPPORT_CONTRIBUTION = 100
LOG_WEIGHT_RANGE = (math.log(0.5), math.log(2.0))

_FIXED = re.compile(r"(\d+)way-(\d+)shot(?:-(\d+)query)?")
_FORMS = "'<N>way-<K>shot', '<N>way-<K>shot-<Q>query' (N >= 2, K >= 1, Q >= 1) or 'vvvs'"

_DERIVATION = {
    "nway-kshot": ("random.Random(seed) draws the episode classes with random.sample over the "
                   "sorted classes that have at least shots + queries images, then, per class in "
                   "episode order, shots + queries images with random.sample over its sorted "
                   "indices: the first shots are support, the rest query."),
    VVVS: ("random.Random(seed) draws, in order: the number of ways (randint), the classes "
           "(random.sample over the sorted classes with at least 2 images), beta (random) for the "
           "support size, one log-weight per class (uniform), then per class in episode order its "
           "support + query images (random.sample over its sorted indices: support first)."),
}


class EpisodeError(ValueError):
    """An episode cannot be drawn from the data; the message says what the data has and what was asked."""


def parse_protocol(text):
    """``{"protocol": "nway-kshot", "ways", "shots", "queries"}`` or ``{"protocol": "vvvs"}``."""
    if text == VVVS:
        return {"protocol": VVVS}
    match = _FIXED.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise EpisodeError("unknown episode protocol %r; use %s" % (text, _FORMS))
    ways, shots = int(match.group(1)), int(match.group(2))
    queries = DEFAULT_QUERIES if match.group(3) is None else int(match.group(3))
    if ways < 2 or shots < 1 or queries < 1:
        raise EpisodeError("episode protocol %r is out of range; use %s" % (text, _FORMS))
    return {"protocol": "nway-kshot", "ways": ways, "shots": shots, "queries": queries}


@dataclass(frozen=True)
class Episode:
    """One drawn episode: dataset indices and episode labels (0..ways-1) of support and query."""

    protocol: str
    seed: int
    classes: tuple
    support: tuple
    support_labels: tuple
    query: tuple
    query_labels: tuple

    def to_dict(self):
        ways = len(self.classes)
        return {"protocol": self.protocol, "seed": self.seed, "classes": list(self.classes),
                "support": list(self.support), "support_labels": list(self.support_labels),
                "query": list(self.query), "query_labels": list(self.query_labels),
                "ways": ways,
                "shots_per_class": [self.support_labels.count(i) for i in range(ways)],
                "derivation": _DERIVATION[parse_protocol(self.protocol)["protocol"]]}


def sample_episode(labels, protocol, seed):
    """Draw the episode that ``protocol`` and ``seed`` define from ``labels`` (label of image i)."""
    spec = parse_protocol(protocol)
    try:
        seed = operator.index(seed)
    except TypeError:
        raise EpisodeError("episode seed must be an integer, got %r" % (seed,)) from None
    by_class = _indices_by_class(labels)
    rng = random.Random(seed)
    if spec["protocol"] == VVVS:
        classes, shots, queries = _vvvs_composition(by_class, rng)
    else:
        classes = _fixed_classes(by_class, protocol, spec, rng)
        shots, queries = [spec["shots"]] * len(classes), spec["queries"]
    support, support_labels, query, query_labels = [], [], [], []
    for label, (cls, k) in enumerate(zip(classes, shots)):
        picked = rng.sample(by_class[cls], k + queries)
        support += sorted(picked[:k])
        support_labels += [label] * k
        query += sorted(picked[k:])
        query_labels += [label] * queries
    return Episode(protocol=protocol, seed=seed, classes=tuple(classes), support=tuple(support),
                   support_labels=tuple(support_labels), query=tuple(query),
                   query_labels=tuple(query_labels))


def _indices_by_class(labels):
    by_class = {}
    for index, label in enumerate(labels):
        try:
            label = operator.index(label)
        except TypeError:
            raise EpisodeError("episode labels must be integers; label %d is %r"
                               % (index, label)) from None
        by_class.setdefault(label, []).append(index)
    if not by_class:
        raise EpisodeError("no labels given: the data has no images to draw an episode from")
    return by_class


def _count_range(by_class, classes):
    counts = [len(by_class[c]) for c in classes]
    return "images per class: smallest %d, largest %d" % (min(counts), max(counts))


def _fixed_classes(by_class, protocol, spec, rng):
    ways, need = spec["ways"], spec["shots"] + spec["queries"]
    everything = sorted(by_class)
    if len(everything) < ways:
        raise EpisodeError("protocol %r asks %d ways but the data has %d classes: %s"
                           % (protocol, ways, len(everything), everything))
    eligible = [c for c in everything if len(by_class[c]) >= need]
    if len(eligible) < ways:
        raise EpisodeError(
            "protocol %r needs %d classes with at least %d images (%d shots + %d queries), but only "
            "%d of the %d classes have that many (%s); ask for fewer ways, shots or queries"
            % (protocol, ways, need, spec["shots"], spec["queries"], len(eligible), len(everything),
               _count_range(by_class, everything)))
    return rng.sample(eligible, ways)


def _vvvs_composition(by_class, rng):
    """Meta-Dataset's (classes, support shots per class, queries per class); draws 1-5 above."""
    everything = sorted(by_class)
    eligible = [c for c in everything if len(by_class[c]) >= 2]
    if len(eligible) < 2:
        raise EpisodeError(
            "protocol 'vvvs' needs at least 2 classes with 2 or more images, but %d of the %d "
            "classes have that many (%s)" % (len(eligible), len(everything),
                                             _count_range(by_class, everything)))
    low = min(MIN_WAYS, len(eligible))
    ways = rng.randint(low, min(MAX_WAYS, len(eligible)))
    classes = rng.sample(eligible, ways)
    counts = [len(by_class[c]) for c in classes]
    queries = min(MAX_QUERIES, min(n // 2 for n in counts))
    remaining = [n - queries for n in counts]
    beta = rng.random()
    size = min(MAX_SUPPORT, sum(math.floor(beta * min(MAX_SUPPORT_CONTRIBUTION, r) + 1)
                                for r in remaining))
    weights = [math.exp(rng.uniform(*LOG_WEIGHT_RANGE)) * n for n in counts]
    total = sum(weights)
    shots = [min(math.floor(w / total * (size - ways)) + 1, r) for w, r in zip(weights, remaining)]
    return classes, shots, queries
