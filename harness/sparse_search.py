"""Evolutionary search for a SparseUpdate scheme under a memory budget.

The SparseUpdate paper (Lin et al., NeurIPS 2022, Sec. 3.2) chooses its schemes by contribution
analysis and an evolutionary search, and released only the results. Here, as the paper describes
it: each candidate is the bias depth ``n`` (the last n convs' biases) and a ratio per candidate
conv (none, 1/8, 1/4, 1/2, 1 of its input channels); its score is the sum of the measured
contributions ``Δacc_bias[n] + Σ Δacc_weight[conv, ratio]`` (contributions assumed additive), its
memory the ``sparseupdate_int8`` bytes (``Int8Memory``). The search keeps a population, breeds it
by uniform crossover and mutation, repairs a child over the budget by dropping its least
contribution per byte (then lowering n), and keeps the best. Fixed seed; pure (no torch).
"""
import random
from dataclasses import dataclass, field

RATIOS = (0.125, 0.25, 0.5, 1.0)


def channels(width, ratio):
    """Input channels trained at ``ratio`` (at least one), as ``suites.methods.sparse_update``."""
    return max(1, int(width * ratio))


@dataclass(frozen=True)
class Contributions:
    """Measured accuracy gains: ``bias[n]`` of the last n biases over the classifier alone
    (``bias[0] == 0``), ``weights[(conv, ratio)]`` of adding that conv's weight at that ratio."""

    bias: dict
    weights: dict

    @property
    def candidates(self):
        return sorted({conv for conv, _ in self.weights})


@dataclass(frozen=True)
class Candidate:
    n_bias: int
    ratios: tuple  # per candidate conv: 0 (none) or a ratio of RATIOS
    score: float = field(compare=False)
    bytes: int = field(compare=False)


class BudgetError(ValueError):
    """The budget cannot hold even the smallest scheme."""


class Search:
    def __init__(self, memory, contributions, budget, seed=0):
        self.memory, self.contributions, self.budget = memory, contributions, budget
        self.convs = contributions.candidates
        self.depths = sorted(contributions.bias)
        self.rng = random.Random(seed)
        self.evaluated = 0
        smallest = memory.scheme_bytes(self.depths[0], {})
        if smallest > budget:
            raise BudgetError("a budget of %d B is below the %d B the classifier alone needs (its input at 8 bits "
                              "per element%s)" % (budget, smallest, "" if self.depths[0] == 0 else
                                                  " and the smallest measured bias depth"))

    def _weights(self, ratios):
        return {conv: channels(self.memory.widths[conv], r) for conv, r in zip(self.convs, ratios) if r}

    def evaluate(self, n_bias, ratios):
        self.evaluated += 1
        score = self.contributions.bias[n_bias] + sum(
            self.contributions.weights[(conv, r)] for conv, r in zip(self.convs, ratios) if r)
        return Candidate(n_bias, tuple(ratios), score, self.memory.scheme_bytes(n_bias, self._weights(ratios)))

    def _repair(self, n_bias, ratios):
        """Drop weights with the least gain per byte, then lower the bias depth, until it fits."""
        ratios = list(ratios)
        while self.memory.scheme_bytes(n_bias, self._weights(ratios)) > self.budget:
            chosen = [i for i, r in enumerate(ratios) if r]
            if chosen:
                def gain_per_bit(i):
                    conv = self.convs[i]
                    bits = self.memory.weight_bits(conv, channels(self.memory.widths[conv], ratios[i])) + 1
                    return self.contributions.weights[(conv, ratios[i])] / bits
                ratios[min(chosen, key=gain_per_bit)] = 0
            else:
                n_bias = self.depths[max(0, self.depths.index(n_bias) - 1)]
        return self.evaluate(n_bias, ratios)

    def _random(self):
        density = self.rng.random() * 0.5
        ratios = [self.rng.choice(RATIOS) if self.rng.random() < density else 0 for _ in self.convs]
        return self._repair(self.rng.choice(self.depths), ratios)

    def _child(self, a, b, mutation):
        ratios = [self.rng.choice((x, y)) for x, y in zip(a.ratios, b.ratios)]
        n_bias = self.rng.choice((a.n_bias, b.n_bias))
        for i in range(len(ratios)):
            if self.rng.random() < mutation:
                ratios[i] = self.rng.choice((0,) + RATIOS)
        if self.rng.random() < 0.3:
            n_bias = self.depths[min(len(self.depths) - 1, max(0, self.depths.index(n_bias) + self.rng.choice((-2, -1, 1, 2))))]
        return self._repair(n_bias, ratios)

    def run(self, population=100, evaluations=5000, elite=0.2, mutation=None):
        """The best candidate after at least ``evaluations`` evaluated candidates."""
        mutation = mutation if mutation is not None else 1.5 / max(1, len(self.convs))
        pool = sorted((self._random() for _ in range(population)), key=lambda c: -c.score)
        keep = max(2, int(elite * population))
        while self.evaluated < evaluations:
            parents = pool[:keep]
            children = [self._child(self.rng.choice(parents), self.rng.choice(pool[:max(keep, population // 2)]),
                                    mutation) for _ in range(population - keep)]
            pool = sorted(parents + children, key=lambda c: -c.score)
        return pool[0]

    def score_of(self, scheme):
        """The candidate of a scheme dict (e.g. a released preset) on this table, or None when it
        uses a conv, ratio or bias depth the table did not measure."""
        ratios = dict(zip(scheme["manual_weight_idx"], scheme["weight_update_ratio"]))
        if scheme["n_bias_update"] not in self.contributions.bias or any(
                r and (conv, r) not in self.contributions.weights for conv, r in ratios.items()):
            return None
        return self.evaluate(scheme["n_bias_update"], [ratios.get(conv, 0) for conv in self.convs])

    def scheme(self, candidate):
        """The candidate as a SparseUpdate scheme dict (the authors' keys)."""
        chosen = [(conv, r) for conv, r in zip(self.convs, candidate.ratios) if r]
        return {"n_bias_update": candidate.n_bias, "manual_weight_idx": [c for c, _ in chosen],
                "weight_update_ratio": [r for _, r in chosen]}
