"""Several workers in one group: joins and leaves hand state over, nothing is lost.

Workers join one by one while the log is produced, the first leaves gracefully, and
with three workers a second one is SIGKILLed (and not restarted). Every feature
record, final label and training example read back (read_committed) must equal the
oracle; while the group is stable every worker answers ``GET /features/...`` for
every key with the same record, forwarding to the key's owner.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from freshet.generator import GeneratorConfig, generate
from freshet.settings import Settings
from freshet.topics import create_topics
from tests.conftest import free_port
from tests.streams import oracle
from tests.streams.expected import TOPICS, Expected
from tests.streams.support import (
    Produced,
    Worker,
    consume,
    http_get,
    produce_log,
    settings_env,
    stats,
)
from tests.streams.test_features_stream import (
    all_features_done,
    make_settings,
)
from tests.streams.test_labels_stream import LABEL_ENV

pytestmark = [pytest.mark.integration, pytest.mark.restart]

PARTITIONS = 4


def _worker_settings(base: Settings, i: int, tmp_path: Path) -> Settings:
    """Worker ``i``: the group's settings, its own data folder and web port."""
    env = settings_env(base)
    env.update({"FRESHET_DATA_DIR": str(tmp_path / f"data-{i}"),
                "FRESHET_WEB_PORT": str(free_port()), "FRESHET_WORKER_ID": ""})
    return Settings.from_env(env)


def _wait_stable(workers: list[Worker], timeout_s: float = 90) -> dict[int, dict[str, list[int]]]:
    """Wait until the running workers own every partition between them, each once."""
    deadline = time.monotonic() + timeout_s
    while True:
        docs = {w.settings.web_port: stats(w.settings) for w in workers}
        if all(d is not None for d in docs.values()):
            owned = {port: d["owned"] for port, d in docs.items() if d is not None}
            ok = all(sorted(p for o in owned.values() for p in o[entity])
                     == list(range(PARTITIONS)) for entity in ("user", "item"))
            ready = all(http_get(port, "/ready")[0] == 200 for port in owned)
            if ok and ready:
                return owned
        assert time.monotonic() < deadline, f"group not stable: {docs}"
        time.sleep(0.5)


def _check_read_path_everywhere(workers: list[Worker], got: dict[str, list[Any]],
                                keyed: dict[str, dict[str, list[oracle.Event]]]) -> int:
    """Every worker answers each sampled key with its latest record; forwarded reads."""
    forwarded = 0
    for entity in ("user", "item"):
        latest = {}
        for msg in got[f"features_{entity}"]:
            rec = orjson.loads(msg.value())
            latest[rec["id"]] = {k: v for k, v in rec.items() if k != "source"}
        for key in sorted(keyed[entity])[:12]:
            for w in workers:
                status, headers, body = http_get(w.settings.web_port, f"/features/{entity}/{key}")
                assert status == 200, (entity, key, status, body)
                assert body == latest[key], (entity, key)
                me = f"{w.settings.web_host}:{w.settings.web_port}"
                forwarded += headers.get("X-Freshet-Served-By") != me
    return forwarded


@pytest.mark.parametrize("n_workers", [2, 3])
def test_workers_join_and_leave_mid_stream(kafka_bootstrap: str, unique_prefix: str,
                                           tmp_path: Path, n_workers: int) -> None:
    # the idle advance moves a quiet input's watermark by wall-clock time: a worker
    # starved of CPU for seconds during a rebalance would then see the next chunk's
    # events as late, which the oracle (no wall clock) does not expect
    env = {**LABEL_ENV, "FRESHET_IDLE_ADVANCE_MS": "15000"}
    base = make_settings(kafka_bootstrap, unique_prefix, tmp_path / "base", **env,
                         FRESHET_COMMIT_INTERVAL_MS="200", FRESHET_SESSION_TIMEOUT_MS="6000",
                         FRESHET_TRANSACTION_TIMEOUT_MS="6000",
                         FRESHET_BATCH_MAX_EVENTS="500",
                         FRESHET_CHECKPOINT_INTERVAL_MS="1000")
    create_topics(base)
    records = list(generate(GeneratorConfig(seed=41 + n_workers, users=60, items=30,
                                            predictions=2_400, malformed_fraction=0.01)))
    chunks = n_workers + 1
    size = -(-len(records) // chunks)
    parts = [records[i * size:(i + 1) * size] for i in range(chunks)]
    workers = [Worker(_worker_settings(base, i, tmp_path), tmp_path / f"worker-{i}.log")
               for i in range(n_workers)]
    log: list[Produced] = []
    try:
        for i, worker in enumerate(workers):  # join one by one, mid-stream
            worker.start()
            log += produce_log(base, parts[i])
            time.sleep(1.0)
        owned = _wait_stable(workers)
        # every worker has a share of the user side and of the item side, balanced
        # (task p = user and item partition p; subscribing to both topics let the
        # assignor give one worker every user partition and another every item one)
        counts = [len(o["user"]) for o in owned.values()]
        assert all(o["user"] == o["item"] for o in owned.values()), owned
        assert min(counts) >= 1 and max(counts) - min(counts) <= 1, owned

        events = oracle.valid_events(log)
        keyed = {"user": oracle.events_by_user(events), "item": oracle.events_by_item(events)}
        got = consume(base, ["features_user", "features_item"], all_features_done(keyed, 0),
                      timeout_s=120)
        forwarded = _check_read_path_everywhere(workers, got, keyed)
        assert forwarded > 0, "some reads must have been answered by another worker"

        workers[0].stop(signal.SIGTERM)  # leaves (its partitions move after the session)
        if n_workers == 3:
            workers[1].stop(signal.SIGKILL)  # dies with a transaction open, not restarted
        log += produce_log(base, parts[-1])
        survivors = workers[2:] if n_workers == 3 else workers[1:]
        _wait_stable(survivors, timeout_s=120)

        expected = Expected(log)
        got = consume(base, TOPICS, expected.done, timeout_s=240)
    finally:
        for worker in workers:
            worker.stop()

    expected.check(got)
