"""Settings from ``FRESHET_*`` environment variables, validated once at start-up.

Every setting has a default that works against the local broker started by
``freshet kafka start``. :meth:`Settings.from_env` reports *all* problems at once,
each naming the variable and what to put there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from labels.config import LabelConfig, LabelMode

#: Logical topic names (as used in code) -> default topic names on the broker.
DEFAULT_TOPICS: dict[str, str] = {
    "clicks": "clicks",
    "predictions": "predictions",
    "features_user": "features.user",
    "features_item": "features.item",
    "labels": "labels",
    "training_examples": "training-examples",
    "model_metrics": "model-metrics",
    "label_watermarks": "label-watermarks",
    "late_clicks": "labels.late-clicks",
    "unattributed_clicks": "clicks.unattributed",
    "dead_letters": "dead-letters",
    "model_comparisons": "model-comparisons",
    "model_routing": "model-routing",
    "drift": "drift",
    "retrain_triggers": "retrain-triggers",
    "model_versions": "model-versions",
}

#: Topics that hold latest-value-per-key records and are created compacted.
COMPACTED_TOPICS = frozenset({"features_user", "features_item", "model_routing"})

LABEL_MODES = ("wait", "early_negative", "observe_then_correct")
STORES = ("memory", "rocksdb")
StoreKind = Literal["memory", "rocksdb"]
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
EVALUATION_LEADERS = ("worker", "process")
EvaluationLeader = Literal["worker", "process"]
#: which performance drop raises a retrain trigger (as ``evaluation.TriggerConfig``)
RetrainPerformance = Literal["off", "log_loss", "auc", "both"]
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class SettingsError(ValueError):
    """Start-up settings that cannot work; the message lists what to fix."""


@dataclass(frozen=True)
class Settings:
    """Everything a freshet process needs to know, in one validated object."""

    bootstrap_servers: str = "127.0.0.1:19092"
    app_id: str = "freshet"
    topic_prefix: str = ""
    topics: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TOPICS))
    partitions: int = 4
    replication_factor: int = 1
    allowed_lateness_ms: int = 5_000
    idle_advance_ms: int = 10_000
    label_window_ms: int = 1_800_000
    label_skew_ms: int = 5_000
    label_mode: LabelMode = "wait"
    label_observe_ms: int = 60_000
    label_eager_clicks: bool = False
    labels_enabled: bool = True
    ctr_prior_clicks: float = 1.0
    ctr_prior_non_clicks: float = 19.0
    catalog: str = ""
    store: StoreKind = "memory"
    checkpoint_interval_ms: int = 60_000
    data_dir: Path = Path("var")
    web_host: str = "127.0.0.1"
    web_bind: str = "127.0.0.1"
    web_port: int = 6066
    web_enabled: bool = True
    commit_interval_ms: int = 100
    #: a caught-up worker begins a batch (and its transaction) at most this often
    batch_min_interval_ms: int = 100
    batch_max_events: int = 20_000
    #: allocations between the garbage collector's young collections (CPython: 700)
    gc_young_threshold: int = 50_000
    #: ms between malloc_trim(0) calls giving freed native memory back (0: never)
    malloc_trim_interval_ms: int = 30_000
    #: glibc malloc arenas at most (0: glibc's default, 8 per core)
    malloc_arena_max: int = 2
    linger_ms: int = 5
    session_timeout_ms: int = 10_000
    broker_wait_ms: int = 60_000
    transaction_timeout_ms: int = 10_000
    worker_id: str = ""
    #: librdkafka debug contexts for every client, e.g. "eos,cgrp" (diagnosis only)
    kafka_debug: str = ""
    #: testing aid: wait this long between producing a batch and committing it, so that
    #: a fault injected then (a SIGKILL) lands inside an open transaction
    debug_commit_delay_ms: int = 0
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    log_level: str = "INFO"
    #: the evaluation stage (model-metrics, comparisons, routing, drift, triggers)
    evaluation_enabled: bool = True
    #: where the evaluation leader may run: in any worker, or only in `freshet evaluate`
    evaluation_leader: EvaluationLeader = "worker"
    evaluation_interval_ms: int = 1_000
    routing_floor: float = 0.05
    routing_draws: int = 20_000
    routing_seed: int = 0
    drift_reference_size: int = 1_000
    drift_psi_threshold: float = 0.2
    #: retrain reasons "time" (event-time ms) and "volume" (matured labels); 0 = off
    retrain_every_ms: int = 86_400_000
    retrain_every_labels: int = 0
    retrain_performance: RetrainPerformance = "log_loss"
    retrain_log_loss_margin: float = 0.01
    retrain_auc_margin: float = 0.01

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise SettingsError(_report(problems))

    def problems(self) -> list[str]:
        """Every inconsistency, as 'FRESHET_X: what is wrong and what to do'."""
        out: list[str] = []

        def need(ok: bool, var: str, msg: str) -> None:
            if not ok:
                out.append(f"FRESHET_{var}: {msg}")

        hosts = [h.strip() for h in self.bootstrap_servers.split(",") if h.strip()]
        need(
            bool(hosts) and all(re.fullmatch(r"[^\s:]+:\d{1,5}", h) for h in hosts),
            "KAFKA_BOOTSTRAP",
            f"{self.bootstrap_servers!r} is not a comma-separated list of host:port",
        )
        need(bool(re.fullmatch(r"[A-Za-z0-9._-]{1,100}", self.app_id)), "APP_ID",
             f"{self.app_id!r} must be 1-100 of letters, digits, '.', '_' or '-'")
        for logical, name in self.topics.items():
            need(bool(_TOPIC_RE.fullmatch(self.topic_prefix + name)),
                 f"TOPIC_{logical.upper()}",
                 f"{self.topic_prefix + name!r} is not a valid Kafka topic name")
        need(1 <= self.partitions <= 1024, "PARTITIONS", "must be between 1 and 1024")
        need(self.replication_factor >= 1, "REPLICATION_FACTOR", "must be at least 1")
        need(self.allowed_lateness_ms >= 0, "ALLOWED_LATENESS_MS", "must be >= 0")
        need(self.idle_advance_ms > 0, "IDLE_ADVANCE_MS", "must be > 0")
        need(self.label_mode in LABEL_MODES, "LABEL_MODE", f"must be one of {LABEL_MODES}")
        if self.label_mode in LABEL_MODES:
            out.extend(self._label_problems())
        need(self.ctr_prior_clicks >= 0, "CTR_PRIOR_CLICKS", "must be >= 0")
        need(self.ctr_prior_non_clicks >= 0, "CTR_PRIOR_NON_CLICKS", "must be >= 0")
        need(self.ctr_prior_clicks + self.ctr_prior_non_clicks > 0, "CTR_PRIOR_NON_CLICKS",
             "the two CTR priors must not both be 0")
        need(self.store in STORES, "STORE", f"must be one of {STORES}")
        need(1_000 <= self.checkpoint_interval_ms <= 86_400_000, "CHECKPOINT_INTERVAL_MS",
             "must be 1000..86400000 (ms between local checkpoints of each partition)")
        need(1 <= self.web_port <= 65535, "WEB_PORT", "must be a TCP port (1-65535)")
        need(1 <= self.commit_interval_ms <= 60_000, "COMMIT_INTERVAL_MS",
             "must be 1..60000 (ms a caught-up worker collects records into one transaction)")
        need(0 <= self.batch_min_interval_ms <= 10_000, "BATCH_MIN_INTERVAL_MS",
             "must be 0..10000 (ms between the starts of a caught-up worker's batches)")
        need(100 <= self.gc_young_threshold <= 10_000_000, "GC_YOUNG_THRESHOLD",
             "must be in [100, 10000000] (700 is CPython's default)")
        need(0 <= self.malloc_arena_max <= 1024, "MALLOC_ARENA_MAX",
             "must be 0..1024 (0: glibc's default)")
        need(self.malloc_trim_interval_ms == 0
             or 1_000 <= self.malloc_trim_interval_ms <= 3_600_000, "MALLOC_TRIM_INTERVAL_MS",
             "must be 0 (never) or 1000..3600000 (ms between trims of freed memory)")
        need(1 <= self.batch_max_events <= 1_000_000, "BATCH_MAX_EVENTS",
             "must be 1..1000000 (records per batch, and so per transaction)")
        need(0 <= self.linger_ms <= 1_000, "LINGER_MS", "must be 0..1000 (ms)")
        need(1_000 <= self.broker_wait_ms <= 3_600_000, "BROKER_WAIT_MS",
             "must be 1000..3600000 (ms a starting worker waits for the broker to answer)")
        need(6_000 <= self.session_timeout_ms <= 300_000, "SESSION_TIMEOUT_MS",
             "must be between 6000 and 300000 (the broker's group session limits)")
        need(1_000 <= self.transaction_timeout_ms <= 900_000, "TRANSACTION_TIMEOUT_MS",
             "must be 1000..900000 (the broker's transaction.max.timeout.ms is 900000)")
        need(0 <= self.debug_commit_delay_ms <= 60_000, "DEBUG_COMMIT_DELAY_MS",
             "must be 0..60000 (a testing aid; leave it at 0)")
        need(re.fullmatch(r"[A-Za-z0-9._-]{0,100}", self.worker_id) is not None, "WORKER_ID",
             f"{self.worker_id!r} must be up to 100 of letters, digits, '.', '_' or '-'")
        if self.catalog:
            out.extend(self._catalog_problems())
        need(self.security_protocol in SECURITY_PROTOCOLS, "KAFKA_SECURITY_PROTOCOL",
             f"must be one of {SECURITY_PROTOCOLS}")
        if self.security_protocol.startswith("SASL"):
            need(self.sasl_mechanism in SASL_MECHANISMS, "KAFKA_SASL_MECHANISM",
                 f"must be one of {SASL_MECHANISMS}")
            need(bool(self.sasl_username and self.sasl_password), "KAFKA_SASL_USERNAME",
                 "SASL needs FRESHET_KAFKA_SASL_USERNAME and FRESHET_KAFKA_SASL_PASSWORD")
        if self.ssl_cafile:
            need(Path(self.ssl_cafile).is_file(), "KAFKA_SSL_CAFILE",
                 f"{self.ssl_cafile!r} is not a readable file")
        need(self.evaluation_leader in EVALUATION_LEADERS, "EVALUATION_LEADER",
             f"must be one of {EVALUATION_LEADERS}")
        need(100 <= self.evaluation_interval_ms <= 3_600_000, "EVALUATION_INTERVAL_MS",
             "must be 100..3600000 (ms between evaluation records)")
        out.extend(self._evaluation_problems())
        need(self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"), "LOG_LEVEL",
             "must be DEBUG, INFO, WARNING or ERROR")
        return out

    def label_config(self) -> LabelConfig:
        """The label engine's configuration from these settings."""

        return LabelConfig(window_ms=self.label_window_ms, skew_ms=self.label_skew_ms,
                           mode=self.label_mode, observe_ms=self.label_observe_ms,
                           eager_clicks=self.label_eager_clicks)

    def _label_problems(self) -> list[str]:
        # one place decides what label settings are valid: the label engine's own config
        names = {"window_ms": "LABEL_WINDOW_MS", "skew_ms": "LABEL_SKEW_MS",
                 "observe_ms": "LABEL_OBSERVE_MS", "mode": "LABEL_MODE"}
        try:
            self.label_config()
        except ValueError as exc:
            message = str(exc)
            field_name = next((n for n in names if message.startswith(n)), "window_ms")
            return [f"FRESHET_{names[field_name]}: {message}"]
        return []

    def eval_config(self) -> Any:
        """The evaluator's configuration (an ``evaluation.EvalConfig``) from these settings."""
        from evaluation.config import DriftConfig, EvalConfig, RoutingConfig, TriggerConfig

        return EvalConfig(
            routing=RoutingConfig(draws=self.routing_draws, seed=self.routing_seed,
                                  floor=self.routing_floor),
            drift=DriftConfig(reference_size=self.drift_reference_size,
                              psi_threshold=self.drift_psi_threshold),
            triggers=TriggerConfig(
                every_ms=self.retrain_every_ms or None,
                every_labels=self.retrain_every_labels or None,
                performance=self.retrain_performance,
                log_loss_margin=self.retrain_log_loss_margin,
                auc_margin=self.retrain_auc_margin))

    def _evaluation_problems(self) -> list[str]:
        # one place decides what evaluation settings are valid: the evaluator's own config
        names = {"draws": "ROUTING_DRAWS", "seed": "ROUTING_SEED", "floor": "ROUTING_FLOOR",
                 "reference_size": "DRIFT_REFERENCE_SIZE",
                 "psi_threshold": "DRIFT_PSI_THRESHOLD", "every_ms": "RETRAIN_EVERY_MS",
                 "every_labels": "RETRAIN_EVERY_LABELS", "performance": "RETRAIN_PERFORMANCE",
                 "log_loss_margin": "RETRAIN_LOG_LOSS_MARGIN",
                 "auc_margin": "RETRAIN_AUC_MARGIN"}
        try:
            self.eval_config()
        except ValueError as exc:
            message = str(exc)
            field_name = next((n for n in names if message.startswith(n)), "draws")
            return [f"FRESHET_{names[field_name]}: {message}"]
        return []

    def load_catalog(self) -> Any:
        """The feature catalog (a ``features.catalog.Catalog``) the workers and replay run."""
        from features.catalog import default_catalog, load_catalog

        if self.catalog:
            return load_catalog(self.catalog)
        return default_catalog(self.ctr_prior_clicks, self.ctr_prior_non_clicks)

    def _catalog_problems(self) -> list[str]:
        try:
            self.load_catalog()
        except ValueError as exc:
            return [f"FRESHET_CATALOG: {exc}"]
        return []

    def worker_instance(self) -> str:
        """This worker's identity: ``FRESHET_WORKER_ID``, else host and data folder.

        Stable across its restarts, unique per worker (each worker has its own data
        folder). It is the group's static member id and part of the transactional id.
        """
        import hashlib
        import socket

        return self.worker_id or hashlib.sha1(
            f"{socket.gethostname()}:{self.data_dir.resolve()}".encode(),
            usedforsecurity=False).hexdigest()[:12]

    def transactional_id(self) -> str:
        """This worker's transactional id: stable across its restarts, unique per worker.

        A restarted worker with the same id fences its dead predecessor at once (its
        open transaction is aborted), so consumers never wait for it to time out.
        """
        return f"{self.app_id}-{self.worker_instance()}"

    def topic(self, logical: str) -> str:
        """The broker topic name for a logical topic (prefix applied)."""
        return self.topic_prefix + self.topics[logical]

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka (confluent-kafka) connection settings, security included."""
        conf = {"bootstrap.servers": self.bootstrap_servers,
                "security.protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            conf.update({"sasl.mechanism": self.sasl_mechanism,
                         "sasl.username": self.sasl_username,
                         "sasl.password": self.sasl_password})
        if self.ssl_cafile:
            conf["ssl.ca.location"] = self.ssl_cafile
        return conf

    def to_env(self) -> dict[str, str]:
        """The ``FRESHET_*`` variables that reproduce these settings (all of them).

        >>> s = Settings(app_id="a1", partitions=2)
        >>> Settings.from_env(s.to_env()) == s
        True
        """
        env = {}
        for f in fields(self):
            if f.name == "topics":
                continue
            value = getattr(self, f.name)
            env[env_name(f.name)] = str(value).lower() if isinstance(value, bool) else str(value)
        for logical, name in self.topics.items():
            env[f"FRESHET_TOPIC_{logical.upper()}"] = name
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``FRESHET_*`` variables (unset ones keep their defaults)."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        problems: list[str] = []
        for f in fields(cls):
            if f.name == "topics":
                continue
            var = _ENV_NAMES.get(f.name, f.name.upper())
            raw = env.get(f"FRESHET_{var}")
            if raw is None or raw == "":
                continue
            conv = _converter(f.type)
            try:
                kwargs[f.name] = conv(raw)
            except ValueError:
                problems.append(f"FRESHET_{var}: {raw!r} is not a valid {_type_name(f.type)}")
        topics = dict(DEFAULT_TOPICS)
        for logical in DEFAULT_TOPICS:
            raw = env.get(f"FRESHET_TOPIC_{logical.upper()}")
            if raw:
                topics[logical] = raw
        kwargs["topics"] = topics
        if problems:
            raise SettingsError(_report(problems))
        return cls(**kwargs)


_ENV_NAMES = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP",
    "security_protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "KAFKA_SASL_MECHANISM",
    "sasl_username": "KAFKA_SASL_USERNAME",
    "sasl_password": "KAFKA_SASL_PASSWORD",
    "ssl_cafile": "KAFKA_SSL_CAFILE",
    "kafka_debug": "KAFKA_DEBUG",
}


def env_name(field_name: str) -> str:
    """The environment variable that sets a settings field."""
    if field_name == "topics":
        return "FRESHET_TOPIC_<NAME>"
    return "FRESHET_" + _ENV_NAMES.get(field_name, field_name.upper())


def _to_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _converter(type_name: Any) -> Callable[[str], Any]:
    name = str(type_name)
    if name == "int":
        return lambda s: int(s.strip().replace("_", ""))
    if name == "float":
        return float
    if name == "bool":
        return _to_bool
    if name == "Path":
        return Path
    return str


def _type_name(type_name: Any) -> str:
    return {"int": "integer", "float": "number", "bool": "boolean (true/false)",
            "Path": "path"}.get(str(type_name), "string")


def _report(problems: list[str]) -> str:
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"invalid freshet settings ({len(problems)} to fix):\n{lines}"
