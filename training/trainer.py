"""The reference continual trainer: progressive validation, versions, champion/challenger.

Per example (in the order given: the caller gives label order), the live model
(challenger) and the frozen champion both score it, *then* the live model learns it.
Every ``checkpoint_every`` examples the live model becomes a new version: promoted to
champion when it beats the champion on the same recent examples (see
:mod:`training.champion`), the first version always (there is nothing to beat).

A :class:`Checkpoint` is a value: the version record (topic ``model-versions``, key the
version number), the live pipeline pickled (``model``, to serve) and the whole trainer
state (``state``). :meth:`ContinualTrainer.restore` continues from it exactly as if
the trainer had never stopped; the caller resumes its input right after the
checkpoint's ``position`` (an opaque JSON value it passed in with each example).
Pickles: restore only bytes this process family wrote.
"""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

from river import compose, linear_model, optim, preprocessing

from evaluation.records import parse_example
from evaluation.stats import log_loss_term
from events.contracts import SCHEMA_VERSION
from training.champion import paired_test
from training.config import TrainerConfig
from training.progressive import ProgressiveMetrics

_MAGIC = b"freshet-trainer\x00v1\x00"


def build_pipeline(config: TrainerConfig) -> compose.Pipeline:
    """``StandardScaler | LogisticRegression`` as configured.

    >>> build_pipeline(TrainerConfig()).predict_proba_one({"x": 1.0})[True]
    0.5
    """
    opt = {"sgd": optim.SGD, "adam": optim.Adam, "adagrad": optim.AdaGrad}[config.optimizer]
    lr = linear_model.LogisticRegression(optimizer=opt(config.learning_rate), l2=config.l2,
                                         intercept_lr=config.intercept_lr)
    return preprocessing.StandardScaler() | lr


def model_fingerprint(model: compose.Pipeline) -> str:
    """SHA-256 of the pipeline's parameters (scaler statistics, weights, intercept).

    Taken over a canonical JSON of exact float hex values rather than over pickle bytes,
    which are not canonical (a restored model pickles differently while equal).

    >>> p = build_pipeline(TrainerConfig())
    >>> model_fingerprint(p) == model_fingerprint(pickle.loads(pickle.dumps(p)))
    True
    """
    scaler, lr = model["StandardScaler"], model["LogisticRegression"]

    def exact(d: Any) -> dict[str, str]:
        return {str(k): float(v).hex() for k, v in sorted(d.items())}

    params = {"counts": {str(k): int(v) for k, v in sorted(scaler.counts.items())},
              "means": exact(scaler.means), "vars": exact(scaler.vars),
              "weights": exact(lr.weights), "intercept": float(lr.intercept).hex()}
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def _score(model: compose.Pipeline, x: dict[str, float]) -> float:
    return float(model.predict_proba_one(x)[True])


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One checkpointed version and its lineage (the ``model-versions`` record).

    >>> v = ModelVersion(1, None, 10, (1, 9), (5, 20), {}, 1, True, "first", {"line": 10}, "ab")
    >>> v.to_record()["prediction_ts_range"]
    [1, 9]
    """

    version: int
    parent: int | None
    examples_seen: int
    prediction_ts_range: tuple[int, int] | None
    label_ts_range: tuple[int, int] | None
    metrics: dict[str, Any]
    champion_version: int | None
    promoted: bool
    reason: str
    position: Any
    model_sha256: str
    examples_since_parent: int = 0
    schema_version: int = SCHEMA_VERSION

    def to_record(self) -> dict[str, Any]:
        """The JSON-ready record.

        >>> ModelVersion(2, 1, 5, None, None, {}, 1, False, "r", 3, "x").to_record()["parent"]
        1
        """
        return {
            "version": self.version,
            "parent": self.parent,
            "examples_seen": self.examples_seen,
            "examples_since_parent": self.examples_since_parent,
            "prediction_ts_range": (None if self.prediction_ts_range is None
                                    else list(self.prediction_ts_range)),
            "label_ts_range": None if self.label_ts_range is None else list(self.label_ts_range),
            "metrics": dict(self.metrics),
            "champion_version": self.champion_version,
            "promoted": self.promoted,
            "reason": self.reason,
            "position": self.position,
            "model_sha256": self.model_sha256,
            "schema_version": self.schema_version,
        }


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A version record, the pickled live pipeline, and the trainer state to restore.

    >>> cp = Checkpoint(ModelVersion(3, 2, 5, None, None, {}, 3, True, "r", 7, "x"), b"", b"")
    >>> cp.topic, cp.key, cp.record["position"]
    ('model-versions', '3', 7)
    """

    topic: ClassVar[str] = "model-versions"
    version: ModelVersion
    model: bytes
    state: bytes

    @property
    def key(self) -> str:
        """The record key: the version number.

        >>> Checkpoint(ModelVersion(4, 3, 5, None, None, {}, 3, False, "r", 0, "x"),
        ...            b"", b"").key
        '4'
        """
        return str(self.version.version)

    @property
    def record(self) -> dict[str, Any]:
        """The ``model-versions`` record.

        >>> Checkpoint(ModelVersion(1, None, 5, None, None, {}, 1, True, "r", 0, "x"),
        ...            b"", b"").record["version"]
        1
        """
        return self.version.to_record()


@dataclass(frozen=True, slots=True)
class ExampleResult:
    """What one example gave: progressive scores and losses, and a checkpoint if one fell.

    >>> ExampleResult("p", 1, 0.5, 0.69, None, None, 1, None).champion_score is None
    True
    """

    prediction_id: str
    label: int
    score: float
    log_loss: float
    champion_score: float | None
    champion_log_loss: float | None
    examples_seen: int
    checkpoint: Checkpoint | None


def _widen(rng: tuple[int, int] | None, value: int | None) -> tuple[int, int] | None:
    if value is None:
        return rng
    if rng is None:
        return (value, value)
    return (min(rng[0], value), max(rng[1], value))


class ContinualTrainer:
    """A River model learning from training examples, with progressive validation.

    >>> tr = ContinualTrainer(TrainerConfig(checkpoint_every=2))
    >>> ex = {"prediction_id": "p0", "label_version": 1, "model_id": "m", "score": 0.5,
    ...       "label": 1, "prediction_ts": 10, "label_ts": 20, "final": True,
    ...       "features": {"x": 1.0}}
    >>> tr.process(ex, 0).score          # scored before learning: an untrained model
    0.5
    >>> cp = tr.process({**ex, "prediction_id": "p1", "label": 0}, 1).checkpoint
    >>> cp.record["version"], cp.record["promoted"], cp.record["position"]
    (1, True, 1)
    >>> ContinualTrainer.restore(cp).examples_seen
    2
    """

    def __init__(self, config: TrainerConfig | None = None) -> None:
        self.config = config if config is not None else TrainerConfig()
        self.model = build_pipeline(self.config)
        self.champion: compose.Pipeline | None = None
        self.champion_version: int | None = None
        self.last_version: ModelVersion | None = None
        self.examples_seen = 0
        self.since_checkpoint = 0
        self.prediction_ts_range: tuple[int, int] | None = None
        self.label_ts_range: tuple[int, int] | None = None
        self.progressive = ProgressiveMetrics(self.config.auc_window)
        # (champion loss, challenger loss) of the last recent_k examples both scored,
        # since the current champion was promoted
        self.pairs: deque[tuple[float, float]] = deque(maxlen=self.config.recent_k)
        self.recent_losses: deque[float] = deque(maxlen=self.config.recent_k)
        self.position: Any = None

    def process(self, example: dict[str, Any], position: Any = None) -> ExampleResult | None:
        """Score (live and champion), then learn one example; None if it is not trained on.

        A shadow example (``served`` false) is skipped too: it repeats the features and
        outcome of the served impression of the same request and item, so learning it
        would count that impression twice. Raises ValueError (naming the field) for a
        record that breaks the contract.

        >>> ex = {"prediction_id": "p", "label_version": 1, "model_id": "m", "score": 0.5,
        ...       "label": 1, "prediction_ts": 1, "final": False}
        >>> ContinualTrainer().process(ex, 0) is None
        True
        """
        self.position = position
        ev = parse_example(example)
        if ev is None or not ev.served:
            return None
        x = dict(ev.features.items())  # river's models take dicts
        score = _score(self.model, x)
        loss = log_loss_term(score, ev.label)
        champion_score = champion_loss = None
        if self.champion is not None:
            champion_score = _score(self.champion, x)
            champion_loss = log_loss_term(champion_score, ev.label)
            self.pairs.append((champion_loss, loss))
        self.model.learn_one(x, bool(ev.label))  # only after every score above was taken
        self.examples_seen += 1
        self.since_checkpoint += 1
        self.progressive.add(score, ev.label, loss)
        self.recent_losses.append(loss)
        self.prediction_ts_range = _widen(self.prediction_ts_range, ev.prediction_ts)
        label_ts = example.get("label_ts")
        if isinstance(label_ts, int) and not isinstance(label_ts, bool):
            self.label_ts_range = _widen(self.label_ts_range, label_ts)
        checkpoint = None
        if self.since_checkpoint >= self.config.checkpoint_every:
            checkpoint = self.checkpoint()
        return ExampleResult(ev.prediction_id, ev.label, score, loss, champion_score,
                             champion_loss, self.examples_seen, checkpoint)

    def metrics(self) -> dict[str, Any]:
        """Progressive metrics now: log-loss (cumulative), AUC (last ``auc_window``).

        >>> ContinualTrainer().metrics()["progressive_log_loss"] is None
        True
        """
        recent = list(self.recent_losses)
        return {
            "progressive_log_loss": self.progressive.log_loss,
            "progressive_auc": self.progressive.auc(),
            "auc_window": self.config.auc_window,
            "recent_log_loss": sum(recent) / len(recent) if recent else None,
            "recent_examples": len(recent),
        }

    def checkpoint(self) -> Checkpoint:
        """Make a version of the live model now (also done every ``checkpoint_every``).

        >>> ContinualTrainer().checkpoint().record["reason"]
        'first version: promoted by default (no champion to beat)'
        """
        cfg = self.config
        parent = None if self.last_version is None else self.last_version.version
        version = 1 if parent is None else parent + 1
        figures: dict[str, Any] = {"paired_n": len(self.pairs), "paired_mean_improvement": None,
                                   "paired_p_value": None, "champion_recent_log_loss": None}
        if self.champion is None:
            promote, reason = True, "first version: promoted by default (no champion to beat)"
        elif len(self.pairs) < cfg.recent_k:
            promote = False
            reason = (f"not promoted: {len(self.pairs)} paired examples with champion "
                      f"{self.champion_version}, need {cfg.recent_k}")
        else:
            champ = [c for c, _ in self.pairs]
            test = paired_test(champ, [x for _, x in self.pairs], cfg.min_margin, cfg.alpha)
            figures.update(paired_mean_improvement=test.mean_improvement,
                           paired_p_value=test.p_value,
                           champion_recent_log_loss=sum(champ) / len(champ))
            promote = test.promote
            verdict = "promoted" if promote else "not promoted"
            reason = (f"{verdict}: log-loss improvement over champion {self.champion_version}"
                      f" {test.mean_improvement:.6g} on the last {test.n} examples, one-sided"
                      f" p={test.p_value:.3g} (margin {cfg.min_margin}, alpha {cfg.alpha})")
        if promote:
            self.champion = copy.deepcopy(self.model)  # frozen: it never learns again
            self.champion_version = version
            self.pairs.clear()  # pairs were against the previous champion
        model = pickle.dumps(self.model, protocol=5)
        examples_since = self.examples_seen - (
            0 if self.last_version is None else self.last_version.examples_seen)
        self.last_version = ModelVersion(
            version=version, parent=parent, examples_seen=self.examples_seen,
            prediction_ts_range=self.prediction_ts_range, label_ts_range=self.label_ts_range,
            metrics={**self.metrics(), **figures}, champion_version=self.champion_version,
            promoted=promote, reason=reason, position=self.position,
            model_sha256=model_fingerprint(self.model), examples_since_parent=examples_since)
        self.since_checkpoint = 0
        state = _MAGIC + pickle.dumps(self.__dict__, protocol=5)
        return Checkpoint(self.last_version, model, state)

    @classmethod
    def restore(cls, checkpoint: Checkpoint | bytes,
                config: TrainerConfig | None = None) -> ContinualTrainer:
        """The trainer exactly as it was at ``checkpoint`` (or its ``state`` bytes).

        With ``config``, the checkpoint must have been made with an equal one.

        >>> ContinualTrainer.restore(b"junk")
        Traceback (most recent call last):
        ...
        ValueError: not a serialized ContinualTrainer state
        >>> ContinualTrainer.restore(ContinualTrainer().checkpoint(), TrainerConfig(l2=0.1))
        Traceback (most recent call last):
        ...
        ValueError: config differs from the one the checkpoint was made with
        """
        data = checkpoint.state if isinstance(checkpoint, Checkpoint) else checkpoint
        if not data.startswith(_MAGIC):
            raise ValueError("not a serialized ContinualTrainer state")
        obj = cls.__new__(cls)
        obj.__dict__.update(pickle.loads(data[len(_MAGIC):]))
        if config is not None and config != obj.config:
            raise ValueError("config differs from the one the checkpoint was made with")
        return obj

    def weights(self) -> dict[str, float]:
        """The live logistic regression's weights and ``"intercept"`` (for inspection).

        >>> ContinualTrainer().weights()
        {'intercept': 0.0}
        """
        lr = self.model["LogisticRegression"]
        return {"intercept": float(lr.intercept), **{k: float(v) for k, v in lr.weights.items()}}
