"""``freshet train``: the reference continual trainer over ``training-examples``.

Reads the topic (read_committed, with ``label-watermarks``) or JSONL files
(``--examples``), applies matured examples in label order to a
:class:`training.ContinualTrainer` (progressive validation), checkpoints versions
with lineage to the checkpoint folder and ``model-versions``, and continues from its
latest checkpoint after a restart, losing and repeating no example. SIGINT/SIGTERM:
checkpoint and stop. Settings: ``FRESHET_TRAIN_*`` (see :func:`train_settings`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from events.timing import END_OF_TIME_MS

if TYPE_CHECKING:
    from training import TrainerConfig

log = logging.getLogger("freshet.train")

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
#: TrainerConfig fields, their FRESHET_TRAIN_* variables and --flags.
_CONFIG_FIELDS = ("optimizer", "learning_rate", "intercept_lr", "l2", "checkpoint_every",
                  "auc_window", "recent_k", "alpha", "min_margin")


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """What ``freshet train`` needs besides the shared settings (validated, all problems at once).

    >>> TrainSettings(Path("var/trainer"), "model-versions", 0, 10.0).label_partitions
    0
    >>> TrainSettings(Path("x"), "bad topic!", -1, 10.0)
    Traceback (most recent call last):
    ...
    ValueError: invalid freshet train settings (2 to fix):
      - FRESHET_TOPIC_MODEL_VERSIONS: 'bad topic!' is not a valid Kafka topic name
      - FRESHET_TRAIN_LABEL_PARTITIONS: must be 0 (the partitions of predictions) or 1..1024
    """

    checkpoint_dir: Path
    model_versions_topic: str
    label_partitions: int
    log_every_s: float
    trainer: TrainerConfig | None = None  # None: the defaults

    def __post_init__(self) -> None:
        problems = []
        if not _TOPIC_RE.fullmatch(self.model_versions_topic):
            problems.append(f"FRESHET_TOPIC_MODEL_VERSIONS: {self.model_versions_topic!r} is "
                            "not a valid Kafka topic name")
        if not 0 <= self.label_partitions <= 1024:
            problems.append("FRESHET_TRAIN_LABEL_PARTITIONS: must be 0 (the partitions of "
                            "predictions) or 1..1024")
        if not 0.5 <= self.log_every_s <= 3600:
            problems.append("FRESHET_TRAIN_LOG_EVERY_S: must be 0.5..3600 (s between progress "
                            "lines)")
        if problems:
            raise ValueError(_report(problems))


def _report(problems: list[str]) -> str:
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"invalid freshet train settings ({len(problems)} to fix):\n{lines}"


def _env_var(name: str) -> str:
    return f"FRESHET_TRAIN_{name.upper()}"


def train_settings(args: argparse.Namespace, env: Mapping[str, str], data_dir: Path,
                   topic_prefix: str, topics: Mapping[str, str] | None = None) -> TrainSettings:
    """Flags over ``FRESHET_TRAIN_*`` over defaults; ValueError listing every problem.

    ``topics``: logical -> broker name (prefixed) of the topics the shared settings know;
    ``model_versions`` is taken from there when they have it, else from
    ``FRESHET_TOPIC_MODEL_VERSIONS`` here.
    """
    topics = topics or {}
    from training import TrainerConfig

    problems: list[str] = []
    config: dict[str, Any] = {}
    types = {f.name: str(f.type) for f in fields(TrainerConfig)}

    def value(where: str, raw: str, kind: str) -> Any:
        try:
            return int(raw.replace("_", "")) if kind == "int" else float(raw)
        except ValueError:
            problems.append(f"{where}: {raw!r} is not a valid "
                            f"{'integer' if kind == 'int' else 'number'}")
            return None

    for name in _CONFIG_FIELDS:
        flag = getattr(args, name, None)
        raw = flag if flag is not None else env.get(_env_var(name)) or None
        if raw is None:
            continue
        where = f"--{name.replace('_', '-')}" if flag is not None else _env_var(name)
        parsed: Any = value(where, str(raw), types[name]) if types[name] in ("int", "float") \
            else raw
        if parsed is None:
            continue
        try:
            TrainerConfig(**{name: parsed})  # each field on its own: every problem reported
            config[name] = parsed
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    parts = value("FRESHET_TRAIN_LABEL_PARTITIONS",
                  env.get("FRESHET_TRAIN_LABEL_PARTITIONS") or "0", "int")
    every = value("FRESHET_TRAIN_LOG_EVERY_S", env.get("FRESHET_TRAIN_LOG_EVERY_S") or "10",
                  "float")
    folder = args.checkpoint_dir or env.get("FRESHET_TRAIN_CHECKPOINT_DIR") or data_dir / "trainer"
    topic = topics.get("model_versions") or topic_prefix + (
        env.get("FRESHET_TOPIC_MODEL_VERSIONS") or "model-versions")
    if problems:  # the rest cannot be checked with values missing
        raise ValueError(_report(problems))
    return TrainSettings(Path(folder), topic, parts, every, TrainerConfig(**config))


def add_parser(sub: Any) -> None:
    """Register ``freshet train`` on the CLI's subparsers."""
    from training.config import OPTIMIZERS

    p = sub.add_parser("train", help="continual trainer over training-examples (topic or files)")
    p.add_argument("--examples", nargs="+", metavar="FILE", default=None,
                   help="JSONL files of training examples (default: the topic)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="checkpoint folder (FRESHET_TRAIN_CHECKPOINT_DIR; default "
                        "FRESHET_DATA_DIR/trainer)")
    p.add_argument("--until-end", action="store_true",
                   help="topic mode: stop once the topics are read up to their end at start-up")
    p.add_argument("--publish", action="store_true",
                   help="file mode: publish versions to model-versions too (needs the broker)")
    p.add_argument("--learned-log", default=None, metavar="FILE",
                   help="append one JSON line per example learned (debugging, tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (file mode)")
    p.add_argument("--debug-delay-ms", type=float, default=0.0,
                   help="testing aid: sleep this long after each example learned")
    for name in _CONFIG_FIELDS:
        choices = list(OPTIMIZERS) if name == "optimizer" else None
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, choices=choices,
                       help=f"trainer setting (env {_env_var(name)})")
    p.set_defaults(func=cmd_train)


class _Stop:
    """Set by SIGINT/SIGTERM: the run checkpoints and stops at the next example."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            log.warning("%s again: stopping now, without a checkpoint (a restart resumes from "
                        "the last one)", name)
            raise SystemExit(128 + signum)
        log.info("%s: checkpointing and stopping", name)
        self.requested = True


class TrainRun:
    """One trainer process: a source, the label-order feed, the trainer and its checkpoints."""

    def __init__(self, source: Any, store: Any, publisher: Any, ts: TrainSettings,
                 stop: _Stop, learned_log: IO[str] | None = None, delay_ms: float = 0.0,
                 progress: bool = False) -> None:
        self.source, self.store, self.publisher, self.ts = source, store, publisher, ts
        self.stop, self.learned_log, self.delay_ms = stop, learned_log, delay_ms
        self.progress = progress
        self.versions = 0
        self.invalid = 0

    def _open(self) -> tuple[Any, Any]:
        from streams.trainer_io import TrainIOError
        from training import ContinualTrainer
        from training.feed import LabelOrderFeed

        stored = self.store.load()
        desc = self.source.describe()
        parts = self.ts.label_partitions or self.source.label_partitions()
        if stored is None:
            log.info("no checkpoint in %s: training from scratch", self.store.directory)
            return ContinualTrainer(self.ts.trainer), LabelOrderFeed(parts)
        if stored.input != desc:
            raise TrainIOError(f"the checkpoint in {self.store.directory} was made from "
                               f"{stored.input}, this run reads {desc}: use another "
                               "--checkpoint-dir, or delete that folder to start over")
        trainer = ContinualTrainer.restore(stored.state)
        if self.ts.trainer is not None and trainer.config != self.ts.trainer:
            raise TrainIOError(f"the checkpoint in {self.store.directory} was made with "
                               f"{trainer.config}, this run has {self.ts.trainer} (flags, "
                               "FRESHET_TRAIN_*): use another --checkpoint-dir for other "
                               "settings")
        feed = LabelOrderFeed.resume(stored.record["position"])
        if feed.label_partitions != parts:
            raise TrainIOError(f"the checkpoint combines {feed.label_partitions} label "
                               f"partitions, this run {parts} (FRESHET_TRAIN_LABEL_PARTITIONS)")
        log.info("restored version %d from %s: %d examples seen, resuming",
                 stored.version, self.store.path, trainer.examples_seen)
        if self.publisher is not None:
            self.publisher.reconcile(self.store, stored.version)
        return trainer, feed

    def _persist(self, cp: Any) -> None:
        self.store.save(cp, self.source.describe())
        if self.publisher is not None:
            self.publisher.publish(cp.record)
        self.versions += 1
        r, m = cp.record, cp.record["metrics"]
        log.info("version %d (parent %s): %d examples (+%d), prediction_ts %s, progressive "
                 "log-loss %s, AUC %s; %s", r["version"], r["parent"], r["examples_seen"],
                 r["examples_since_parent"], r["prediction_ts_range"],
                 _fmt(m["progressive_log_loss"]), _fmt(m["progressive_auc"]), r["reason"])
        if r["promoted"]:
            log.info("champion is now version %d", r["version"])

    def run(self) -> dict[str, Any]:
        """Train until the input ends (files, ``--until-end``) or a signal; the summary."""
        import orjson
        from tqdm import tqdm

        trainer, feed = self._open()
        self.source.start(feed, lambda: self.stop.requested)
        bar = tqdm(total=feed.held, unit="ex", desc="train", disable=not self.progress,
                   mininterval=0.5)
        last_log, last_seen = time.monotonic(), trainer.examples_seen
        more = not self.stop.requested
        while more and not self.stop.requested:
            more = self.source.fill(feed)
            for value, position in feed.mature():
                try:
                    res = trainer.process(orjson.loads(value), position)
                except ValueError as exc:  # orjson's error is a ValueError too
                    self.invalid += 1
                    if self.invalid <= 10:
                        log.warning("skipping a training example that breaks the contract: %s",
                                    exc)
                    res = None
                bar.update(1)
                if res is not None:
                    if self.learned_log is not None:
                        self.learned_log.write(json.dumps(
                            {"prediction_id": res.prediction_id, "examples_seen": res.examples_seen,
                             "score": res.score, "label": res.label}) + "\n")
                    if res.checkpoint is not None:
                        self._persist(res.checkpoint)
                    if self.delay_ms:
                        time.sleep(self.delay_ms / 1000)
                if self.stop.requested:
                    break
                if feed.counters["applied"] % 1024 == 0:
                    last_log, last_seen = self._progress(trainer, feed, last_log, last_seen)
            last_log, last_seen = self._progress(trainer, feed, last_log, last_seen)
        bar.close()
        if trainer.since_checkpoint > 0:
            trainer.position = feed.position()
            self._persist(trainer.checkpoint())
        m = trainer.metrics()
        return {"examples_seen": trainer.examples_seen, "versions_written": self.versions,
                "version": None if trainer.last_version is None else trainer.last_version.version,
                "champion_version": trainer.champion_version,
                "progressive_log_loss": m["progressive_log_loss"],
                "progressive_auc": m["progressive_auc"], "held": feed.held,
                "stopped": "signal" if self.stop.requested else "end of input",
                "checkpoint": str(self.store.path), "feed": dict(feed.counters),
                "invalid_watermarks": getattr(self.source, "invalid_watermarks", 0),
                "invalid": self.invalid}


    def _progress(self, trainer: Any, feed: Any, last_log: float,
                  last_seen: int) -> tuple[float, int]:
        """A progress line every ``log_every_s`` (when there is no progress bar)."""
        now = time.monotonic()
        if self.progress or now - last_log < self.ts.log_every_s:
            return last_log, last_seen
        rate = (trainer.examples_seen - last_seen) / (now - last_log)
        wm = feed.applied_watermark if feed.maturing is None else feed.maturing
        log.info("learned %d (%.0f/s), held %d, label watermark %s, versions %d",
                 trainer.examples_seen, rate, feed.held, "end" if wm == END_OF_TIME_MS else wm,
                 self.versions)
        return now, trainer.examples_seen


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def cmd_train(args: argparse.Namespace) -> int:
    """``freshet train``: validate the settings, then run until the input ends or a signal."""
    from freshet.settings import Settings, SettingsError
    from streams.startup import StartupError, wait_for_broker
    from streams.trainer_io import (
        CheckpointStore,
        FileExampleSource,
        KafkaExampleSource,
        TrainIOError,
        VersionPublisher,
    )

    try:
        settings = Settings.from_env()
        known = {"model_versions": settings.topic("model_versions")} \
            if "model_versions" in settings.topics else {}
        ts = train_settings(args, os.environ, settings.data_dir, settings.topic_prefix, known)
    except (SettingsError, ValueError) as exc:
        raise SystemExit(f"freshet train: {exc}") from None
    files = [Path(f) for f in args.examples] if args.examples else None
    if files is not None and args.until_end:
        raise SystemExit("freshet train: --until-end is for the topic; files always end")
    from freshet.memory_trim import limit_arenas, start_trimming

    limit_arenas(settings.malloc_arena_max)
    start_trimming(settings.malloc_trim_interval_ms)
    stop = _Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    store = CheckpointStore(ts.checkpoint_dir)
    learned = open(args.learned_log, "a", buffering=1) if args.learned_log else None  # noqa: SIM115
    source: Any = None
    try:
        store.acquire()
        if files is None or args.publish:
            wait_for_broker(settings)
        source = FileExampleSource(files) if files is not None else \
            KafkaExampleSource(settings, until_end=args.until_end)
        publisher = None
        if files is None or args.publish:
            publisher = VersionPublisher(settings, ts.model_versions_topic)
            publisher.ensure_topic()
        run = TrainRun(source, store, publisher, ts, stop, learned, args.debug_delay_ms,
                       progress=files is not None and not args.no_progress and sys.stderr.isatty())
        summary = run.run()
    except (TrainIOError, StartupError) as exc:
        raise SystemExit(f"freshet train: {exc}") from None
    finally:
        if source is not None:
            source.close()
        store.release()
        if learned is not None:
            learned.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(json.dumps(summary))
    return 0
