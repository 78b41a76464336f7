"""The evaluation stage: matured labels in, model evaluation records out.

The evaluator (:class:`evaluation.Evaluator`) is global: it needs every partition's
labels and the minimum label watermark over all of them. So one worker of the app is
the evaluation **leader**: the one the consumer group ``<app_id>-evaluation`` gives
the single partition of ``<app_id>-evaluation-leader`` (Kafka's group protocol is the
election; a dead leader's partition moves after its session timeout). The leader
reads ``labels``, ``training-examples`` and ``label-watermarks`` (read_committed,
:class:`streams.label_feed.LabelFeed`), advances the evaluator to each new global
label watermark at most once per ``FRESHET_EVALUATION_INTERVAL_MS``, and writes
``model-metrics``, ``model-comparisons``, ``model-routing``, ``drift`` and
``retrain-triggers`` in one transaction per advance. Every leader uses one
transactional id, so a new leader fences a stale one.

Its state (the evaluator, the input positions and per-partition label watermarks) is
checkpointed to ``<data_dir>/evaluation/state.bin`` after each advance (atomically),
so a restarted leader continues where it was. A leader without a checkpoint (another
host, a lost disk) reads the label topics from their start; since every record at
``T`` is a function of the labels below ``T`` only, it writes the same records again.

Every worker also follows the stage's outputs (:class:`OutputsTail`) for ``GET /routing``
and the per-model summary in ``/stats``, wherever the leader runs: in any worker, or
(``FRESHET_EVALUATION_LEADER=process``) only in ``freshet evaluate`` processes.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any, TypedDict

import orjson
from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    TopicPartition,
)

from engine.records import Out
from evaluation import Evaluator
from freshet.settings import Settings
from freshet.topics import EVALUATION_LEADER, internal_topic
from streams import kafka
from streams.changelog import watermarks
from streams.label_feed import LabelFeed, Positions, feed_consumer, topic_partitions
from streams.loops import Loop
from streams.transactions import ProducerFenced, TransactionAborted, Transactions

log = logging.getLogger(__name__)

#: logical output topic of each evaluation record kind
OUTPUT_TOPICS = {"model-metrics": "model_metrics", "model-comparisons": "model_comparisons",
                 "model-routing": "model_routing", "drift": "drift",
                 "retrain-triggers": "retrain_triggers"}
_MAGIC = b"freshet-evaluation-checkpoint\x00v1\x00"


class Checkpoint(TypedDict):
    """What ``state.bin`` holds: the evaluator with the input read up to ``positions``."""

    evaluator: bytes
    positions: Positions
    watermarks: dict[int, int]
    emitted_ms: int | None


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically (a reader sees the old or the new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(_MAGIC + pickle.dumps(ckpt, protocol=5))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path``, or None when there is none (or it is not ours)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if not data.startswith(_MAGIC):
        log.warning("evaluation: %s is not a checkpoint of this version; starting over", path)
        return None
    ckpt: Checkpoint = pickle.loads(data[len(_MAGIC):])
    return ckpt


class Leader:
    """The leader's work: read matured labels, advance, publish, checkpoint."""

    def __init__(self, settings: Settings, partitions: dict[str, int]) -> None:
        self.settings = settings
        self.path = settings.data_dir / "evaluation" / "state.bin"
        config = settings.eval_config()
        ckpt = load_checkpoint(self.path)
        self.evaluator = Evaluator(config)
        positions: Positions = {}
        watermarks: dict[int, int] = {}
        self.emitted_ms: int | None = None
        if ckpt is not None:
            try:
                self.evaluator = Evaluator.from_bytes(ckpt["evaluator"], config)
                positions, watermarks = ckpt["positions"], ckpt["watermarks"]
                self.emitted_ms = ckpt["emitted_ms"]
            except ValueError as exc:  # made under other settings: its numbers would lie
                log.warning("evaluation: checkpoint not used (%s); reading from the start", exc)
        self.feed = LabelFeed(settings, partitions, positions, watermarks,
                              self.evaluator.add_label, self.evaluator.add_training_example)
        # the worker's transactions: a broker outage is waited out, a fatal producer
        # error replaces the producer, a newer leader's producer fences this one
        self.txn = Transactions({**kafka.transactional_producer(settings),
                                 "transactional.id": f"{settings.app_id}-evaluation"},
                                {t: settings.topic(t) for t in OUTPUT_TOPICS.values()}, {},
                                wait_s=settings.broker_wait_ms / 1000)
        self.records_out = 0
        self._next_ms = 0.0
        log.info("evaluation: leader (from %s)", "a checkpoint" if ckpt else "the start")

    def step(self) -> None:
        """Read a bounded piece; on a completed round with a new T, publish and save."""
        target = self.feed.step()
        if target is not None:
            self.evaluator.mature(target)  # ignored when not past the current T
        at = self.evaluator.watermark_ms
        now = time.monotonic()
        # at most one publication per interval; the latest T is published once it elapses
        if at is None or at == self.emitted_ms or now < self._next_ms:
            return
        self._next_ms = now + self.settings.evaluation_interval_ms / 1000
        self.publish(self.evaluator.outputs(), at)

    def publish(self, outs: list[Any], at_ms: int) -> None:
        """One transaction with every record of the evaluator's state at ``at_ms``.

        An aborted one (e.g. a broker restart) is published again at the next
        interval; :class:`ProducerFenced` (a newer leader) is raised.
        """
        records = [Out(OUTPUT_TOPICS[out.topic], out.key.encode(), orjson.dumps(out.record))
                   for out in outs]
        try:
            self.txn.commit(records, (), {}, None)
        except TransactionAborted as exc:
            log.warning("evaluation: publication failed (%s); retrying at the next interval",
                        exc)
            return
        self.records_out += len(outs)
        self.emitted_ms = at_ms
        save_checkpoint(self.path, Checkpoint(
            evaluator=self.evaluator.to_bytes(), positions=self.feed.positions(),
            watermarks=self.feed.watermarks, emitted_ms=at_ms))

    def close(self) -> None:
        self.feed.close()
        self.txn.close()


class OutputsTail:
    """The stage's latest outputs, followed from near each topic's end (every worker).

    Keeps the latest ``model-routing`` record, each model's cumulative ``model-metrics``
    record and its latest ``retrain-triggers`` record: what ``GET /routing`` and
    ``/stats`` show, on any worker, wherever the leader runs.
    """

    #: records read back per partition at start (the latest snapshot is among them)
    BACKLOG = 200

    def __init__(self, settings: Settings) -> None:
        names = {settings.topic(t): t for t in ("model_routing", "model_metrics",
                                                "retrain_triggers")}
        self.kinds = names
        self.routing: dict[str, Any] | None = None
        self.metrics: dict[str, dict[str, Any]] = {}
        self.triggers: dict[str, dict[str, Any]] = {}
        self.consumer = Consumer({**feed_consumer(settings), "enable.partition.eof": False})
        tps = []
        # just-created topics answer "unknown partition" for a moment: asked again
        deadline = time.monotonic() + settings.broker_wait_ms / 1000
        for topic, parts in topic_partitions(settings, list(names)).items():
            back = 1 if names[topic] == "model_routing" else self.BACKLOG
            for p in range(parts):
                low, high = watermarks(self.consumer, (topic, p), deadline)
                tps.append(TopicPartition(topic, p, max(low, high - back) if high > low
                                          else OFFSET_END))
        self.consumer.assign(tps)

    def poll(self) -> None:
        """Take in what arrived (never blocks for long)."""
        for msg in self.consumer.consume(1_000, timeout=0.01):
            value = msg.value()
            if msg.error() is not None or value is None:
                continue
            try:
                rec = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("label_watermark_ms"), int):
                self._take(self.kinds.get(str(msg.topic()), ""), rec)

    def _take(self, kind: str, rec: dict[str, Any]) -> None:
        t = rec["label_watermark_ms"]
        if kind == "model_routing":
            if self.routing is None or t >= self.routing["label_watermark_ms"]:
                self.routing = rec
            return
        model = rec.get("model_id")
        if not isinstance(model, str):
            return
        table = self.triggers if kind == "retrain_triggers" else self.metrics
        if kind == "model_metrics" and (rec.get("kind") != "evaluation"
                                        or rec.get("window") != "all"):
            return
        old = table.get(model)
        if old is None or t >= old["label_watermark_ms"]:
            table[model] = rec

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per model: cumulative impressions, clicks, CTR, AUC, log-loss, shadow, trigger
        and the label watermark they are as of."""
        out = {}
        for model, m in sorted(self.metrics.items()):
            trig = self.triggers.get(model)
            out[model] = {k: m.get(k) for k in ("impressions", "clicks", "ctr", "auc",
                                                "log_loss", "shadow",
                                                "label_watermark_ms")} | {
                "trigger": None if trig is None else {
                    "sequence": trig.get("sequence"),
                    "reasons": [r.get("reason") for r in trig.get("reasons", [])]}}
        return out

    def close(self) -> None:
        self.consumer.close()


class EvaluationStage(Loop):
    """The stage's thread: the tail, and with ``lead`` the election and the leader's work.

    Workers run it with ``lead`` unless ``FRESHET_EVALUATION_LEADER=process``, where
    only ``freshet evaluate`` processes (``lead`` and no web server) may lead: the
    evaluator then has a process (and a core) of its own.
    """

    name = "freshet-evaluation"

    def __init__(self, settings: Settings, lead: bool = True) -> None:
        super().__init__()
        self.settings = settings
        self.lead = lead
        self.leader: Leader | None = None
        self.tail: OutputsTail | None = None
        self._elected = False

    @property
    def is_leader(self) -> bool:
        """Whether this worker runs the evaluator now."""
        return self.leader is not None

    def routing(self) -> dict[str, Any] | None:
        """The latest routing weights record, or None before the first one."""
        return self.tail.routing if self.tail is not None else None

    def run(self) -> None:
        """The tail and, with ``lead``, the election and the leader's work."""
        s = self.settings
        self.tail = OutputsTail(s)
        election = None
        if self.lead:
            names = [s.topic(t) for t in ("labels", "training_examples", "label_watermarks")]
            partitions = topic_partitions(s, names)
            election = Consumer({
                **kafka.base(s), "group.id": f"{s.app_id}-evaluation",
                "enable.auto.commit": False, "session.timeout.ms": s.session_timeout_ms,
                "heartbeat.interval.ms": max(1_000, s.session_timeout_ms // 4)})
            election.subscribe([internal_topic(s, EVALUATION_LEADER)],
                               on_assign=lambda c, ps: self._elect(bool(ps)),
                               on_revoke=lambda c, ps: self._elect(False))
        try:
            while not self._stop.is_set():
                if election is None:
                    self._stop.wait(0.2)
                else:
                    self._serve(election, partitions)
                self.tail.poll()
        finally:
            if self.leader is not None:
                self.leader.close()
            if election is not None:
                election.close()
            self.tail.close()

    def _serve(self, election: Consumer, partitions: dict[str, int]) -> None:
        """One round of the election and, when elected, of the leader's work."""
        for msg in election.consume(10, timeout=0.05 if self.leader else 0.2):
            err = msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                log.debug("evaluation election: %s", err)
        if self._elected and self.leader is None:
            self.leader = Leader(self.settings, partitions)
        elif not self._elected and self.leader is not None:
            self.leader.close()
            self.leader = None
            log.info("evaluation: no longer the leader")
        if self.leader is not None:
            try:
                self.leader.step()
            except ProducerFenced as exc:
                # another process leads with this app's transactional id (the election
                # moving): stop; if still elected, lead again (fencing the other) later
                log.warning("evaluation: %s", exc)
                self.leader.close()
                self.leader = None
                self._stop.wait(1.0)

    def _elect(self, elected: bool) -> None:
        self._elected = elected

    def stats(self) -> dict[str, Any]:
        """The stage's counters for ``/stats``."""
        lead = self.leader
        return {"leader": lead is not None,
                "label_watermark_ms": lead.emitted_ms if lead else None,
                "records_out": lead.records_out if lead else 0,
                "invalid_inputs": lead.feed.invalid if lead else 0,
                "evaluator": dict(lead.evaluator.counters) if lead else None,
                "models": self.tail.summary() if self.tail is not None else {},
                "routing": self.routing()}
