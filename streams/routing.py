"""Which worker owns a key's partition, so that any worker can answer a feature read.

Kafka's group coordinator knows every member's assignment, and each worker's group
consumer carries its read-path address in its client id (``<app id>-worker@host:port``,
``FRESHET_WEB_HOST``/``FRESHET_WEB_PORT``). A worker asked for a key it does not own
describes the group (AdminClient), finds the member that owns the key's partition and
forwards the request there: no registry topic of its own, and the answer is exactly
the coordinator's view. Answers are cached for :data:`TTL_S` and refreshed when they
turn out to be stale.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

log = logging.getLogger(__name__)

Entity = Literal["user", "item"]
#: How long a description of the group is trusted.
TTL_S: Final = 2.0
#: The header of a forwarded read (a worker never forwards one again).
FORWARDED: Final = "X-Freshet-Forwarded"
#: The header naming the worker that answered.
SERVED_BY: Final = "X-Freshet-Served-By"


def client_id(app_id: str, address: str | None) -> str:
    """The group consumer's client id, carrying the worker's read-path address.

    >>> client_id("freshet", "10.0.0.7:6066"), client_id("freshet", None)
    ('freshet-worker@10.0.0.7:6066', 'freshet-worker')
    """
    return f"{app_id}-worker" + (f"@{address}" if address else "")


def address_of(client: str) -> str | None:
    """The read-path address in a member's client id (None: it serves no reads).

    >>> address_of("freshet-worker@127.0.0.1:6067"), address_of("freshet-worker")
    ('127.0.0.1:6067', None)
    """
    _, at, address = client.rpartition("@")
    return address if at and address else None


def owners_from(members: Iterable[tuple[str, Iterable[tuple[str, int]]]],
                topics: Mapping[Entity, str]) -> dict[tuple[Entity, int], str]:
    """(entity, partition) -> owner address, from (client id, assigned partitions) pairs.

    Several entities may live on one topic's partitions (a worker's task ``p`` owns
    user and item partition ``p``, assigned through ``predictions``).

    >>> owners_from([("a-worker@h:1", [("p", 0), ("r", 1)]), ("a-worker@h:2", [("p", 1)])],
    ...             {"user": "p", "item": "r"})
    {('user', 0): 'h:1', ('item', 1): 'h:1', ('user', 1): 'h:2'}
    >>> owners_from([("a-worker@h:1", [("p", 0)])], {"user": "p", "item": "p"})
    {('user', 0): 'h:1', ('item', 0): 'h:1'}
    """
    out: dict[tuple[Entity, int], str] = {}
    for client, assigned in members:
        address = address_of(client)
        if address is None:
            continue
        for topic, partition in assigned:
            for entity, entity_topic in topics.items():
                if entity_topic == topic:
                    out[(entity, partition)] = address
    return out


class Owners:
    """The group's partition owners, described by the coordinator (cached)."""

    def __init__(self, admin_config: dict[str, Any], group_id: str,
                 topics: Mapping[Entity, str]) -> None:
        self._config = admin_config
        self.group_id = group_id
        self.topics = dict(topics)
        self._admin: Any = None
        self._owners: dict[tuple[Entity, int], str] = {}
        self._described = -1e18
        self._lock = threading.Lock()
        self.describes = 0

    def owner(self, entity: Entity, partition: int, fresh: bool = False) -> str | None:
        """The address of the worker owning ``partition`` of ``entity`` (None: nobody)."""
        with self._lock:
            if fresh or time.monotonic() - self._described > TTL_S:
                self._describe()
            return self._owners.get((entity, partition))

    def _describe(self) -> None:
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient(self._config)
        future = self._admin.describe_consumer_groups([self.group_id],
                                                      request_timeout=5)[self.group_id]
        group = future.result(timeout=10)
        self.describes += 1
        members = [(m.client_id, [(tp.topic, tp.partition) for tp in
                                  (m.assignment.topic_partitions if m.assignment else [])])
                   for m in group.members]
        self._owners = owners_from(members, self.topics)
        self._described = time.monotonic()
