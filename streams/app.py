"""The worker process: a Faust app as the shell, the freshet engine loop inside it.

Faust runs what it is good at -- the command line (``faust -A streams.app worker``,
which ``freshet worker`` also runs), the web server (read path, ``/metrics``,
``/stats``), signals and a graceful stop. The hot path is not Faust's: its per-event
stream caps at ~5-11k events/s here, its committed offsets can run ahead of
durable state and its windowed tables close on the wall clock. The engine loop
(:class:`streams.worker.Worker`) runs in its own thread with confluent-kafka
consumers and one transaction per batch; the evaluation stage
(:class:`streams.evaluation.EvaluationStage`, off with FRESHET_EVALUATION_ENABLED=false)
in another. The Faust app runs in producer-only mode:
no Faust consumer, so nothing of Faust's joins a consumer group.

There is no import-time app: ``faust -A streams.app worker`` reaches the module
attribute ``app``, which is built on first access from ``FRESHET_*`` settings.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from typing import Any

import faust

from features.catalog import Catalog
from freshet.gc_tuning import tune_gc
from freshet.memory_trim import limit_arenas, start_trimming
from freshet.settings import Settings
from streams.evaluation import EvaluationStage
from streams.views import register_views
from streams.worker import Worker

log = logging.getLogger(__name__)


def faust_config(settings: Settings) -> dict[str, Any]:
    """Faust ``App`` keyword arguments: the shell only (web server, no tables, no agents)."""
    conf: dict[str, Any] = {
        "broker": ";".join(f"kafka://{h.strip()}" for h in settings.bootstrap_servers.split(",")),
        "datadir": str(settings.data_dir / "faust" / settings.app_id),
        "web_enabled": settings.web_enabled,
        "web_port": settings.web_port,
        "web_bind": settings.web_bind,
        "web_host": settings.web_host,
        "topic_replication_factor": settings.replication_factor,
        "topic_allow_declare": True,
        "broker_session_timeout": settings.session_timeout_ms / 1000.0,
        "broker_heartbeat_interval": min(3.0, settings.session_timeout_ms / 3000.0),
        "autodiscover": False,
        "logging_config": None,
    }
    if settings.security_protocol.startswith("SASL"):
        conf["broker_credentials"] = faust.SASLCredentials(
            username=settings.sasl_username, password=settings.sasl_password,
            mechanism=settings.sasl_mechanism,
            ssl_context=_ssl_context(settings) if settings.security_protocol == "SASL_SSL"
            else None)
    elif settings.security_protocol == "SSL":
        conf["broker_credentials"] = _ssl_context(settings)
    return conf


def _ssl_context(settings: Settings) -> Any:
    import ssl

    return ssl.create_default_context(cafile=settings.ssl_cafile or None)


def create_app(settings: Settings, catalog: Catalog | None = None) -> faust.App:
    """A Faust app whose start runs a freshet worker loop, with the web views.

    The caller holds the data folder's lock (:func:`streams.startup.prepare_worker`):
    this removes Faust's folder in it.
    """
    tune_gc(settings.gc_young_threshold)  # a worker process runs one app
    start_trimming(settings.malloc_trim_interval_ms)
    datadir = settings.data_dir / "faust" / settings.app_id
    shutil.rmtree(datadir, ignore_errors=True)  # Faust keeps nothing worth resuming
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(f"{settings.app_id}-faust", **faust_config(settings))
    # no Faust consumer: nothing of Faust's joins a group, and the engine starts at once
    # instead of after a Faust rebalance (which waits out a dead predecessor's session)
    app.producer_only = True
    worker = Worker(settings, catalog)
    app.freshet_worker = worker  # type: ignore[attr-defined]
    stage = (EvaluationStage(settings, lead=settings.evaluation_leader == "worker")
             if settings.evaluation_enabled else None)
    app.freshet_evaluation = stage  # type: ignore[attr-defined]

    @app.task  # type: ignore[untyped-decorator]
    async def run_engine() -> None:
        loop = asyncio.get_running_loop()

        def crashed(exc: BaseException) -> None:
            # the engine thread died: the whole process stops (a supervisor restarts it)
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(app.crash(exc)))

        worker.start(on_crash=crashed)
        if stage is not None:
            stage.start(on_crash=crashed)

    def stop_engine(sender: Any, **kwargs: Any) -> None:
        if stage is not None:
            stage.stop()
        worker.stop()

    app.on_before_shutdown.connect(stop_engine)  # type: ignore[arg-type]

    register_views(app, worker, stage)
    return app


_app: faust.App | None = None


def __getattr__(name: str) -> Any:
    """Build ``app`` lazily, so that ``faust -A streams.app`` works without a singleton."""
    global _app
    if name == "app":
        if _app is None:
            from freshet.topics import create_topics
            from streams.startup import prepare_worker

            settings = Settings.from_env()
            limit_arenas(settings.malloc_arena_max)  # as `freshet worker` does
            lock = prepare_worker(settings)
            create_topics(settings)
            _app = create_app(settings)
            _app.freshet_lock = lock  # type: ignore[attr-defined]
        return _app
    raise AttributeError(name)
