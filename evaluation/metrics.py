"""Per-model online metrics from matured labels: cumulative and over sliding windows.

State per model: running totals (window ``"all"``), and :class:`~evaluation.scores.Tile`
summaries of ``tile_ms`` of prediction time, kept for the widest window. Each sliding
window keeps its integer totals and score counts incrementally (add a label, subtract
a tile that slides out: exact), and sums its float totals over its tiles with
``math.fsum`` when a record is made (no drift from repeated add/subtract).

Window semantics (half-open, integer ms): for a model whose newest matured prediction
is at ``t``, the window of width ``W`` covers ``prediction_ts`` in ``[e - W, e)`` where
``e = (t // tile_ms + 1) * tile_ms``; records carry ``window_start_ms`` and
``window_end_ms``. A label older than the widest window when it is applied (only
possible when the caller breaks the label-watermark contract) still counts in
``"all"``.
"""

from __future__ import annotations

from typing import Any

from evaluation.config import MetricsConfig
from evaluation.scores import ScoreCounts, Tile, fsum_attr
from evaluation.stats import wilson_interval
from events.contracts import SCHEMA_VERSION


class WindowState:
    """Totals of one sliding window over the tiles ``[start, end]`` (tile indices).

    >>> w = WindowState("1h", 60); (w.name, w.width_tiles, w.impressions)
    ('1h', 60, 0)
    """

    __slots__ = ("clicks", "end", "impressions", "name", "scores", "start", "width_tiles")

    def __init__(self, name: str, width_tiles: int) -> None:
        self.name = name
        self.width_tiles = width_tiles
        self.start = 0
        self.end = -1
        self.impressions = 0
        self.clicks = 0
        self.scores = ScoreCounts()


def metrics_record(
    *,
    model_id: str,
    window: str,
    impressions: int,
    clicks: int,
    sum_score: float,
    sum_loss: float,
    scores: ScoreCounts,
    z: float,
) -> dict[str, Any]:
    """The statistics part of a ``model-metrics`` record (impressions > 0).

    >>> sc = ScoreCounts(); sc.add(0.2, 0); sc.add(0.6, 1)
    >>> rec = metrics_record(model_id="m", window="all", impressions=2, clicks=1,
    ...                      sum_score=0.8, sum_loss=0.7, scores=sc, z=1.96)
    >>> rec["ctr"], rec["calibration"], rec["auc"]
    (0.5, 0.8, 1.0)
    """
    ctr = clicks / impressions
    low, high = wilson_interval(clicks, impressions, z)
    mean_score = sum_score / impressions
    return {
        "model_id": model_id,
        "window": window,
        "impressions": impressions,
        "clicks": clicks,
        "ctr": ctr,
        "ctr_low": low,
        "ctr_high": high,
        "mean_score": mean_score,
        "calibration": mean_score / ctr if ctr > 0 else None,
        "log_loss": sum_loss / impressions,
        "auc": scores.auc(),
    }


class ModelMetrics:
    """One model's cumulative and windowed metrics, fed matured labels in order.

    >>> mm = ModelMetrics("m", MetricsConfig(tile_ms=1_000, windows=(("2s", 2_000),)))
    >>> for ts, s, y in [(500, 0.2, 0), (1_500, 0.7, 1), (2_500, 0.4, 0)]:
    ...     mm.add(ts, s, y, 0.5, served=True)
    >>> [(r["window"], r["impressions"], r["window_start_ms"]) for r in mm.records(9)]
    [('all', 3, None), ('2s', 2, 1000)]
    """

    def __init__(self, model_id: str, config: MetricsConfig) -> None:
        self.model_id = model_id
        self.tile_ms = config.tile_ms
        self.z = config.z
        self.served = 0
        self.impressions = 0
        self.clicks = 0
        self.sum_score = 0.0
        self.sum_loss = 0.0
        self.scores = ScoreCounts()
        self.newest_ts: int | None = None
        self.tiles: dict[int, Tile] = {}
        self.windows = [WindowState(name, width // config.tile_ms)
                        for name, width in config.windows]
        self.keep_tiles = max((w.width_tiles for w in self.windows), default=0)

    @property
    def shadow(self) -> bool:
        """True for a shadow model: none of its matured labels was served.

        >>> ModelMetrics("m", MetricsConfig()).shadow
        True
        """
        return self.served == 0

    def add(self, prediction_ts: int, score: float, label: int, loss: float, *,
            served: bool) -> None:
        """Apply one matured label (``loss`` is its log-loss term).

        >>> mm = ModelMetrics("m", MetricsConfig()); mm.add(0, 0.5, 1, 0.69, served=False)
        >>> mm.shadow, mm.clicks
        (True, 1)
        """
        self.served += served
        self.impressions += 1
        self.clicks += label
        self.sum_score += score
        self.sum_loss += loss
        self.scores.add(score, label)
        k = prediction_ts // self.tile_ms
        if self.newest_ts is None or prediction_ts > self.newest_ts:
            old_tile = None if self.newest_ts is None else self.newest_ts // self.tile_ms
            self.newest_ts = prediction_ts
            if old_tile is None or k > old_tile:
                self._slide(k)
        if not self.windows:
            return
        newest_tile = self.newest_ts // self.tile_ms
        if k <= newest_tile - self.keep_tiles:
            return  # older than every window: counts in "all" only
        tile = self.tiles.get(k)
        if tile is None:
            tile = self.tiles[k] = Tile()
        tile.add(score, label, loss)
        for w in self.windows:
            if w.start <= k <= w.end:
                w.impressions += 1
                w.clicks += label
                w.scores.add(score, label)

    def _slide(self, end: int) -> None:
        for w in self.windows:
            start = end - w.width_tiles + 1
            for key, tile in self.tiles.items():
                if w.start <= key <= w.end and key < start:
                    w.impressions -= tile.impressions
                    w.clicks -= tile.clicks
                    w.scores.merge(tile.scores, -1)
            w.start, w.end = start, end
        bound = end - self.keep_tiles
        for key in [key for key in self.tiles if key <= bound]:
            del self.tiles[key]

    def records(self, label_watermark_ms: int) -> list[dict[str, Any]]:
        """``model-metrics`` records: ``"all"`` then each window (none before a label).

        >>> ModelMetrics("m", MetricsConfig()).records(5)
        []
        """
        if self.newest_ts is None:
            return []
        extra = {"shadow": self.shadow, "newest_prediction_ts": self.newest_ts,
                 "label_watermark_ms": label_watermark_ms, "kind": "evaluation",
                 "schema_version": SCHEMA_VERSION}
        out = [{**metrics_record(model_id=self.model_id, window="all",
                                 impressions=self.impressions, clicks=self.clicks,
                                 sum_score=self.sum_score, sum_loss=self.sum_loss,
                                 scores=self.scores, z=self.z),
                "window_start_ms": None, "window_end_ms": None, **extra}]
        for w in self.windows:
            tiles = [t for key, t in self.tiles.items() if w.start <= key <= w.end]
            out.append({**metrics_record(model_id=self.model_id, window=w.name,
                                         impressions=w.impressions, clicks=w.clicks,
                                         sum_score=fsum_attr(tiles, "sum_score"),
                                         sum_loss=fsum_attr(tiles, "sum_loss"),
                                         scores=w.scores, z=self.z),
                        "window_start_ms": w.start * self.tile_ms,
                        "window_end_ms": (w.end + 1) * self.tile_ms, **extra})
        return out
