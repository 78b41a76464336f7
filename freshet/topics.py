"""Create freshet's topics explicitly (the brokers we start never auto-create them)."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from freshet.settings import COMPACTED_TOPICS, DEFAULT_TOPICS, Settings

log = logging.getLogger(__name__)


class TopicError(RuntimeError):
    """A topic exists with a layout freshet cannot use, or could not be created."""


#: The app's internal topics (named after FRESHET_APP_ID): created up front too, so
#: that they are in the cluster metadata when the worker first joins its group.
INTERNAL_TOPICS = ("items-repartition", "item-snapshots")
#: logical topics with one partition whatever FRESHET_PARTITIONS says
SINGLE_PARTITION_TOPICS = frozenset({"model_versions"})
#: the evaluation stage's election topic (one partition, never written)
EVALUATION_LEADER = "evaluation-leader"


def internal_topic(settings: Settings, suffix: str) -> str:
    """The broker name of one of the app's internal topics."""
    return f"{settings.app_id}-{suffix}"


def state_topics(settings: Settings) -> list[str]:
    """The changelog topics of the worker's state (named after its definitions)."""
    from streams.kafka import changelog_topics

    return sorted(changelog_topics(settings, settings.load_catalog()).values())


def topic_specs(settings: Settings) -> list[NewTopic]:
    """One ``NewTopic`` per logical, internal and state topic, with the configured partitions."""
    specs = []
    for logical in DEFAULT_TOPICS:
        config = {"cleanup.policy": "compact"} if logical in COMPACTED_TOPICS else {}
        # model versions are read in order: one partition
        parts = 1 if logical in SINGLE_PARTITION_TOPICS else settings.partitions
        specs.append(NewTopic(settings.topic(logical), num_partitions=parts,
                              replication_factor=settings.replication_factor, config=config))
    for suffix in INTERNAL_TOPICS:
        specs.append(NewTopic(internal_topic(settings, suffix), num_partitions=settings.partitions,
                              replication_factor=settings.replication_factor))
    # one partition: the consumer group that owns it elects the one evaluation leader
    specs.append(NewTopic(internal_topic(settings, EVALUATION_LEADER), num_partitions=1,
                          replication_factor=settings.replication_factor))
    for name in state_topics(settings):
        # compacted: the latest value per key is the state; tombstones go after a day.
        # Deltas rewrite hot keys every batch, and only closed segments are compacted:
        # segments roll hourly (or at 64 MiB) so the log stays near the state's size.
        specs.append(NewTopic(name, num_partitions=settings.partitions,
                              replication_factor=settings.replication_factor,
                              config={"cleanup.policy": "compact",
                                      "delete.retention.ms": "86400000",
                                      "segment.ms": "3600000",
                                      "segment.bytes": str(64 * 1024 * 1024)}))
    return specs


def create_topics(settings: Settings, timeout_s: float = 30.0) -> dict[str, str]:
    """Create missing topics; check existing input topics have the expected partitions.

    Returns topic name -> "created" or "exists".
    """
    admin = AdminClient(dict(settings.kafka_client_config()))
    existing = admin.list_topics(timeout=timeout_s).topics
    wanted = topic_specs(settings)
    result: dict[str, str] = {}
    missing = [t for t in wanted if t.topic not in existing]
    if missing:
        futures = admin.create_topics(missing, operation_timeout=timeout_s,
                                      request_timeout=timeout_s)
        for name, fut in futures.items():
            try:
                fut.result()
                result[name] = "created"
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise TopicError(f"could not create topic {name!r}: {exc}") from exc
                result[name] = "exists"
    for spec in wanted:
        if spec.topic in existing:
            result[spec.topic] = "exists"
            have = len(existing[spec.topic].partitions)
            co_partitioned = (settings.topic("clicks"), settings.topic("predictions"),
                              *(internal_topic(settings, x) for x in INTERNAL_TOPICS),
                              *state_topics(settings))
            if spec.topic in co_partitioned and have != settings.partitions:
                raise TopicError(
                    f"topic {spec.topic!r} has {have} partitions but FRESHET_PARTITIONS is "
                    f"{settings.partitions}; the input topics must be co-partitioned with the "
                    "state tables: set FRESHET_PARTITIONS={have} or recreate the topic")
    log.info("topics ready: %s", ", ".join(sorted(result)))
    return result


def delete_topics(settings: Settings, names: list[str], timeout_s: float = 30.0) -> None:
    """Delete topics by name (used by tests to clean up their own topics)."""
    admin = AdminClient(dict(settings.kafka_client_config()))
    for fut in admin.delete_topics(names, operation_timeout=timeout_s).values():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].name() != "UNKNOWN_TOPIC_OR_PART":
                raise
