"""The workers' HTTP endpoints: the online feature read path, metrics and stats.

``GET /features/{entity}/{id}`` is routed (``app.table_route``) to the worker that
owns the key's partition and answers the key's latest feature record as JSON, 404
for an unknown id and 400 for a malformed one. ``GET /metrics`` serves Prometheus
text; ``GET /stats`` the same counters as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from faust.web import Request, Response, View

from events.contracts import MAX_ID_LEN
from events.timing import InputWatermark
from features.featureset import FeatureSet
from streams.labelstage import LabelStage
from streams.records import Counters
from streams.state import KeyedState


def render_metrics(counters: Counters, watermarks: Mapping[int, InputWatermark]) -> str:
    """Counters and watermarks in the Prometheus text exposition format."""
    c = counters
    lines = [
        "# HELP freshet_events_total Input records consumed, by source topic.",
        "# TYPE freshet_events_total counter",
        *(f'freshet_events_total{{source="{s}"}} {n}' for s, n in c.events.items()),
        "# HELP freshet_dead_letters_total Input records sent to dead-letters.",
        "# TYPE freshet_dead_letters_total counter",
        f"freshet_dead_letters_total {c.dead_letters}",
        "# HELP freshet_late_events_total Events behind the watermark (also dead-lettered).",
        "# TYPE freshet_late_events_total counter",
        f"freshet_late_events_total {c.late_events}",
        "# HELP freshet_duplicates_total Redelivered records recognised by their offset.",
        "# TYPE freshet_duplicates_total counter",
        f"freshet_duplicates_total {c.duplicates}",
        "# HELP freshet_seeks_total Input partitions sought back to the next unprocessed record.",
        "# TYPE freshet_seeks_total counter",
        f"freshet_seeks_total {c.seeks}",
        "# HELP freshet_features_published_total Feature records published, by entity.",
        "# TYPE freshet_features_published_total counter",
        *(f'freshet_features_published_total{{entity="{e}"}} {n}'
          for e, n in c.features_published.items()),
        "# HELP freshet_watermark_ms Event-time watermark per input partition.",
        "# TYPE freshet_watermark_ms gauge",
    ]
    for partition, wm in sorted(watermarks.items()):
        if wm.value_ms is not None:
            lines.append(f'freshet_watermark_ms{{partition="{partition}"}} {wm.value_ms}')
    return "\n".join(lines) + "\n"


def render_label_metrics(labels: LabelStage) -> str:
    """Label outputs by kind and click-delay quantiles per model (Prometheus text)."""
    lines = ["# HELP freshet_label_outputs_total Label machine outputs, by kind.",
             "# TYPE freshet_label_outputs_total counter"]
    lines += [f'freshet_label_outputs_total{{kind="{k}"}} {n}'
              for k, n in sorted(labels.label_counts.items())]
    lines += ["# HELP freshet_click_delay_ms Click delay quantiles per model.",
              "# TYPE freshet_click_delay_ms gauge"]
    for model, stats in sorted(labels.delays.snapshot().items()):
        for q in ("p50", "p90", "p99"):
            if stats.get(q) is not None:
                lines.append(f'freshet_click_delay_ms{{model="{model}",quantile="{q}"}} '
                             f"{stats[q]}")
    return "\n".join(lines) + "\n"


def valid_id(raw: str) -> bool:
    """Whether a path id can be an entity id (non-empty, <= 256 chars, printable)."""
    return 0 < len(raw) <= MAX_ID_LEN and raw.isprintable()


def register_views(app: Any, counters: Counters, watermarks: Mapping[int, InputWatermark],
                   entities: Mapping[str, tuple[FeatureSet, KeyedState]],
                   labels: LabelStage) -> None:
    """Register the read path, ``/metrics`` and ``/stats`` on ``app``."""

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            text = render_metrics(counters, watermarks) + render_label_metrics(labels)
            return self.text(text, content_type="text/plain; version=0.0.4")

    @app.page("/stats")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            return self.json({**counters.as_dict(), "labels": dict(labels.label_counts),
                              "click_delay": labels.delays.snapshot()})

    for entity, (features, state) in entities.items():
        _register_read_path(app, entity, features, state)


def _register_read_path(app: Any, entity: str, features: FeatureSet, state: KeyedState) -> None:
    @app.page(f"/features/{entity}/{{id}}")
    class Read(View):
        @app.table_route(table=state.table, match_info="id")
        async def get(self, request: Request, id: str) -> Response:
            if not valid_id(id):
                return self.json({"error": f"invalid {entity} id"}, status=400)
            raw = state.get(state.partition_of(id), id)
            if raw is None:
                return self.json({"error": f"unknown {entity} id {id!r}"}, status=404)
            stored = orjson.loads(raw)
            record = features.record(id, stored["f"])
            return self.bytes(orjson.dumps(record), content_type="application/json")
