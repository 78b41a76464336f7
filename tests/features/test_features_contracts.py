"""Contract tests over every registered aggregation (built-ins and any defined so far).

A new aggregation class is picked up automatically: it only has to subclass
``features.aggregation.Aggregation`` and give example specs in ``examples()``.
"""

from __future__ import annotations

import pytest

import features.aggregation as aggregation
import tests.streams.user_catalog  # noqa: F401 (a user's own aggregations, checked as well)
from features.spec import FeatureSpec
from tests.features.contracts import check_aggregation

EXAMPLES = [(name, spec) for name, cls in aggregation.registered().items()
            for spec in cls.examples()]


def test_every_registered_aggregation_gives_examples() -> None:
    names = {name for name, _ in EXAMPLES}
    assert names == set(aggregation.registered()), "an aggregation without examples()"
    assert len(names) >= 8


@pytest.mark.parametrize(("name", "spec"), EXAMPLES,
                         ids=[f"{n.rsplit('.', 1)[1]}:{s.name}" for n, s in EXAMPLES])
def test_aggregation_contract(name: str, spec: FeatureSpec) -> None:
    check_aggregation(spec)
