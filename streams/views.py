"""The workers' HTTP endpoints: the online feature read path, metrics and stats.

``GET /features/{entity}/{id}`` answers the key's latest feature record (without
``source``) from the worker that owns the key's partition: 404 for an unknown id,
400 for a malformed one, 421 when another worker owns it. ``GET /metrics`` serves
Prometheus text; ``GET /stats`` the same figures as JSON.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.web import Request, Response, View

from events.contracts import MAX_ID_LEN
from features.batch import NONE
from streams.worker import Worker


def valid_id(raw: str) -> bool:
    """Whether a path id can be an entity id (non-empty, <= 256 chars, printable).

    >>> valid_id("user-1"), valid_id(""), valid_id("x" * 300)
    (True, False, False)
    """
    return 0 < len(raw) <= MAX_ID_LEN and raw.isprintable()


def stats(worker: Worker) -> dict[str, Any]:
    """The worker's counters as one JSON-ready document."""
    c = worker.counters
    with worker.lock:
        watermarks = {str(p): part.watermark_ms for p, part in sorted(worker.users.items())
                      if part.watermark_ms != NONE}
        delays: dict[str, Any] = {}
        from labels.delays import DelayStats

        merged = DelayStats()
        for part in worker.users.values():
            if part.labels is not None:
                merged.merge(part.labels.delays)
        delays = merged.snapshot()
    return {
        "events": dict(c.events), "dead_letters": c.dead_letters, "late_events": c.late_events,
        "duplicates": c.duplicates, "features_published": dict(c.features_published),
        "labels": dict(c.labels), "click_delay": delays, "batches": worker.batch_sizes.as_dict(),
        "transactions": getattr(getattr(worker, "txn", None), "commits", 0),
        "aborted_transactions": worker.aborts, "restored_partitions": worker.restores,
        "owned": worker.owned(), "watermarks": watermarks, "running": worker.running,
        "awaiting_commit": getattr(getattr(worker, "txn", None), "awaiting_commit", False),
    }


def render_metrics(doc: dict[str, Any]) -> str:
    """A :func:`stats` document in the Prometheus text exposition format."""
    lines = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, Any]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value}" for labels, value in samples
                     if value is not None)

    metric("freshet_events_total", "counter", "Input records consumed, by source topic.",
           [(f'{{source="{s}"}}', n) for s, n in doc["events"].items()])
    metric("freshet_dead_letters_total", "counter", "Input records sent to dead-letters.",
           [("", doc["dead_letters"])])
    metric("freshet_late_events_total", "counter",
           "Events behind the watermark (also dead-lettered).", [("", doc["late_events"])])
    metric("freshet_duplicates_total", "counter", "Redelivered records skipped by offset.",
           [("", doc["duplicates"])])
    metric("freshet_features_published_total", "counter", "Feature records, by entity.",
           [(f'{{entity="{e}"}}', n) for e, n in doc["features_published"].items()])
    metric("freshet_label_outputs_total", "counter", "Label engine outputs, by kind.",
           [(f'{{kind="{k}"}}', n) for k, n in sorted(doc["labels"].items())])
    metric("freshet_transactions_total", "counter", "Committed transactions (batches).",
           [("", doc["transactions"])])
    metric("freshet_aborted_transactions_total", "counter", "Aborted transactions.",
           [("", doc["aborted_transactions"])])
    metric("freshet_batch_events", "gauge", "Input records of the last batch.",
           [("", doc["batches"]["last"])])
    metric("freshet_watermark_ms", "gauge", "Event-time watermark per owned partition.",
           [(f'{{partition="{p}"}}', wm) for p, wm in doc["watermarks"].items()])
    metric("freshet_click_delay_ms", "gauge", "Click delay quantiles per model.",
           [(f'{{model="{m}",quantile="{q}"}}', s.get(q)) for m, s in doc["click_delay"].items()
            for q in ("p50", "p90", "p99")])
    return "\n".join(lines) + "\n"


def register_views(app: Any, worker: Worker) -> None:
    """Register the read path, ``/metrics`` and ``/stats`` on ``app``."""

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.text(render_metrics(stats(worker)),
                             content_type="text/plain; version=0.0.4")

    @app.page("/stats")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            return self.json(stats(worker))

    for entity in ("user", "item"):
        _register_read_path(app, entity, worker)


def _register_read_path(app: Any, entity: str, worker: Worker) -> None:
    @app.page(f"/features/{entity}/{{id}}")
    class Read(View):
        async def get(self, request: Request, id: str) -> Response:
            if not valid_id(id):
                return self.json({"error": f"invalid {entity} id"}, status=400)
            loop = asyncio.get_running_loop()
            status, body = await loop.run_in_executor(None, worker.read, entity, id)
            return self.bytes(body, content_type="application/json", status=status)
