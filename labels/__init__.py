"""Natural labels: a pure state machine joining predictions and clicks into labels.

>>> from events.contracts import Click, Prediction
>>> machine = LabelMachine(LabelConfig(window_ms=60_000, skew_ms=0))
>>> state = machine.new_state()
>>> machine.on_prediction(state, Prediction("p", "r", "u", "i", "m", 0.5, 10**12), 10**12)
[]
>>> [o.record["kind"] for o in machine.on_watermark(state, 10**12 + 60_000)]
['negative', 'negative']
"""

from labels.config import MODES, LabelConfig
from labels.delays import DelaySketch, DelayStats
from labels.machine import LabelMachine
from labels.maturity import OpenPredictions, combine_label_watermarks, label_watermark_ms
from labels.outputs import OUTPUT_KINDS, Output

__all__ = [
    "MODES",
    "OUTPUT_KINDS",
    "DelaySketch",
    "DelayStats",
    "LabelConfig",
    "LabelMachine",
    "OpenPredictions",
    "Output",
    "combine_label_watermarks",
    "label_watermark_ms",
]
