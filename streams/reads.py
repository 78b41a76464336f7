"""The read path: ``GET /features/{entity}/{key}`` answered from the owner's engine state."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import numpy as np

from engine import ItemPartition, UserPartition
from features.catalog import Catalog
from features.records import RecordEncoder


class FeatureReads:
    """One key's current feature record, encoded as the feature topics carry it.

    ``users`` and ``items`` are the worker's own partition maps (it changes them in
    place on assignment), read under its ``lock``.
    """

    def __init__(self, catalog: Catalog, partitions: int, partition_of: Callable[[str], int],
                 lock: threading.RLock, users: Mapping[int, UserPartition],
                 items: Mapping[int, ItemPartition]) -> None:
        self.partition_of = partition_of
        self.lock = lock
        self.users = users
        self.items = items
        self.encoders = {"user": RecordEncoder(catalog.user, ("clicks", "predictions")),
                         "item": RecordEncoder(catalog.item, [
                             f"{s}:{o}" for s in ("clicks", "predictions")
                             for o in range(partitions)])}

    def read(self, entity: str, key: str) -> tuple[int, bytes]:
        """(HTTP status, body): 200 and the record, 404 for an unknown key, 421 when the
        key's partition is owned by another worker (the web server routes it there)."""
        partition = self.partition_of(key)
        with self.lock:
            owner: UserPartition | ItemPartition | None = (
                self.users.get(partition) if entity == "user" else self.items.get(partition))
            if owner is None:
                return 421, b'{"error":"this worker does not own that key\'s partition"}'
            table = owner.table
            row = table.row_of(key)
            if row is None:
                return 404, f'{{"error":"unknown {entity} id"}}'.encode()
            rows = np.array([row], dtype=np.int64)
            values = table.read(rows)
            (body,) = self.encoders[entity].records([key], table.as_of[rows], values, None,
                                                    partition)
        return 200, body
