"""Shared fixtures: a real Kafka broker for the integration tests.

Broker choice, in order: ``FRESHET_KAFKA_BOOTSTRAP`` when set; else a testcontainers
``apache/kafka`` when a Docker engine answers; else the project's own launcher
(``freshet.kafka_local``) on free 127.0.0.1 ports with data under ``var/kafka-test-<port>``.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_RNG = random.Random()  # ports only: not part of any test's seeded data
KAFKA_IMAGE = "apache/kafka:4.3.1"


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        out = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real Kafka broker for this test session."""
    env = os.environ.get("FRESHET_KAFKA_BOOTSTRAP")
    if env:
        yield env
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer(KAFKA_IMAGE).with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from freshet.kafka_local import LauncherError, LocalKafka

    # A broker of this session's own (own folder, own ports): concurrent sessions
    # never share, stop or wipe each other's broker.
    for attempt in range(3):
        port = _free_port_pair()
        kafka = LocalKafka(home=ROOT / "var" / f"kafka-test-{port}", port=port)
        shutil.rmtree(kafka.home, ignore_errors=True)
        try:
            kafka.start()
            break
        except LauncherError:  # e.g. the port was taken between the check and the bind
            shutil.rmtree(kafka.home, ignore_errors=True)
            if attempt == 2:
                raise
    try:
        yield kafka.bootstrap
    finally:
        kafka.stop()
        shutil.rmtree(kafka.home, ignore_errors=True)


@pytest.fixture
def unique_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A topic/app-id prefix of this test's own, so broker tests never share topics.

    A broker test's topics are deleted when it ends: a long-lived development broker
    (``FRESHET_KAFKA_BOOTSTRAP``) otherwise collects tens of thousands of partitions
    over repeated suite runs and stops accepting connections (too many open files).
    """
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    yield prefix
    if "kafka_bootstrap" in request.fixturenames:
        _delete_topics(request.getfixturevalue("kafka_bootstrap"), prefix)


def _delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete every topic named ``prefix...`` (best effort: a warning if it fails)."""
    import warnings

    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        if names:
            for future in admin.delete_topics(names, operation_timeout=30).values():
                future.result(timeout=60)
    except KafkaException as exc:
        warnings.warn(f"topics {prefix}* not deleted: {exc}", stacklevel=1)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port_pair() -> int:
    """A port p with p and p + 1 free on 127.0.0.1 (broker and controller)."""
    for _ in range(200):
        port = free_port()
        if _bindable(port + 1):
            return port
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


def free_port() -> int:
    """A free TCP port on 127.0.0.1, below the kernel's ephemeral range.

    Ports the kernel hands out with ``bind(0)`` are ephemeral: any client connection
    may take one as its source port before our server binds it.
    """
    for _ in range(500):
        port = _RNG.randrange(20_000, 32_000)
        if _bindable(port):
            return port
    raise RuntimeError("no free port on 127.0.0.1 in 20000-32000")
