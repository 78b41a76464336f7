"""The Faust application: ``create_app(settings)`` wires topics, tables and agents.

There is no import-time app: ``faust -A streams.app worker`` reaches the module
attribute ``app``, which is built on first access from ``FRESHET_*`` settings.
"""

from __future__ import annotations

import logging
from typing import Any

from collections.abc import Callable

import faust
from aiokafka.partitioner import murmur2
from faust.types import EventT

from features.catalog import Catalog, default_catalog
from features.featureset import FeatureSet
from freshet.settings import Settings
from streams.processor import Counters, InputRecord, ItemProcessor, Output, UserProcessor
from streams.state import KeyedState
from streams.views import register_views

log = logging.getLogger(__name__)

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
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
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
    (settings.data_dir / "faust" / settings.app_id).mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.app_id, **faust_config(settings))
    catalog = catalog or default_catalog(settings.ctr_prior_clicks, settings.ctr_prior_non_clicks)
    partitions = settings.partitions

    inputs = app.topic(settings.topic("clicks"), settings.topic("predictions"),
                       key_type=bytes, value_type=bytes, partitions=partitions)
    repartition = app.topic(f"{settings.app_id}-items-repartition", key_type=bytes,
                            value_type=bytes, partitions=partitions, internal=True)
    outputs = {name: app.topic(settings.topic(name), key_type=bytes, value_type=bytes)
               for name in ("features_user", "features_item", "dead_letters")}
    outputs["items_repartition"] = repartition
    source_of = {settings.topic("clicks"): "clicks",
                 settings.topic("predictions"): "predictions",
                 repartition.get_topic_name(): "items_repartition"}

    def table(features: FeatureSet) -> KeyedState:
        return KeyedState(app.Table(features.state_name, default=None, partitions=partitions,
                                    key_type=str, value_type=bytes))

    user_state, item_state = table(catalog.user), table(catalog.item)
    counters = Counters()
    users = UserProcessor(catalog.user, user_state.get, settings.allowed_lateness_ms,
                          partitioner(partitions), counters)
    items = ItemProcessor(catalog.item, item_state.get, counters, partitions)

    async def run(stream: faust.StreamT[bytes], processor: UserProcessor | ItemProcessor,
                  state: KeyedState) -> None:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            result = processor.process([_input_record(ev, source_of) for ev in events])
            for (partition, key), value in result.writes.items():
                state.put(partition, key, value)
            await publish(result.outputs)

    direct = settings.processing_guarantee == "at_least_once"
    names = {logical: topic.get_topic_name() for logical, topic in outputs.items()}

    async def publish(records: list[Output]) -> None:
        # Faust's Topic.send costs a channel, codec and callback per message; at
        # least once, the producer's own send is enough (Faust flushes it before
        # committing offsets). Transactions need Faust's path.
        if direct:
            producer = app.producer
            for out in records:
                await producer.send(names[out.topic], out.key, out.value, out.partition,
                                    None, None)
        else:
            for out in records:
                await outputs[out.topic].send(key=out.key, value=out.value,
                                              partition=out.partition)

    async def user_agent(stream: faust.StreamT[bytes]) -> None:
        await run(stream, users, user_state)

    async def item_agent(stream: faust.StreamT[bytes]) -> None:
        await run(stream, items, item_state)

    app.agent(inputs, name="freshet-users")(user_agent)
    app.agent(repartition, name="freshet-items")(item_agent)
    register_views(app, counters, users.watermarks,
                   {"user": (catalog.user, user_state), "item": (catalog.item, item_state)})
    return app


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
            _app = create_app(Settings.from_env())
        return _app
    raise AttributeError(name)
