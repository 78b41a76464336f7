"""Prometheus-style metrics at ``GET /metrics`` on each worker's web server."""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response, View

from streams.processor import FeatureProcessor


def render(processor: FeatureProcessor) -> str:
    """The processor's counters in the Prometheus text exposition format."""
    c = processor.counters
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
        "# HELP freshet_features_published_total Feature records published, by entity.",
        "# TYPE freshet_features_published_total counter",
        *(f'freshet_features_published_total{{entity="{e}"}} {n}'
          for e, n in c.features_published.items()),
    ]
    for partition, wm in sorted(processor.watermarks.items()):
        if wm.value_ms is not None:
            lines.append(f'freshet_watermark_ms{{partition="{partition}"}} {wm.value_ms}')
    return "\n".join(lines) + "\n"


def register_metrics_view(app: Any, processor: FeatureProcessor) -> None:
    """Serve :func:`render` at ``/metrics`` and the raw counters at ``/stats``."""

    @app.page("/metrics")
    class Metrics(View):  # noqa: F841 (registered by the decorator)
        async def get(self, request: Request) -> Response:
            return self.text(render(processor), content_type="text/plain; version=0.0.4")

    @app.page("/stats")
    class Stats(View):  # noqa: F841
        async def get(self, request: Request) -> Response:
            return self.json(processor.counters.as_dict())
