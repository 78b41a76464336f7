"""The Faust application: ``create_app(settings)`` wires topics, tables and agents.

There is no import-time app: ``faust -A streams.app worker`` reaches the module
attribute ``app``, which is built on first access from ``FRESHET_*`` settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import faust
import orjson
from aiokafka.partitioner import murmur2
from faust.types import TP, EventT

from features.catalog import Catalog, default_catalog
from freshet.settings import Settings
from freshet.topics import internal_topic
from labels import LabelConfig
from streams.guard import InputGuard, install_task_dump
from streams.labelstage import LabelStage, label_report_records, label_state_name
from streams.processor import META_KEY, ItemProcessor, UserProcessor, advance_idle
from streams.records import (
    BatchResult,
    Counters,
    InputRecord,
    Output,
)
from streams.sender import Record, Sender
from streams.state import KeyedState
from streams.views import register_views

log = logging.getLogger(__name__)

META_BYTES = META_KEY.encode()

#: Largest batch the agent takes at once, and how long it waits to fill one.
BATCH_MAX = 2_000
BATCH_WITHIN_S = 0.02


def faust_config(settings: Settings) -> dict[str, Any]:
    """Faust ``App`` keyword arguments for the given settings."""
    conf: dict[str, Any] = {
        "broker": ";".join(f"kafka://{h.strip()}" for h in settings.bootstrap_servers.split(",")),
        "store": f"freshet-{settings.store}://",
        "datadir": str(settings.data_dir / "faust" / settings.app_id),
        "web_enabled": settings.web_enabled,
        "web_port": settings.web_port,
        "web_bind": settings.web_bind,
        "web_host": settings.web_host,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "topic_allow_declare": True,
        "processing_guarantee": settings.processing_guarantee,
        "broker_commit_interval": settings.commit_interval_ms / 1000.0,
        # A dead worker's partitions move after this long (Faust's default is 60 s).
        "broker_session_timeout": settings.session_timeout_ms / 1000.0,
        "broker_heartbeat_interval": min(3.0, settings.session_timeout_ms / 3000.0),
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        # room for many batches per stream before Faust pauses a partition (see
        # resume_partitions below for why that pause is best avoided)
        "stream_buffer_maxsize": 25 * BATCH_MAX,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "autodiscover": False,
        "table_standby_replicas": 0,
        "logging_config": None,
    }
    if settings.security_protocol.startswith("SASL"):
        conf["broker_credentials"] = faust.SASLCredentials(
            username=settings.sasl_username, password=settings.sasl_password,
            mechanism=settings.sasl_mechanism,
            ssl_context=_ssl_context(settings) if settings.security_protocol == "SASL_SSL"
            else None,
        )
    elif settings.security_protocol == "SSL":
        conf["broker_credentials"] = _ssl_context(settings)
    return conf


def _ssl_context(settings: Settings) -> Any:
    import ssl

    return ssl.create_default_context(cafile=settings.ssl_cafile or None)


def create_app(settings: Settings, catalog: Catalog | None = None) -> faust.App:
    """Build a Faust app with freshet's topics, state tables, agents and web views."""
    datadir = settings.data_dir / "faust" / settings.app_id
    # The local stores are a cache of the changelog: a worker starts from an empty
    # folder and restores its partitions from the changelog topics, so that no local
    # write the changelog never got can survive a crash.
    shutil.rmtree(datadir, ignore_errors=True)
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.app_id, **faust_config(settings))
    catalog = catalog or default_catalog(settings.ctr_prior_clicks, settings.ctr_prior_non_clicks)
    partitions = settings.partitions
    label_config = LabelConfig(window_ms=settings.label_window_ms, skew_ms=settings.label_skew_ms,
                               mode=settings.label_mode, observe_ms=settings.label_observe_ms,
                               eager_clicks=settings.label_eager_clicks)

    def internal(suffix: str) -> faust.TopicT:
        return app.topic(internal_topic(settings, suffix), key_type=bytes, value_type=bytes,
                         partitions=partitions, internal=True)

    inputs = app.topic(settings.topic("clicks"), settings.topic("predictions"),
                       key_type=bytes, value_type=bytes, partitions=partitions)
    repartition, snapshots = internal("items-repartition"), internal("item-snapshots")
    outputs = {name: app.topic(settings.topic(name), key_type=bytes, value_type=bytes)
               for name in OUTPUT_TOPICS}
    outputs["items_repartition"] = repartition
    outputs["item_snapshots"] = snapshots
    names = {logical: topic.get_topic_name() for logical, topic in outputs.items()}
    source_of = {settings.topic("clicks"): "clicks",
                 settings.topic("predictions"): "predictions",
                 names["items_repartition"]: "items_repartition",
                 names["item_snapshots"]: "item_snapshots"}

    def table(name: str) -> KeyedState:
        # bytes keys and values (Faust's "raw" serializer): the changelog holds exactly
        # what KeyedState writes, and a key routes to the partition of its input.
        return KeyedState(app.Table(name, default=None, partitions=partitions,
                                    key_type=bytes, value_type=bytes))

    user_state, item_state = table(catalog.user.state_name), table(catalog.item.state_name)
    label_state = table(label_state_name(label_config))
    counters = Counters()
    labels = LabelStage(label_config, label_state.get, label_state.keys_for_partition, counters)
    users = UserProcessor(catalog.user, user_state.get, settings.allowed_lateness_ms,
                          partitioner(partitions), counters, labels)
    items = ItemProcessor(catalog.item, item_state.get, counters, partitions,
                          user_partition=partitioner(partitions))
    user_side = asyncio.Lock()  # the user agents and the idle timer share user/label state
    direct = settings.processing_guarantee == "at_least_once"

    sender: list[Sender] = []

    def librdkafka() -> Sender:
        if not sender:
            sender.append(Sender(settings.kafka_client_config(), settings.linger_ms))
        return sender[0]

    async def send(records: list[Record]) -> None:
        """Send (topic, key, value, partition) records; return once all are acknowledged."""
        # At least once, librdkafka sends them (streams/sender.py); transactions need
        # Faust's producer (and its Topic.send, a channel and callback per message).
        if direct:
            await librdkafka().send(records)
        elif records:
            pending = [await app.topic(t, key_type=bytes, value_type=bytes).send(
                key=k, value=v, partition=p) for t, k, v, p in records]
            await asyncio.gather(*pending)

    @app.on_before_shutdown.connect
    def close_sender(sender_app: Any, **kwargs: Any) -> None:
        for s in sender:
            s.close()

    #: per lane (user side, item side): the previous batch's durability, still under way
    lanes: dict[str, asyncio.Future[None]] = {}

    def state_changes(result: BatchResult, state: KeyedState
                      ) -> tuple[list[Record], list[Record]]:
        """The batch's changelog records: state changes, then partition positions."""
        # The local store is written at once: it is a cache of the changelog, wiped and
        # rebuilt from the changelog at every start, and later batches read it.
        changes: list[tuple[KeyedState, int, str, bytes | None]] = []
        for (partition, key), value in result.writes.items():
            changes.append((state, partition, key, orjson.dumps(value)))
        for (partition, key), label in result.label_writes.items():
            changes.append((label_state, partition, key,
                            None if label is None else orjson.dumps(label)))
        for target, partition, key, raw in changes:
            target.put(partition, key, raw)
        records = [(target.changelog_topic, key.encode(), raw, partition)
                   for target, partition, key, raw in changes]
        return ([r for r in records if r[1] != META_BYTES],
                [r for r in records if r[1] == META_BYTES])

    async def commit(result: BatchResult, state: KeyedState, lane: str) -> None:
        # Per batch, in this order: outputs acknowledged, then its state changes, then
        # the partition positions (META_KEY), after the previous batch's positions. A
        # worker that dies in between processes the batch again from the positions:
        # outputs repeat (same keys and content) and state never claims an input
        # whose outputs were lost.
        outputs = [(names[o.topic], o.key, o.value, o.partition) for o in result.outputs]
        if not direct:
            await send(outputs)
            changes, positions = state_changes(result, state)
            await send(changes)
            await send(positions)
            return
        # At least once the batch becomes durable in the background while the next one
        # is processed (at most two batches in flight per lane). Outputs are queued now,
        # so they keep batch order.
        producer = librdkafka()
        published = producer.submit(outputs)
        changes, positions = state_changes(result, state)
        previous = lanes.get(lane)

        async def durable() -> None:
            await published
            if previous is not None:  # changelog records keep batch order too
                await previous
            await producer.submit(changes)
            await producer.submit(positions)

        task = lanes[lane] = asyncio.ensure_future(durable())
        task.add_done_callback(on_durable)
        if previous is not None:
            await asyncio.shield(previous)

    def on_durable(task: asyncio.Future[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # Queued batches (and the local store) are ahead of what the broker has: the
        # worker cannot go on. It stops; a restart resumes from the durable positions.
        log.critical("a batch could not be made durable: %r; stopping the worker",
                     task.exception())
        app.loop.create_task(app.crash(task.exception()))

    async def publish(records: list[Output]) -> None:
        await send([(names[o.topic], o.key, o.value, o.partition) for o in records])

    guard = InputGuard(app, counters, source_of)  # inputs from the durable positions

    def user_position(source: str, partition: int) -> int | None:
        users.restore(partition, _now_ms())
        return users.resume_position(source, partition)

    @contextlib.contextmanager
    def dropping_caches_on_error() -> Iterator[None]:
        # Decoded states are changed in place while a batch is processed: if it fails,
        # drop them, and take the inputs again from the durable positions.
        try:
            yield
        except BaseException:
            forget_caches()
            guard.forget()
            raise

    async def user_agent(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            async with user_side:
                batch = await guard.in_order([_input_record(ev, source_of) for ev in events],
                                       user_position)
                with dropping_caches_on_error():
                    await commit(users.process(batch, _now_ms()), user_state, "user")

    async def item_agent(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            batch = await guard.in_order([_input_record(ev, source_of) for ev in events],
                                   lambda source, partition: items.resume_position(partition))
            with dropping_caches_on_error():
                await commit(items.process(batch), item_state, "item")

    app.agent(inputs, name="freshet-users")(user_agent)
    app.agent(snapshots, name="freshet-item-snapshots")(user_agent)
    app.agent(repartition, name="freshet-items")(item_agent)

    inputs_by_source = {"clicks": settings.topic("clicks"),
                        "predictions": settings.topic("predictions")}

    def caught_up(partition: int, source: str) -> bool:
        """Nothing left to read in this partition of that input topic."""
        highwater = app.consumer.highwater(TP(inputs_by_source[source], partition))
        done = users.positions.get((source, partition))
        return highwater is not None and highwater <= (0 if done is None else done + 1)

    # often enough that an idle partition's watermark lags the wall clock by little
    @app.timer(interval=min(1.0, max(0.05, settings.idle_advance_ms / 4000)))
    async def idle_advance() -> None:
        if app.rebalancing or not app.tables.recovery.completed.is_set():
            return
        async with user_side:
            now = _now_ms()
            for tp in app.consumer.assignment():
                if tp.topic == inputs_by_source["clicks"]:
                    users.restore(tp.partition, now)  # e.g. restarted with nothing to read
            await commit(advance_idle(users, now, settings.idle_advance_ms, caught_up),
                         user_state, "user")

    @app.timer(interval=5.0)
    async def label_reports() -> None:
        await publish(label_report_records(users, labels))

    sources = {settings.topic("clicks"), settings.topic("predictions"),
               names["items_repartition"], names["item_snapshots"]}

    @app.timer(interval=1.0)
    async def resume_partitions() -> None:
        # Faust pauses fetching a partition while a stream's queue is nearly full, or
        # while tables recover, and resumes it from callbacks; after SIGKILL restarts
        # under backlog we saw an input partition stay paused for good (the worker idle,
        # the partition never read). Our agents drain their queues every batch, so once
        # no rebalance or recovery is under way, asking the consumer to resume every
        # assigned input partition is safe; a queue that really is full pauses it again.
        if app.rebalancing or not app.tables.recovery.completed.is_set():
            return
        consumer = app.consumer
        consumer.resume_partitions({tp for tp in consumer.assignment() if tp.topic in sources})

    @app.timer(interval=1.0)
    async def stall_watchdog() -> None:
        await guard.watchdog(users.positions, users.resume_position)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        forget_caches()
        # watermarks and positions come back from the user table if they return
        users.forget({tp.partition for tp in revoked if tp.topic == inputs_by_source["clicks"]})
        guard.forget({(tp.topic, tp.partition) for tp in revoked})
        items.forget({tp.partition for tp in revoked if tp.topic == names["items_repartition"]})

    def forget_caches() -> None:
        labels.forget_partitions()
        users.users.cache.clear()
        items.items.cache.clear()

    app.task(_install_task_dump)

    register_views(app, counters, users.watermarks,
                   {"user": (catalog.user, user_state), "item": (catalog.item, item_state)},
                   labels)
    return app


OUTPUT_TOPICS = ("features_user", "features_item", "dead_letters", "labels",
                 "training_examples", "late_clicks", "unattributed_clicks", "model_metrics",
                 "label_watermarks")


async def _install_task_dump() -> None:
    install_task_dump()


def _now_ms() -> int:
    return int(time.time() * 1000)


def partitioner(partitions: int) -> Callable[[str], int]:
    """The Java client's default partition of a string key (as Faust tables route it)."""

    def partition_of(key: str) -> int:
        return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions

    return partition_of


def _input_record(event: EventT, source_of: dict[str, str]) -> InputRecord:
    msg = event.message
    return InputRecord(source=source_of[msg.topic], topic=msg.topic, partition=msg.partition,
                       offset=msg.offset, key=msg.key, value=msg.value)


_app: faust.App | None = None


def __getattr__(name: str) -> Any:
    """Build ``app`` lazily, so that ``faust -A streams.app`` works without a singleton."""
    global _app
    if name == "app":
        if _app is None:
            from freshet.topics import create_topics

            settings = Settings.from_env()
            create_topics(settings)  # as `freshet worker` does
            _app = create_app(settings)
        return _app
    raise AttributeError(name)
