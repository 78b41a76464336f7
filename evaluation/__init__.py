"""Online model evaluation from matured natural labels (pure: no Kafka, no clock).

Inputs are freshet's own ``labels``, ``training-examples`` and (through the caller,
as the global minimum over partitions) ``label-watermarks`` records. Outputs are
:class:`~evaluation.records.EvalOutput` values ``(topic, key, record)``; every record
carries ``label_watermark_ms`` (the ``T`` it was made at) and ``schema_version``.

``model-metrics`` (key ``model_id``; one record per window ``"all"``, ``"1h"``,
``"24h"``)::

    {model_id, window, kind: "evaluation", impressions, clicks, ctr, ctr_low, ctr_high,
     mean_score, calibration (mean_score / ctr, None if ctr is 0), log_loss,
     auc (None with one class), shadow, newest_prediction_ts,
     window_start_ms, window_end_ms (None for "all"), label_watermark_ms, schema_version}

``model-comparisons`` (key ``"a|b"``, ``a < b``; cumulative; ``ctr_diff = ctr_b - ctr_a``)::

    {model_a, model_b, window: "all", impressions_a, clicks_a, ctr_a, impressions_b,
     clicks_b, ctr_b, ctr_diff, z, p_value, significant, msprt_log_lambda,
     msprt_p_value (always valid), msprt_significant, msprt_tau2, msprt_looks, alpha,
     shadow_a, shadow_b, label_watermark_ms, schema_version}

``model-routing`` (key ``"routing"``; served models only)::

    {weights: {model_id: w}, probabilities: {model_id: p}, models: {model_id:
     {clicks, impressions}}, label_watermark_ms, method: "thompson_monte_carlo", draws,
     seed, floor, schema_version}

``drift`` (key ``"psi:<subject>"`` or ``"adwin:<model_id>"``)::

    {kind: "psi" | "adwin", subject, model_id (None for a feature), value, threshold,
     drifted, reference_size, current_size, label_watermark_ms, schema_version}
    + psi: {bins};  adwin: {detections, last_detection_ts}

``retrain-triggers`` (key ``model_id``; the model's latest trigger)::

    {model_id, shadow, sequence, prediction_ts, since_ts, labels_since,
     reasons: [{reason: "time", elapsed_ms, threshold_ms}
             | {reason: "volume", labels, threshold}
             | {reason: "performance", metric, reference, recent, drop, se, ci_low,
                ci_high, margin, z, reference_labels, recent_labels}
             | {reason: "drift", subjects: [{subject, value, threshold, ...}]}],
     history: [{sequence, prediction_ts, reasons}] (the last 20),
     label_watermark_ms, schema_version}

One module per concept: :mod:`~evaluation.stats` (closed-form statistics),
:mod:`~evaluation.scores` (exact score counts), :mod:`~evaluation.metrics`,
:mod:`~evaluation.comparison`, :mod:`~evaluation.routing`, :mod:`~evaluation.drift`,
:mod:`~evaluation.triggers`, and :mod:`~evaluation.evaluator`, which ties them together.

>>> from evaluation import Evaluator
>>> Evaluator().advance(0)
[]
"""

from evaluation.config import (
    ComparisonConfig,
    DriftConfig,
    EvalConfig,
    MetricsConfig,
    RoutingConfig,
    TriggerConfig,
)
from evaluation.evaluator import Evaluator
from evaluation.records import EvalOutput

__all__ = [
    "ComparisonConfig",
    "DriftConfig",
    "EvalConfig",
    "EvalOutput",
    "Evaluator",
    "MetricsConfig",
    "RoutingConfig",
    "TriggerConfig",
]
