"""What a broker test's outputs must be, computed from the produced log by the oracles.

Shared by the tests that run whole workers through faults (broker restart, scale-out,
restarts): wait with :meth:`Expected.done`, then :meth:`Expected.check` what was read.
"""

from __future__ import annotations

from typing import Any

import orjson

from tests.streams import oracle
from tests.streams.label_oracle import final_labels
from tests.streams.support import Produced
from tests.streams.test_features_stream import all_features_done, check_feature_records
from tests.streams.test_labels_stream import HORIZON, SKEW, WINDOW, finals

#: the topics :meth:`Expected.check` knows (each checked when it was read)
TOPICS = ["features_user", "features_item", "labels", "training_examples", "dead_letters"]


def _example_ids(got: dict[str, list[Any]]) -> list[str]:
    return [orjson.loads(m.value())["prediction_id"] for m in got["training_examples"]]


class Expected:
    """The oracles' features, final labels and dead letters for a produced log."""

    def __init__(self, log: list[Produced], features: bool = True) -> None:
        events = oracle.valid_events(log)
        self.keyed = {"user": oracle.events_by_user(events), "item": oracle.events_by_item(events)}
        self.labels = final_labels(events, WINDOW, SKEW, HORIZON)
        self.malformed = sum(1 for p in log if p.record.malformed is not None)
        self._features_done = all_features_done(self.keyed, 0) if features else None

    def done(self, got: dict[str, list[Any]]) -> bool:
        """Everything expected has been read (features, final labels, examples)."""
        # an example may come a batch after its label (its item's snapshot comes back
        # from the item side), so wait for both
        return ((self._features_done is None or self._features_done(got))
                and len(finals(got["labels"])) >= len(self.labels)
                and len(set(_example_ids(got))) >= len(self.labels))

    def check(self, got: dict[str, list[Any]]) -> None:
        """Every record read equals the oracle's; labels and examples exactly once."""
        if self._features_done is not None:
            for entity in ("user", "item"):
                keyed = self.keyed[entity]
                assert check_feature_records(entity, got[f"features_{entity}"],
                                             keyed) == set(keyed)
        labels = finals(got["labels"])  # fails on two different finals or differing repeats
        assert set(labels) == set(self.labels)
        for pid, want in self.labels.items():
            assert {k: labels[pid][k] for k in want} == want, pid
        examples = _example_ids(got)
        assert sorted(examples) == sorted(self.labels), "one training example per prediction"
        if "dead_letters" in got:
            assert len(got["dead_letters"]) == self.malformed
