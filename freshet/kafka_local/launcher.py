"""Start, stop and inspect a real single-node Apache Kafka (KRaft) on 127.0.0.1.

The jars are the official ones from Maven Central, resolved by Maven from the pom
beside this file into a cache outside git (``~/.cache/freshet/kafka-<version>``, or
``FRESHET_KAFKA_LIBS``); the broker runs on the machine's Java (17+), keeps its data
under ``<data_dir>/kafka`` and only ever binds 127.0.0.1. ``stop`` ends only the
process this launcher started, identified by its PID file *and* its command line.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J = HERE / "log4j2.properties"
MAIN_CLASS = "kafka.Kafka"


class LauncherError(RuntimeError):
    """The local broker could not be set up, started or stopped; says what to do."""


def kafka_version() -> str:
    """The Kafka version pinned in the pom."""
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if not match:
        raise LauncherError(f"no <kafka.version> in {POM}")
    return match.group(1)


def libs_dir() -> Path:
    """Where the broker's jars are cached (outside the repository)."""
    env = os.environ.get("FRESHET_KAFKA_LIBS")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "freshet" / f"kafka-{kafka_version()}" / "libs"


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise LauncherError(
            "Java not found: the local Kafka broker needs Java 17 or newer. Install a JDK "
            "(Debian: apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    if not match or int(match.group(1)) < 17:
        raise LauncherError(f"{java} is not Java 17 or newer: {out.stderr.strip()[:200]}")
    return java


def ensure_jars() -> Path:
    """Resolve the pinned Kafka jars with Maven once; return the folder holding them."""
    target = libs_dir()
    marker = target / ".complete"
    if marker.exists():
        return target
    mvn = shutil.which("mvn")
    if not mvn:
        raise LauncherError(
            "Maven (mvn) not found: it fetches the pinned Apache Kafka jars from Maven "
            "Central. Install it (Debian: apt-get install -y maven), or point "
            "FRESHET_KAFKA_LIBS at a folder that already holds the Kafka jars, or point "
            "FRESHET_KAFKA_BOOTSTRAP at a running broker."
        )
    _java()
    target.mkdir(parents=True, exist_ok=True)
    log.info("resolving Apache Kafka %s jars with Maven into %s", kafka_version(), target)
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={target}", "-DincludeScope=runtime"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LauncherError(
            f"Maven could not fetch the Kafka jars (exit {proc.returncode}):\n"
            f"{(proc.stdout + proc.stderr)[-2000:]}"
        )
    marker.write_text(kafka_version() + "\n")
    return target


@dataclass(frozen=True)
class LocalKafka:
    """One local broker: its folder and its two loopback ports."""

    home: Path
    port: int = 19092

    @property
    def controller_port(self) -> int:
        """The KRaft controller listener's port (next to the broker port)."""
        return self.port + 1

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients use."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def properties(self) -> Path:
        return self.home / "server.properties"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def server_properties(self) -> str:
        """The broker configuration: one KRaft node, loopback only, RF 1 everywhere."""
        return "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.data}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=8",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "min.insync.replicas=1",
            "group.initial.rebalance.delay.ms=0",
            "num.network.threads=3",
            "num.io.threads=4",
            # keep everything: generated logs carry event-time timestamps (2026-01-01
            # by default), which time-based retention would delete at once
            "log.retention.ms=-1",
            "log.cleaner.enable=true",
            "",
        ])

    # -- process bookkeeping -------------------------------------------------
    def pid(self) -> int | None:
        """PID of the broker this launcher started, if it is still that process."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        args = [a.decode(errors="replace") for a in cmdline]
        if MAIN_CLASS in args and str(self.properties) in args:
            return pid
        return None  # the PID was reused by something else: never touch it

    def answers(self, timeout_s: float = 2.0) -> bool:
        """True when the broker answers a metadata request."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s):
                pass
        except OSError:
            return False
        from confluent_kafka.admin import AdminClient

        try:
            md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=timeout_s)
        except Exception:  # KafkaException while the broker is still starting
            return False
        return bool(md.brokers)

    def status(self) -> dict[str, object]:
        """A small report: running or not, PID, address, version, folder."""
        pid = self.pid()
        return {"running": pid is not None and self.answers(), "pid": pid,
                "bootstrap": self.bootstrap, "version": kafka_version(), "home": str(self.home)}

    # -- start / stop --------------------------------------------------------
    def start(self, timeout_s: float = 90.0) -> int:
        """Start the broker (idempotent); return its PID once it answers metadata."""
        pid = self.pid()
        if pid is not None:
            self._wait_ready(pid, timeout_s)
            return pid
        if _port_taken(self.port) or _port_taken(self.controller_port):
            raise LauncherError(
                f"127.0.0.1:{self.port} or :{self.controller_port} is already in use by "
                "another process; stop it or choose another port (FRESHET_KAFKA_BOOTSTRAP)."
            )
        java = _java()
        jars = ensure_jars()
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.properties.write_text(self.server_properties())
        classpath = f"{jars}/*"
        if not (self.data / "meta.properties").exists():
            cluster_id = _cluster_id()
            fmt = subprocess.run(
                [java, "-cp", classpath, f"-Dlog4j2.configurationFile={LOG4J}",
                 f"-Dkafka.logs.dir={self.logs}", "kafka.tools.StorageTool", "format",
                 "-t", cluster_id, "-c", str(self.properties)],
                capture_output=True, text=True, check=False,
            )
            if fmt.returncode != 0:
                raise LauncherError(f"formatting the KRaft storage failed:\n{fmt.stderr[-2000:]}")
        heap = os.environ.get("FRESHET_KAFKA_HEAP", "1g")
        cmd = [java, f"-Xmx{heap}", "-Xms256m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={LOG4J}", f"-Dkafka.logs.dir={self.logs}",
               "-cp", classpath, MAIN_CLASS, str(self.properties)]
        with open(self.logs / "stdout.log", "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_file.write_text(f"{proc.pid}\n")
        log.info("started Apache Kafka %s (pid %d) on %s", kafka_version(), proc.pid,
                 self.bootstrap)
        self._wait_ready(proc.pid, timeout_s, proc)
        return proc.pid

    def _wait_ready(self, pid: int, timeout_s: float,
                    proc: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise LauncherError(
                    f"the broker exited with code {proc.returncode} while starting; "
                    f"last log lines:\n{self.tail()}"
                )
            if self.answers():
                return
            time.sleep(0.3)
        raise LauncherError(f"the broker (pid {pid}) did not answer within {timeout_s:.0f} s; "
                            f"last log lines:\n{self.tail()}")

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker this launcher started; True if one was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            log.warning("broker pid %d did not stop within %.0f s; killing it", pid, timeout_s)
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def tail(self, lines: int = 20) -> str:
        """The last lines of the broker's logs (for error messages)."""
        chunks = []
        for name in ("stdout.log", "server.log"):
            path = self.logs / name
            if path.exists():
                chunks.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(chunks[-lines:])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one that starts with ``-`` (1 in 64 do): the storage tool would take it for
    an option and refuse to format (seen: a soak run's broker did not start). Kafka's
    own ``Uuid.randomUuid`` draws again for the same reason.

    >>> cid = _cluster_id(); len(cid), cid[0] != "-"
    (22, True)
    """
    import base64

    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid
