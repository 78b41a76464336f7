"""The workers' HTTP endpoints: the online feature read path, metrics and stats.

``GET /features/{entity}/{id}`` answers the key's latest feature record (without
``source``): from this worker if it owns the key's partition, else forwarded to the
owner (:mod:`streams.routing`; ``X-Freshet-Served-By`` names who answered); 404 for
an unknown id, 400 for a malformed one, 503 while the partition has no owner
(a rebalance) or the owner does not answer. ``GET /routing`` answers the
latest ``model-routing`` record (the bandit's traffic weights per model; 503 before the
first). ``GET /metrics`` serves
Prometheus text; ``GET /stats`` the same figures as JSON. ``GET /health`` (liveness:
200 while the engine loop runs) and ``GET /ready`` (readiness: 200 once partitions
are assigned and restored and the input lag is known) are for supervisors.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from faust.web import Request, Response, View

from events.contracts import MAX_ID_LEN
from features.batch import NONE
from freshet.memory_trim import process_trimmer, rss_bytes
from streams import kafka
from streams.evaluation import EvaluationStage
from streams.routing import FORWARDED, SERVED_BY, Entity, Owners
from streams.worker import Worker

#: How long a forwarded read may take.
FORWARD_TIMEOUT: Final = aiohttp.ClientTimeout(total=2.0)


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
        keys = state_keys(worker)
    lag = worker.lag
    states = worker.states
    return {
        "events": dict(c.events), "dead_letters": c.dead_letters, "late_events": c.late_events,
        "duplicates": c.duplicates, "features_published": dict(c.features_published),
        "labels": dict(c.labels), "click_delay": delays, "batches": worker.batch_sizes.as_dict(),
        "transactions": getattr(getattr(worker, "txn", None), "commits", 0),
        "aborted_transactions": worker.aborts, "restored_partitions": worker.restores,
        "owned": worker.owned(), "watermarks": watermarks, "running": worker.running,
        "awaiting_commit": getattr(getattr(worker, "txn", None), "awaiting_commit", False),
        "lag": None if lag is None else {f"{t}[{p}]": n for (t, p), n in sorted(lag.items())},
        "lag_total": None if lag is None else sum(lag.values()),
        "local_store_writes": states.local_writes if states else 0,
        "changelog_records_restored": states.records_read if states else 0,
        "restored_from_local_store": states.local_restores if states else 0,
        "memory": memory_stats(),
        "cpu_seconds": cpu_seconds(),
        "state_keys": keys,
    }


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used, every thread's."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 3)


def state_keys(worker: Worker) -> dict[str, int]:
    """Keys held in memory over the owned partitions: users, items, pending predictions.

    Call with ``worker.lock`` held. Each count is a ``len`` (no scan): cheap enough for
    every scrape, and what a soak or an operator needs to tell a growing key space from
    a leak.
    """
    users = worker.users.values()
    return {"users": sum(len(part.table) for part in users),
            "items": sum(len(part.table) for part in worker.items.values()),
            "pending_predictions": sum(len(part.labels.table) for part in users
                                       if part.labels is not None)}


def memory_stats() -> dict[str, Any]:
    """The process's RSS and what periodic ``malloc_trim`` calls gave back."""
    trimmer = process_trimmer()
    return trimmer.stats() if trimmer is not None else {"rss_bytes": rss_bytes(),
                                                         "malloc_trims": 0}


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
    metric("freshet_consumer_lag", "gauge", "Input records not yet read (assigned partitions).",
           [("", doc["lag_total"])])
    metric("freshet_watermark_ms", "gauge", "Event-time watermark per owned partition.",
           [(f'{{partition="{p}"}}', wm) for p, wm in doc["watermarks"].items()])
    metric("freshet_click_delay_ms", "gauge", "Click delay quantiles per model.",
           [(f'{{model="{m}",quantile="{q}"}}', s.get(q)) for m, s in doc["click_delay"].items()
            for q in ("p50", "p90", "p99")])
    memory = doc.get("memory") or {}
    metric("freshet_process_rss_bytes", "gauge", "Resident memory of the worker process.",
           [("", memory.get("rss_bytes"))])
    metric("freshet_malloc_trim_released_bytes_total", "counter",
           "Freed native memory given back by malloc_trim (by RSS).",
           [("", memory.get("malloc_trim_released_bytes"))])
    metric("freshet_process_cpu_seconds_total", "counter",
           "CPU time (user + system) of the worker process.", [("", doc.get("cpu_seconds"))])
    metric("freshet_state_keys", "gauge", "Keys held in memory, by state (owned partitions).",
           [(f'{{state="{k}"}}', n) for k, n in sorted((doc.get("state_keys") or {}).items())])
    ev = doc.get("evaluation")
    if ev is not None:
        metric("freshet_evaluation_leader", "gauge", "1 on the worker running the evaluator.",
               [("", int(ev["leader"]))])
        metric("freshet_evaluation_label_watermark_ms", "gauge",
               "Label watermark of the latest evaluation records.",
               [("", ev["label_watermark_ms"])])
        metric("freshet_evaluation_records_total", "counter", "Evaluation records published.",
               [("", ev["records_out"])])
        models = ev.get("models") or {}
        metric("freshet_model_ctr", "gauge", "Cumulative CTR of matured labels, per model.",
               [(f'{{model="{m}"}}', v.get("ctr")) for m, v in sorted(models.items())])
        metric("freshet_model_auc", "gauge", "Cumulative ROC AUC of matured labels, per model.",
               [(f'{{model="{m}"}}', v.get("auc")) for m, v in sorted(models.items())])
        weights = (ev.get("routing") or {}).get("weights", {})
        metric("freshet_routing_weight", "gauge", "Latest routing weight, per model.",
               [(f'{{model="{m}"}}', w) for m, w in sorted(weights.items())])
    return "\n".join(lines) + "\n"


def register_views(app: Any, worker: Worker, stage: EvaluationStage | None = None) -> None:
    """Register the read path, ``/routing``, ``/metrics`` and ``/stats`` on ``app``."""

    def document() -> dict[str, Any]:
        doc = stats(worker)
        doc["evaluation"] = stage.stats() if stage is not None else None
        return doc

    @app.page("/routing")
    class Routing(View):
        async def get(self, request: Request) -> Response:
            rec = stage.routing() if stage is not None else None
            if rec is None:
                why = ("the evaluation stage is off (FRESHET_EVALUATION_ENABLED)"
                       if stage is None else "no routing weights yet (no matured labels)")
                return self.json({"error": why}, status=404 if stage is None else 503,
                                 headers={"Retry-After": "5"} if stage is not None else None)
            return self.json(rec)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.text(render_metrics(document()),
                             content_type="text/plain; version=0.0.4")

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            alive = worker.error is None and (worker.running or not worker.joined)
            return self.json({"alive": alive, "error": None if worker.error is None
                              else repr(worker.error)}, status=200 if alive else 503)

    @app.page("/ready")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            ready, why = worker.readiness()
            return self.json({"ready": ready, "reason": why}, status=200 if ready else 503)

    @app.page("/stats")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            return self.json(document())

    s = worker.settings
    owners = Owners(kafka.admin_client(s), s.app_id,
                    # task p owns item partition p too (streams.worker)
                    {"user": worker.names["predictions"], "item": worker.names["predictions"]})
    me = f"{s.web_host}:{s.web_port}"
    _register_read_path(app, "user", worker, owners, me)
    _register_read_path(app, "item", worker, owners, me)


def _register_read_path(app: Any, entity: Entity, worker: Worker, owners: Owners,
                        me: str) -> None:
    @app.page(f"/features/{entity}/{{id}}")
    class Read(View):
        async def get(self, request: Request, id: str) -> Response:
            if not valid_id(id):
                return self.json({"error": f"invalid {entity} id"}, status=400)
            loop = asyncio.get_running_loop()
            status, body = await loop.run_in_executor(None, worker.read, entity, id)
            if status == 421 and not request.headers.get(FORWARDED):
                return await self._forward(loop, id)
            return self.bytes(body, content_type="application/json", status=status,
                              headers={SERVED_BY: me})

        async def _forward(self, loop: asyncio.AbstractEventLoop, id: str) -> Response:
            partition = worker.partition_of(id)
            for fresh in (False, True):  # a stale owner: describe the group again
                owner = await loop.run_in_executor(None, owners.owner, entity, partition,
                                                   fresh)
                if owner is None or owner == me:
                    continue
                try:
                    async with app.http_client.get(
                            f"http://{owner}/features/{entity}/{quote(id, safe='')}",
                            headers={FORWARDED: me}, timeout=FORWARD_TIMEOUT) as resp:
                        if resp.status == 421:
                            continue
                        return self.bytes(await resp.read(), content_type="application/json",
                                          status=resp.status,
                                          headers={SERVED_BY: resp.headers.get(SERVED_BY,
                                                                               owner)})
                except (TimeoutError, OSError, aiohttp.ClientError):
                    continue
            return self.json({"error": f"no worker owns this {entity}'s partition "
                                       f"{partition} right now (rebalancing?); retry"},
                             status=503, headers={"Retry-After": "1"})
