"""Exact, mergeable score summaries: label counts per distinct score, and per time tile.

Why counts per distinct score: ROC AUC needs the ranks of all scores. Keeping
``{score: [negatives, positives]}`` is exact for any float (scores are dict keys,
compared exactly, never rounded), merges and subtracts in integers (so a sliding window
can drop a tile without any rounding drift) and is bounded by the number of distinct
scores (at most 10**6 + 1 for scores with 6 decimals, whatever the traffic).
"""

from __future__ import annotations

import math

from evaluation.stats import auc_from_counts


class ScoreCounts:
    """Label counts per distinct score; exact AUC; add/merge/subtract in integers.

    >>> sc = ScoreCounts()
    >>> for s, y in [(0.1, 0), (0.4, 0), (0.4, 1), (0.8, 1)]:
    ...     sc.add(s, y)
    >>> sc.auc(), sc.positives, sc.negatives
    (0.875, 2, 2)
    """

    __slots__ = ("counts", "negatives", "positives")

    def __init__(self) -> None:
        self.counts: dict[float, list[int]] = {}
        self.negatives = 0
        self.positives = 0

    def add(self, score: float, label: int) -> None:
        """Count one labelled score.

        >>> sc = ScoreCounts(); sc.add(0.5, 1); sc.counts
        {0.5: [0, 1]}
        """
        entry = self.counts.get(score)
        if entry is None:
            entry = self.counts[score] = [0, 0]
        entry[1 if label else 0] += 1
        if label:
            self.positives += 1
        else:
            self.negatives += 1

    def remove(self, score: float, label: int) -> None:
        """Uncount one labelled score that was counted before.

        >>> sc = ScoreCounts(); sc.add(0.5, 1); sc.remove(0.5, 1); sc.counts, sc.positives
        ({}, 0)
        """
        entry = self.counts[score]
        entry[1 if label else 0] -= 1
        if label:
            self.positives -= 1
        else:
            self.negatives -= 1
        if entry[0] == 0 and entry[1] == 0:
            del self.counts[score]

    def merge(self, other: ScoreCounts, sign: int = 1) -> None:
        """Add (``sign=1``) or subtract (``sign=-1``) another summary's counts.

        >>> a, b = ScoreCounts(), ScoreCounts()
        >>> a.add(0.2, 0); a.add(0.7, 1); b.add(0.2, 0)
        >>> a.merge(b, -1); a.counts
        {0.7: [0, 1]}
        """
        for score, (neg, pos) in other.counts.items():
            entry = self.counts.get(score)
            if entry is None:
                entry = self.counts[score] = [0, 0]
            entry[0] += sign * neg
            entry[1] += sign * pos
            if entry[0] == 0 and entry[1] == 0:
                del self.counts[score]  # keeps the summary bounded by live scores
        self.negatives += sign * other.negatives
        self.positives += sign * other.positives

    def auc(self) -> float | None:
        """Exact ROC AUC (ties half); None with a single class.

        >>> ScoreCounts().auc() is None
        True
        """
        return auc_from_counts(self.counts)


class Tile:
    """What one model's matured labels of one time tile add up to.

    >>> t = Tile(); t.add(0.5, 1, 0.69); (t.impressions, t.clicks, t.sum_score)
    (1, 1, 0.5)
    """

    __slots__ = ("clicks", "impressions", "scores", "sum_loss", "sum_score")

    def __init__(self) -> None:
        self.impressions = 0
        self.clicks = 0
        self.sum_score = 0.0
        self.sum_loss = 0.0
        self.scores = ScoreCounts()

    def add(self, score: float, label: int, loss: float) -> None:
        """Count one matured label with its log-loss term.

        >>> t = Tile(); t.add(0.2, 0, 0.22); t.scores.negatives
        1
        """
        self.impressions += 1
        self.clicks += label
        self.sum_score += score
        self.sum_loss += loss
        self.scores.add(score, label)


def fsum_attr(tiles: list[Tile], name: str) -> float:
    """Correctly rounded sum of one float attribute over tiles (order does not matter).

    >>> a, b = Tile(), Tile(); a.add(0.1, 0, 1.0); b.add(0.2, 1, 2.0)
    >>> fsum_attr([a, b], "sum_loss")
    3.0
    """
    return math.fsum(getattr(t, name) for t in tiles)
