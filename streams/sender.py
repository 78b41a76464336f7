"""Sends a batch's records with librdkafka and waits until the broker has them all.

Under ``at_least_once`` the workers publish outputs and changelog records through a
confluent-kafka (librdkafka) producer instead of aiokafka's: one call into C per
record rather than aiokafka's Python batch building, futures and callbacks. It is
idempotent (``enable.idempotence``: no duplicates or reordering from retries),
``acks=all``, and partitions keyed records with murmur2 like the Java client (and
Faust), so a key lands where Faust's own producer would put it.

``submit`` queues a call's records at once and returns a future that resolves when
every one of them is acknowledged (``send`` awaits it), which is what the agents'
ordering rests on: outputs acknowledged, then state changes, then the partition
positions. A delivery error fails the whole call.

Under ``exactly_once`` the workers keep Faust's transactional producer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaException, Producer

#: (topic, key, value, partition or None for "by key")
Record = tuple[str, bytes | None, bytes | None, int | None]


class SendError(RuntimeError):
    """A record of a batch could not be delivered."""


class Sender:
    """An idempotent librdkafka producer whose deliveries resolve asyncio futures."""

    def __init__(self, client_config: dict[str, str], linger_ms: int = 1) -> None:
        conf: dict[str, Any] = {
            **client_config,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            "batch.num.messages": 10_000,
            "message.max.bytes": 1_048_576,
        }
        self._producer = Producer(conf)
        self._running = True
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._poll, name="freshet-sender", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        # Delivery callbacks run here (poll releases the GIL while it waits).
        while self._running:
            self._producer.poll(0.05)

    async def send(self, records: Sequence[Record]) -> None:
        """Produce ``records`` in order; return once the broker acknowledged all."""
        await self.submit(records)

    def submit(self, records: Sequence[Record]) -> asyncio.Future[None]:
        """Hand ``records`` to the producer now, in order; a future of their delivery.

        Records of later calls queue behind these (librdkafka keeps each partition's
        order, idempotence keeps it across retries).
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if not records:
            done.set_result(None)
            return done
        pending = [len(records)]
        errors: list[str] = []
        lock = self._lock

        def settle() -> None:
            if not done.done():
                if errors:
                    done.set_exception(SendError(f"{len(errors)} record(s) not delivered; "
                                                 f"first: {errors[0]}"))
                else:
                    done.set_result(None)

        def delivered(err: Any, msg: Any) -> None:
            with lock:
                if err is not None:
                    errors.append(f"{msg.topic()}: {err}")
                pending[0] -= 1
                last = pending[0] == 0
            if last:
                loop.call_soon_threadsafe(settle)

        produce = self._producer.produce
        for topic, key, value, partition in records:
            while True:
                try:
                    if partition is None:
                        produce(topic, value, key, on_delivery=delivered)
                    else:
                        produce(topic, value, key, partition, on_delivery=delivered)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    self._producer.poll(0.005)
                except KafkaException as exc:
                    with lock:
                        errors.append(f"{topic}: {exc}")
                        pending[0] -= 1
                    break
        with lock:
            last = pending[0] == 0
        if last:
            settle()
        return done

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout_s``) and stop the poll thread."""
        self._producer.flush(timeout_s)
        self._running = False
        self._thread.join(timeout=1.0)
