"""The project's own launcher for a real, single-node Apache Kafka on 127.0.0.1."""

from freshet.kafka_local.launcher import LauncherError, LocalKafka, ensure_jars, kafka_version

__all__ = ["LauncherError", "LocalKafka", "ensure_jars", "kafka_version"]
