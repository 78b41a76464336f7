"""Progressive-validation metrics: each example scored before the model learns it.

Log-loss is cumulative and exact (running sum of per-example terms). AUC is exact
over the last ``window`` examples (counts per distinct score, added and subtracted in
integers): a cumulative exact AUC would keep one entry per example forever, and
travel in every checkpoint.
"""

from __future__ import annotations

from collections import deque

from evaluation.scores import ScoreCounts


class ProgressiveMetrics:
    """Running progressive log-loss (cumulative) and exact windowed AUC.

    >>> pm = ProgressiveMetrics(window=3)
    >>> for s, y, loss in [(0.9, 1, 0.1), (0.2, 0, 0.2), (0.1, 1, 2.3), (0.8, 1, 0.2)]:
    ...     pm.add(s, y, loss)
    >>> pm.examples, round(pm.log_loss, 3), pm.auc()   # AUC over the last 3
    (4, 0.7, 0.5)
    """

    __slots__ = ("examples", "recent", "scores", "sum_loss", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.examples = 0
        self.sum_loss = 0.0
        self.scores = ScoreCounts()
        self.recent: deque[tuple[float, int]] = deque()

    def add(self, score: float, label: int, loss: float) -> None:
        """Count one progressively scored example.

        >>> pm = ProgressiveMetrics(2); pm.add(0.5, 1, 0.69); pm.examples
        1
        """
        self.examples += 1
        self.sum_loss += loss
        self.scores.add(score, label)
        self.recent.append((score, label))
        if len(self.recent) > self.window:
            self.scores.remove(*self.recent.popleft())

    @property
    def log_loss(self) -> float | None:
        """Mean progressive log-loss over every example; None before the first.

        >>> ProgressiveMetrics(5).log_loss is None
        True
        """
        return self.sum_loss / self.examples if self.examples else None

    def auc(self) -> float | None:
        """Exact AUC (ties half) of the last ``window`` examples; None with one class.

        >>> ProgressiveMetrics(5).auc() is None
        True
        """
        return self.scores.auc()
