"""A changelog record a worker cannot read stops the restore with one clear error.

Changelogs are state, not input: a record that cannot be read cannot be skipped (the
state would silently be wrong) nor dead-lettered, so the worker stops with a message
naming the changelog partition and what to do (found by feeding foreign records).
"""

from __future__ import annotations

import pytest

from engine import UserPartition
from engine.users import META_KEY, Counters
from freshet.settings import Settings
from labels.config import LabelConfig
from streams.changelog import RestoreError
from streams.state import readable

FOREIGN = [
    ("non-UTF-8 key", [(b"\xff\xfe", b"x")]),
    ("garbage meta record", [(META_KEY, b"junk")]),
    ("garbage feature row", [(b"user-1", b"not a row")]),
    ("empty feature row", [(b"user-1", b"")]),
]


@pytest.mark.parametrize(("case", "records"), FOREIGN, ids=[c for c, _ in FOREIGN])
def test_unreadable_changelog_record_is_one_clear_error(
        case: str, records: list[tuple[bytes, bytes]]) -> None:
    catalog = Settings().load_catalog()
    part = UserPartition(3, catalog.user, LabelConfig(), 5_000, None, Counters())
    with pytest.raises(RestoreError) as err, readable("app-user-changelog", 3):
        part.restore(records, [])
    message = str(err.value)
    assert "changelog app-user-changelog[3] holds a record this worker cannot read" in message
    assert "FRESHET_APP_ID" in message


def test_readable_lets_other_errors_through() -> None:
    with pytest.raises(KeyboardInterrupt), readable("c", 0):
        raise KeyboardInterrupt
