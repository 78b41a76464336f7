"""Natural labels: a pure engine joining predictions and clicks into labels.

>>> import numpy as np
>>> from labels.pending import PredictionColumns
>>> engine = LabelEngine(LabelConfig(window_ms=60_000, skew_ms=0), item_snapshots=False)
>>> engine.add_predictions(PredictionColumns(["p"], ["r"], ["u"], ["i"], ["m"],
...     np.array([0.5]), np.array([10**12]), [b'"prediction_id":"p"'], [None], np.array([0])))
>>> engine.advance(10**12 + 60_000)
>>> [o.kind for o in engine.take_outputs()]
['label', 'training_example']
"""

from labels.config import MODES, LabelConfig
from labels.delays import DelaySketch, DelayStats
from labels.engine import LabelEngine, LabelOutput
from labels.maturity import combine_label_watermarks, label_watermark_ms
from labels.pending import PredictionColumns

__all__ = [
    "MODES",
    "DelaySketch",
    "DelayStats",
    "LabelConfig",
    "LabelEngine",
    "LabelOutput",
    "PredictionColumns",
    "combine_label_watermarks",
    "label_watermark_ms",
]
