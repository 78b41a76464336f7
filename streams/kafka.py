"""librdkafka (confluent-kafka) client settings of a worker, and topic names of its state.

Measured on this kind of machine: librdkafka's batch ``consume()`` reads ~600k
records/s where Faust's per-event stream tops out at 5-11k, so the workers read
their inputs with confluent-kafka. Its default ``fetch.queue.backoff.ms`` (1 s)
throttles a busy consumer 3-5x; the workers set 10 ms.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException

from features.catalog import Catalog
from freshet.settings import Settings
from freshet.topics import internal_topic
from labels.config import LabelConfig
from streams.routing import client_id
from streams.startup import ErrorThrottle, RepeatFilter

log = logging.getLogger("freshet.kafka")
log.addFilter(RepeatFilter())
#: client errors (e.g. a broker that does not answer), one line per kind a period
_errors = ErrorThrottle(log)

#: errors of a broker that is restarting or moving its coordinators (worth waiting out)
_RECOVERING: Final = frozenset({KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                                KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError._TIMED_OUT,
                                KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                                KafkaError.UNSTABLE_OFFSET_COMMIT})

#: librdkafka log lines above this level go to the ``freshet.kafka`` logger.
_QUIET: Final = {"log_level": 4}  # warning and worse


def base(settings: Settings) -> dict[str, Any]:
    """Connection settings shared by every client (security included)."""
    conf: dict[str, Any] = {**settings.kafka_client_config(), "logger": log,
                            "error_cb": _errors, **_QUIET}
    if settings.kafka_debug:
        conf.update({"debug": settings.kafka_debug, "log_level": 7})
    return conf


def group_consumer(settings: Settings) -> dict[str, Any]:
    """The consumer in the worker group (cooperative-sticky, read_committed)."""
    return {
        **base(settings),
        "group.id": settings.app_id,
        # carries the read-path address: any worker finds a key's owner (streams.routing)
        "client.id": client_id(settings.app_id, f"{settings.web_host}:{settings.web_port}"
                               if settings.web_enabled else None),
        # static membership: a restarted worker takes its partitions back at once
        # instead of waiting for its dead predecessor's session to time out
        "group.instance.id": settings.worker_instance(),
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(1_000, settings.session_timeout_ms // 4),
        "max.poll.interval.ms": 300_000,
        "fetch.queue.backoff.ms": 10,
        "queued.max.messages.kbytes": 65_536,
    }


def follower_consumer(settings: Settings) -> dict[str, Any]:
    """A consumer that only reads partitions assigned by hand (never joins the group)."""
    return {
        **base(settings),
        "group.id": f"{settings.app_id}-follower",
        "client.id": f"{settings.app_id}-follower",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "fetch.queue.backoff.ms": 10,
        "queued.max.messages.kbytes": 65_536,
    }


def restore_consumer(settings: Settings) -> dict[str, Any]:
    """A consumer reading changelog partitions to their end (committed records only)."""
    return {
        **base(settings),
        "group.id": f"{settings.app_id}-restore",
        "client.id": f"{settings.app_id}-restore",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "fetch.queue.backoff.ms": 10,
        # an empty (or fully read) partition answers at once, not after 500 ms
        "fetch.wait.max.ms": 10,
    }


def transactional_producer(settings: Settings) -> dict[str, Any]:
    """The producer of every output, changelog record and input offset (transactions)."""
    return {
        **base(settings),
        "transactional.id": settings.transactional_id(),
        "transaction.timeout.ms": settings.transaction_timeout_ms,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.linger_ms,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "compression.type": "lz4",
        # Java-compatible key hashing, as every producer of freshet's inputs uses
        "partitioner": "murmur2_random",
        "message.max.bytes": 1_048_576,
        # A transaction begun while the coordinator still writes the previous one's
        # markers gets CONCURRENT_TRANSACTIONS and is retried after this backoff: the
        # default 100 ms added ~90 ms to every commit over ~50 partitions (measured).
        "retry.backoff.ms": 10,
    }


def admin_client(settings: Settings) -> dict[str, Any]:
    """An AdminClient (describing the worker group for the read path)."""
    return base(settings)


def label_state_name(config: LabelConfig) -> str:
    """Name of the label state; changes with any label setting.

    >>> label_state_name(LabelConfig()).startswith("labels-")
    True
    """
    digest = hashlib.sha1(repr(config).encode(), usedforsecurity=False).hexdigest()
    return f"labels-{digest[:8]}"


def changelog_topics(settings: Settings, catalog: Catalog) -> dict[str, str]:
    """State name (``user``/``item``/``label``) -> its compacted changelog topic."""
    out = {"user": internal_topic(settings, f"{catalog.user.state_name}-changelog"),
           "item": internal_topic(settings, f"{catalog.item.state_name}-changelog")}
    if settings.labels_enabled:
        out["label"] = internal_topic(settings,
                                      f"{label_state_name(settings.label_config())}-changelog")
    return out


def topic_names(settings: Settings) -> dict[str, str]:
    """Logical topic -> broker topic, internal topics included."""
    from freshet.settings import DEFAULT_TOPICS

    names = {logical: settings.topic(logical) for logical in DEFAULT_TOPICS}
    names["items_repartition"] = internal_topic(settings, "items-repartition")
    names["item_snapshots"] = internal_topic(settings, "item-snapshots")
    return names


def committed_offsets(consumer: Any, tps: list[Any], wait_s: float = 120.0) -> list[Any]:
    """The group's committed offsets of ``tps``, retrying while the broker recovers.

    A broker restart or a coordinator move answers NOT_COORDINATOR, timeouts or
    transport errors for a while: those are retried with backoff (up to ``wait_s``);
    anything else, or still failing then, is raised. UNSTABLE_OFFSET_COMMIT (offsets
    in a transaction not ended yet, e.g. a killed worker's) is waited for however
    long it takes: the broker aborts every transaction after its timeout, and a
    restart would only meet the same answer (seen: a crash loop after a broker
    restart, while the coordinator reloaded its transactions).
    """
    deadline = time.monotonic() + wait_s
    pause = 0.1
    while True:
        try:
            result: list[Any] = consumer.committed(tps, timeout=30)
            return result
        except KafkaException as exc:
            err = exc.args[0]
            unstable = err.code() == KafkaError.UNSTABLE_OFFSET_COMMIT
            if not unstable and ((not err.retriable() and err.code() not in _RECOVERING)
                                 or time.monotonic() + pause > deadline):
                raise
            log.warning("committed offsets not available yet (%s); retrying in %.1f s",
                        err.str(), pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
