"""Send generated records to Kafka with an idempotent confluent-kafka producer.

The only Kafka code of the generator side. Records keep their key (the user id) and
get their event time as the Kafka record timestamp when they have one; malformed
records are produced as they are, so that the workers' dead-letter path sees them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from freshet.generator import GeneratedRecord, GeneratorConfig, WeightsSource, stream

__all__ = ["PROGRESS_EVERY", "ProduceError", "produce", "produce_stream", "producer_config"]

log = logging.getLogger(__name__)

#: ``on_progress`` is called every this many records (and once at the end).
PROGRESS_EVERY = 1_000


class ProduceError(RuntimeError):
    """Some records could not be delivered to Kafka.

    >>> str(ProduceError("2 of 10 records were not delivered"))
    '2 of 10 records were not delivered'
    """


def producer_config(
    bootstrap: str, extra_config: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The confluent-kafka configuration :func:`produce` uses; ``extra_config`` wins.

    librdkafka's own log lines go to the ``freshet.producer`` logger.

    >>> cfg = producer_config("localhost:9094", {"linger.ms": "20"})
    >>> (cfg["bootstrap.servers"], cfg["enable.idempotence"], cfg["acks"], cfg["linger.ms"])
    ('localhost:9094', True, 'all', '20')
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        # Java-compatible key hashing, as Faust/aiokafka and the README promise
        "partitioner": "murmur2_random",
        "client.id": "freshet-generator",
        "logger": log,
    }
    config.update(extra_config or {})
    return config


class _Deliveries:
    """Counts delivery reports, and failures by topic and error."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        self.errors[f"{msg.topic()}: {err.str()} ({err.name()})"] += 1

    def summary(self) -> str:
        return "; ".join(f"{error} x{n}" for error, n in self.errors.most_common(5))


def produce(
    records: Iterable[GeneratedRecord],
    bootstrap: str,
    topics: Mapping[str, str] | None = None,
    rate: float | None = None,
    extra_config: Mapping[str, str] | None = None,
    on_progress: Callable[[int], None] | None = None,
    *,
    flush_timeout_s: float = 60.0,
    connect_timeout_s: float = 10.0,
) -> int:
    """Produce ``records`` to Kafka and wait until all are acknowledged.

    ``topics`` maps a logical topic (``"predictions"``, ``"clicks"``) to the real
    topic name (default: the same name). ``rate`` caps the pace in records per
    second, from a monotonic clock (``None`` = as fast as possible).
    ``on_progress`` gets the number of records handed to the producer so far, every
    :data:`PROGRESS_EVERY` records and once more after the final flush.

    Before the first record it checks, within ``connect_timeout_s``, that the broker
    answers and that every target topic exists (brokers run with topic auto-creation
    off: create them with ``freshet topics create``).

    Returns the number of records delivered. Raises :class:`ProduceError` when the
    broker or a topic is missing, as soon as a delivery fails (the idempotent
    producer then cannot keep the order), or when records are still unacknowledged
    ``flush_timeout_s`` after the end.
    """
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be > 0 records per second (or None), got {rate!r}")
    mapping = dict(topics or {})
    producer = Producer(producer_config(bootstrap, extra_config))
    deliveries = _Deliveries()
    produced = 0
    started = time.monotonic()
    known_topics: set[str] | None = None
    checked_topics: set[str] = set()

    def require_topic(topic: str) -> None:
        nonlocal known_topics
        # a topic created a moment ago may take a little while to show in metadata
        for attempt in range(20):
            if known_topics is not None and topic in known_topics:
                break
            if attempt:
                time.sleep(0.5)
            try:
                metadata = producer.list_topics(timeout=connect_timeout_s)
            except KafkaException as exc:
                raise ProduceError(
                    f"cannot reach Kafka at {bootstrap} within {connect_timeout_s} s: {exc}"
                ) from exc
            known_topics = set(metadata.topics)
        if known_topics is None or topic not in known_topics:
            raise ProduceError(
                f"topic {topic!r} does not exist on {bootstrap} (auto-creation is off);"
                " create it first, e.g. with `freshet topics create`"
            )
        checked_topics.add(topic)

    def check() -> None:
        if deliveries.failed:
            producer.flush(min(flush_timeout_s, 5.0))
            raise ProduceError(
                f"{deliveries.failed} record(s) could not be delivered to {bootstrap}"
                f" ({deliveries.delivered} were): {deliveries.summary()}"
            )

    for record in records:
        topic = mapping.get(record.topic, record.topic)
        if topic not in checked_topics:
            require_topic(topic)
            if produced == 0:
                started = time.monotonic()  # pace from the first record, not the connect
        if rate is not None:
            due = started + produced / rate
            while (wait := due - time.monotonic()) > 0:
                producer.poll(min(wait, 0.1))
        kwargs: dict[str, Any] = {"key": record.key, "on_delivery": deliveries}
        if record.ts is not None:
            kwargs["timestamp"] = record.ts
        while True:
            try:
                producer.produce(topic, record.value, **kwargs)
                break
            except BufferError:  # local queue full: let deliveries drain it
                producer.poll(0.1)
                check()
            except KafkaException as exc:
                raise ProduceError(f"cannot produce to {topic!r}: {exc}") from exc
        produced += 1
        producer.poll(0)
        if produced % PROGRESS_EVERY == 0:
            check()
            if on_progress is not None:
                on_progress(produced)
    remaining = producer.flush(flush_timeout_s)
    check()
    if remaining:
        raise ProduceError(
            f"{remaining} of {produced} record(s) were not acknowledged by {bootstrap}"
            f" within {flush_timeout_s} s"
        )
    if on_progress is not None:
        on_progress(produced)
    log.info("produced %d records to %s in %.1f s", produced, bootstrap,
             time.monotonic() - started)
    return deliveries.delivered


def produce_stream(
    config: GeneratorConfig,
    bootstrap: str,
    topics: Mapping[str, str] | None = None,
    rate: float | None = None,
    *,
    weights_source: WeightsSource | None = None,
    chunk_predictions: int = 1_000,
    forever: bool = False,
    stop: Callable[[], bool] | None = None,
    extra_config: Mapping[str, str] | None = None,
    on_progress: Callable[[int], None] | None = None,
    flush_timeout_s: float = 60.0,
    connect_timeout_s: float = 10.0,
) -> int:
    """Run the generator at ``rate`` records/s, taking routing weights from ``weights_source``.

    The records are :func:`freshet.generator.stream`'s: chunks of
    ``chunk_predictions`` served predictions, each generated when the paced producer
    needs it, after a call of ``weights_source()`` (new ``{model_id: weight}``, or
    ``None`` to keep the current weights; e.g. the latest ``model-routing`` record),
    so routing follows the weights within about a chunk. It ends after
    ``config.predictions`` served predictions, never with ``forever=True``, or as soon
    as ``stop()`` is true (checked before every record; the records handed over so far
    are then flushed). The other arguments are :func:`produce`'s; returns the number
    of records delivered.

    >>> produce_stream(GeneratorConfig(), "127.0.0.1:1", stop=lambda: True)
    0
    """
    records = stream(config, weights_source, chunk_predictions=chunk_predictions,
                     forever=forever)

    def until_stopped() -> Iterator[GeneratedRecord]:
        while stop is None or not stop():
            record = next(records, None)
            if record is None:
                return
            yield record

    return produce(until_stopped(), bootstrap, topics=topics, rate=rate,
                   extra_config=extra_config, on_progress=on_progress,
                   flush_timeout_s=flush_timeout_s, connect_timeout_s=connect_timeout_s)
