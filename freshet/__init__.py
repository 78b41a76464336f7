"""freshet operations: settings, CLI, the local Kafka launcher, topics, generator."""
