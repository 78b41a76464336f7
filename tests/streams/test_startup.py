"""Start-up checks: a data folder has one worker, an unreachable broker is one clear error,
and a running worker answers ``/health`` and ``/ready``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from freshet.settings import Settings
from freshet.topics import create_topics
from streams.startup import DataDirLock, StartupError
from tests.conftest import free_port
from tests.streams.support import ROOT, http_get, running_worker, settings_env
from tests.streams.test_features_stream import make_settings


def test_a_second_lock_on_a_folder_is_refused_with_the_holder(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path)
    first.acquire()
    with pytest.raises(StartupError, match=rf"in use by worker pid {os.getpid()}.*"
                                           "FRESHET_DATA_DIR"):
        DataDirLock(tmp_path).acquire()
    first.release()
    again = DataDirLock(tmp_path)  # released: free again
    again.acquire()
    again.release()


@pytest.mark.integration
def test_second_worker_on_a_folder_stops_and_deletes_nothing(
        kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path / "data")
    create_topics(settings)
    with running_worker(settings, tmp_path / "worker-1.log"):
        deadline = time.monotonic() + 60
        while http_get(settings.web_port, "/ready")[0] != 200:
            assert time.monotonic() < deadline, http_get(settings.web_port, "/ready")
            time.sleep(0.3)
        status, _, health = http_get(settings.web_port, "/health")
        assert (status, health["alive"]) == (200, True)
        assert http_get(settings.web_port, "/ready")[2]["ready"] is True
        before = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "data").rglob("*"))
        sentinel = tmp_path / "data" / "faust" / settings.app_id / "sentinel"
        sentinel.write_text("mine")
        # the same folder, another web port: only the folder is shared
        other = Settings.from_env({**settings_env(settings), "FRESHET_WEB_PORT": str(free_port())})
        second = subprocess.run([sys.executable, "-m", "freshet.cli", "worker"], cwd=ROOT,
                                env=settings_env(other), capture_output=True, text=True,
                                timeout=60)
        assert second.returncode != 0
        assert "is in use by worker pid" in second.stderr
        assert "set FRESHET_DATA_DIR to another folder" in second.stderr
        assert sentinel.read_text() == "mine"
        after = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "data").rglob("*"))
        assert set(before) <= set(after)
        assert http_get(settings.web_port, "/health")[0] == 200  # the first one is unharmed


def test_an_unreachable_broker_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
    env.update({"FRESHET_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}", "FRESHET_BROKER_WAIT_MS": "4000",
                "FRESHET_DATA_DIR": str(tmp_path), "FRESHET_WEB_PORT": str(free_port())})
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "freshet.cli", "worker"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"cannot reach Kafka at 127.0.0.1:{port} after" in out
    assert "FRESHET_KAFKA_BOOTSTRAP" in out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) <= 8, out  # a few retry lines and the error, no librdkafka flood
    assert took < 30
