"""The :class:`Simulation`: sessions, routing, slates, clicks and delivery order, chunk by chunk."""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from events.contracts import MAX_TS_MS
from freshet.generator.config import (
    _TAIL_ROOM_MS,
    GeneratorConfig,
    _check,
    _is_int,
    _normalize_weights,
)
from freshet.generator.records import MALFORMED_KINDS, GeneratedRecord, _corrupt, _dumps
from freshet.generator.world import World, _sigmoid


@dataclass(slots=True)
class _Requests:
    users: list[int]
    ts: list[int]
    sizes: list[int]
    models: list[int]


#: One record waiting for delivery: topic, key, value, event time, malformed kind and
#: the values of the shadow predictions delivered right after it.
_Row = tuple[str, bytes | None, bytes, int, str | None, tuple[bytes, ...]]


class Simulation:
    """The simulated world, run chunk by chunk; routing weights may change between chunks.

    The world (users, items, tastes) and every random stream are fixed by the
    config's seed; ``config.predictions`` is not used (each :meth:`step` says how many).
    The output is a function of the config and of the sequence of :meth:`step` sizes
    and :meth:`set_weights` calls. Ids keep counting across chunks, and a step returns
    only the records whose place in the delivery order is final: the others (late
    clicks, mostly) come with a later step or :meth:`flush`.

    >>> sim = Simulation(GeneratorConfig(users=20, items=30))
    >>> first = sim.step(100)
    >>> sim.set_weights({"model-a": 1.0})
    >>> sim.weights
    {'model-a': 1.0, 'model-b': 0.0}
    >>> records = first + sim.step(100) + sim.flush()
    >>> sum(r.topic == "predictions" for r in records)
    200
    """

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self._prng = random.Random(config.seed)
        rng = self._rng = np.random.default_rng(config.seed)
        # shadow scores draw from their own stream: they never move any other draw
        self._shadow_rng = np.random.default_rng([config.seed, 1])

        # The world: popularity, quality, taste, activity.
        world = self._world = World(config, rng)

        # Session state: every user's next session start.
        self._heap = [
            (config.start_ts_ms + int(self._prng.expovariate(a / config.session_gap_ms_mean)), u)
            for u, a in enumerate(world.activity)
        ]
        heapq.heapify(self._heap)
        self._weights: dict[str, float] = {}
        self._cum_weights: list[float] | None = None  # None: uniform
        self._last_model = 0
        self._route(config.routing_weights())

        # Counters (ids continue across steps) and the records held back.
        self._n_pred = self._n_req = self._n_click = self._n_bad = 0
        self._pending_sort: list[int] = []
        self._pending: list[_Row] = []

    @property
    def weights(self) -> dict[str, float]:
        """The current routing weights, normalized, one per served model.

        >>> Simulation(GeneratorConfig(models=("a", "b"))).weights
        {'a': 0.5, 'b': 0.5}
        """
        return dict(self._weights)

    @property
    def feature_sd(self) -> dict[str, float]:
        """Each logged feature's population standard deviation: ``drift_feature_shift``'s unit.

        >>> sorted(Simulation(GeneratorConfig(users=5, items=5)).feature_sd)
        ['item_popularity', 'user_ctr_prior']
        """
        return dict(self._world.feature_sd)

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Route the next steps' requests by ``weights``, checked like ``GeneratorConfig.weights``.

        >>> sim = Simulation(GeneratorConfig())
        >>> sim.set_weights({"model-a": 9, "model-b": 1, "unknown": 1})
        Traceback (most recent call last):
        ...
        ValueError: weights: unknown model 'unknown'; the served models are ('model-a', 'model-b')
        """
        config = self.config
        self._route(_normalize_weights("weights", weights, config.models, config.shadow_models))

    def _route(self, weights: dict[str, float]) -> None:
        self._weights = weights
        values = list(weights.values())
        if all(w == values[0] for w in values):  # uniform: the draw of the default config
            self._cum_weights = None
        else:
            self._cum_weights = np.cumsum(values).tolist()
            self._last_model = max(i for i, w in enumerate(values) if w > 0)

    def _draw_model(self) -> int:
        cum = self._cum_weights
        if cum is None:
            return self._prng.randrange(len(self._weights))
        # the first model whose cumulative weight exceeds the draw (zero weights never win)
        return min(bisect.bisect_right(cum, self._prng.random()), self._last_model)

    def _requests(self, predictions: int) -> _Requests:
        """Lay out requests user by user: sessions of requests, separated by idle gaps."""
        config, prng, heap = self.config, self._prng, self._heap
        out = _Requests([], [], [], [])
        stay = 1.0 - 1.0 / config.requests_per_session_mean
        slate_max = min(config.slate_max, config.items)
        slate_min = min(config.slate_min, slate_max)
        total = 0
        while total < predictions:
            t, user = heapq.heappop(heap)
            first = True
            while total < predictions and (first or prng.random() < stay):
                if not first:
                    t += 1_000 + int(prng.expovariate(1.0 / config.request_gap_ms_mean))
                first = False
                size = min(prng.randint(slate_min, slate_max), predictions - total)
                out.users.append(user)
                out.ts.append(t)
                out.sizes.append(size)
                out.models.append(self._draw_model())
                total += size
            gap = int(prng.expovariate(self._world.activity[user] / config.session_gap_ms_mean))
            heapq.heappush(heap, (t + 60_000 + gap, user))
        return out

    def step(self, predictions: int) -> list[GeneratedRecord]:
        """Simulate the next ``predictions`` served predictions; return what is ready to deliver.

        >>> sim = Simulation(GeneratorConfig(users=10, items=20, shadow_models=("s",)))
        >>> out = sim.step(50) + sim.flush()
        >>> sum(r.topic == "predictions" and b'"served":false' in r.value for r in out)
        50
        """
        return list(self._advance(predictions))

    def flush(self) -> list[GeneratedRecord]:
        """Every record still held back, in delivery order (the end of the stream).

        >>> Simulation(GeneratorConfig()).flush()
        []
        """
        rows, self._pending, self._pending_sort = self._pending, [], []
        return list(self._emit(rows))

    def _emit(self, rows: Iterable[_Row]) -> Iterator[GeneratedRecord]:
        for topic, key, value, ts, kind, shadows in rows:
            yield GeneratedRecord(topic=topic, key=key, value=value,
                                  ts=ts if kind is None else None, malformed=kind)
            for shadow in shadows:
                yield GeneratedRecord(topic="predictions", key=key, value=shadow, ts=ts)

    def _advance(self, predictions: int) -> Iterator[GeneratedRecord]:
        """Simulate ``predictions`` served predictions now; the records come lazily."""
        _check(_is_int(predictions) and predictions >= 0,
               f"predictions must be an integer >= 0, got {predictions!r}")
        config, prng, rng, world = self.config, self._prng, self._rng, self._world
        seed = config.seed
        j0, r0, c0, b0 = self._n_pred, self._n_req, self._n_click, self._n_bad

        # Sessions and requests, then candidates, scores and slates.
        req = self._requests(predictions)
        n_req = len(req.users)
        if n_req and max(req.ts) >= MAX_TS_MS - _TAIL_ROOM_MS:
            raise ValueError("the simulated traffic runs past the year 2100: use more users,"
                             " fewer predictions, a shorter session_gap_ms_mean or an earlier"
                             " start_ts_ms")
        pool = min(config.items, 2 * config.slate_max)
        cand = world.candidates(n_req, pool, rng)
        r_user = np.asarray(req.users, dtype=np.int64)
        r_model = np.asarray(req.models, dtype=np.int64)
        drift_at = config.drift_at_ms
        r_drift = (np.asarray(req.ts, dtype=np.int64) >= drift_at if drift_at is not None
                   else np.zeros(n_req, dtype=bool))
        relevance = world.relevance(r_user, cand)
        noise = np.asarray(config.noise_for_models())[r_model]
        if config.drift_noise:
            noise = noise + config.drift_noise * r_drift
        score_logit = relevance + noise[:, None] * rng.normal(0.0, 1.0, relevance.shape)
        order = np.argsort(-score_logit, axis=1, kind="stable")
        cand = np.take_along_axis(cand, order, axis=1)
        relevance = np.take_along_axis(relevance, order, axis=1)
        score_logit = np.take_along_axis(score_logit, order, axis=1)
        # Propensity: softmax probability of picking the item from the pool.
        soft = np.exp(score_logit - score_logit.max(axis=1, keepdims=True))
        propensity = np.clip(soft / soft.sum(axis=1, keepdims=True), 1e-6, 1.0)
        sizes = np.asarray(req.sizes, dtype=np.int64)
        shown = np.arange(pool)[None, :] < sizes[:, None]
        p_req = np.repeat(np.arange(n_req), sizes)
        p_pos = np.nonzero(shown)[1]
        p_item = cand[shown]
        p_score = np.round(_sigmoid(score_logit[shown]), 6)
        p_relevance = relevance[shown]
        p_click_prob = world.click_probability(p_relevance, p_pos)
        p_propensity = np.round(propensity[shown], 6)
        del cand, relevance, score_logit, soft, propensity, order, noise, shown  # free early
        n_pred = len(p_item)
        clicked = rng.random(n_pred) < p_click_prob
        has_features = rng.random(n_pred) < config.features_fraction
        req_has_propensity = (rng.random(n_req) < config.propensity_fraction).tolist()
        shadow_scores = self._shadow_scores(p_relevance, r_drift[p_req])
        del p_relevance, p_click_prob

        # Clicks: delay (lognormal body + late tail), skew, attribution.
        c_pred = np.nonzero(clicked)[0]
        n_clicks = len(c_pred)
        tail = rng.random(n_clicks) < config.click_tail_fraction
        delay = np.where(
            tail,
            rng.lognormal(math.log(config.click_tail_median_ms), 0.6, n_clicks),
            rng.lognormal(math.log(config.click_delay_median_ms), config.click_delay_sigma,
                          n_clicks),
        )
        delay = np.maximum(delay, 50.0).astype(np.int64)
        skewed = rng.random(n_clicks) < config.click_skew_fraction
        skew = rng.integers(1, max(config.max_click_skew_ms, 1) + 1, n_clicks)
        delay = np.where(skewed, -skew, delay)
        attribution = rng.random(n_clicks)
        share_pred, share_req, _ = config.attribution

        # Valid records, in generation order.
        r_ts, r_models, r_users = req.ts, req.models, req.users
        r_drift_list = r_drift.tolist()
        models, shadow_models = config.models, config.shadow_models
        user_ids, item_ids, user_keys = world.user_ids, world.item_ids, world.user_keys
        values: list[bytes] = []
        keys: list[bytes | None] = []
        ts_list: list[int] = []
        shadows: dict[int, tuple[bytes, ...]] = {}
        p_req_list, p_item_list = p_req.tolist(), p_item.tolist()
        shadow_rows = shadow_scores.tolist() if shadow_models else None
        for j, (r, pos, item, score, prop, feats) in enumerate(zip(
            p_req_list, p_pos.tolist(), p_item_list, p_score.tolist(),
            p_propensity.tolist(), has_features.tolist(), strict=True,
        )):
            user = r_users[r]
            obj: dict[str, Any] = {
                "prediction_id": f"pred-{seed}-{j0 + j:08d}",
                "request_id": f"req-{seed}-{r0 + r:07d}",
                "user_id": user_ids[user],
                "item_id": item_ids[item],
                "model_id": models[r_models[r]],
                "score": score,
                "ts": r_ts[r],
                "position": pos,
            }
            features: dict[str, float] | None = None
            if feats:
                drifted = r_drift_list[r]
                features = {"user_ctr_prior": world.user_prior[drifted][user],
                            "item_popularity": world.item_popularity[drifted][item]}
            if shadow_rows is not None:
                shadows[j] = tuple(
                    _dumps(_shadow(obj, f"pred-{seed}-{j0 + j:08d}-s{k}", shadow, s, features))
                    for k, (shadow, s) in enumerate(zip(shadow_models, shadow_rows[j],
                                                        strict=True)))
            if req_has_propensity[r]:
                obj["propensity"] = prop
            if features is not None:
                obj["features"] = features
            values.append(_dumps(obj))
            keys.append(user_keys[user])
            ts_list.append(r_ts[r])
        n_valid_pred = len(values)
        for c, (j, d, a) in enumerate(zip(c_pred.tolist(), delay.tolist(), attribution.tolist(),
                                          strict=True)):
            r = p_req_list[j]
            click: dict[str, Any] = {
                "user_id": user_ids[r_users[r]],
                "item_id": item_ids[p_item_list[j]],
                "ts": r_ts[r] + d,
                "click_id": f"click-{seed}-{c0 + c:07d}",
            }
            if a < share_pred + share_req:
                click["request_id"] = f"req-{seed}-{r0 + r:07d}"
            if a < share_pred:
                click["prediction_id"] = f"pred-{seed}-{j0 + j:08d}"
            values.append(_dumps(click))
            keys.append(keys[j])
            ts_list.append(click["ts"])
        n_valid = len(values)

        # Malformed records: broken copies of valid ones, spread over both topics.
        malformed: list[str | None] = [None] * n_valid
        topics = ["predictions"] * n_valid_pred + ["clicks"] * (n_valid - n_valid_pred)
        f = config.malformed_fraction
        n_bad = round(n_valid * f / (1.0 - f)) if n_valid else 0
        for b in range(n_bad):
            t = prng.randrange(n_valid)
            topic = "predictions" if t < n_valid_pred else "clicks"
            kind = prng.choice(MALFORMED_KINDS[topic])
            template = orjson.loads(values[t])
            values.append(_corrupt(topic, template, kind, f"bad-{seed}-{b0 + b:07d}", prng))
            keys.append(keys[t] if prng.random() < 0.75 else None)
            ts_list.append(ts_list[t])
            malformed.append(kind)
            topics.append(topic)
        self._n_pred, self._n_req = j0 + n_pred, r0 + n_req
        self._n_click, self._n_bad = c0 + n_clicks, b0 + n_bad

        # Delivery order: event time plus a jitter below the disorder bound, merged with
        # the records held back; deliver what no later step can precede.
        sort_ts = np.asarray(ts_list, dtype=np.int64)
        if config.max_disorder_ms > 0:
            sort_ts = sort_ts + rng.integers(0, config.max_disorder_ms, len(ts_list))
        held, held_sort = self._pending, self._pending_sort
        n_held = len(held)
        all_sort = np.concatenate([np.asarray(held_sort, dtype=np.int64), sort_ts])
        order_all = np.argsort(all_sort, kind="stable")
        # later steps start no request before the earliest next session, and stamp no
        # record more than max_click_skew_ms before its request
        horizon = self._heap[0][0] - config.max_click_skew_ms if self._heap else MAX_TS_MS
        cut = int(np.searchsorted(all_sort[order_all], horizon, side="left"))

        def row(i: int) -> _Row:
            if i < n_held:
                return held[i]
            k = i - n_held
            return (topics[k], keys[k], values[k], ts_list[k], malformed[k],
                    shadows.get(k, ()))

        later = order_all[cut:].tolist()
        self._pending = [row(i) for i in later]
        self._pending_sort = all_sort[later].tolist()
        return self._emit(row(i) for i in order_all[:cut].tolist())

    def _shadow_scores(
        self, relevance: npt.NDArray[np.float64], drifted: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.float64]:
        """Each shadow model's score of each served prediction (rows: predictions)."""
        config = self.config
        n_shadow = len(config.shadow_models)
        if not n_shadow:
            return np.empty((len(relevance), 0))
        noise = np.broadcast_to(np.asarray(config.noise_for_shadows()),
                                (len(relevance), n_shadow))
        if config.drift_noise:
            noise = noise + config.drift_noise * drifted[:, None]
        draws = self._shadow_rng.normal(0.0, 1.0, (len(relevance), n_shadow))
        scores: npt.NDArray[np.float64] = np.round(
            _sigmoid(relevance[:, None] + noise * draws), 6)
        return scores


def _shadow(served: dict[str, Any], prediction_id: str, model: str, score: float,
            features: dict[str, float] | None) -> dict[str, Any]:
    """The shadow prediction of ``model`` for the served prediction ``served``."""
    obj: dict[str, Any] = {
        "prediction_id": prediction_id,
        "request_id": served["request_id"],
        "user_id": served["user_id"],
        "item_id": served["item_id"],
        "model_id": model,
        "score": score,
        "ts": served["ts"],
        "position": served["position"],
    }
    if features is not None:
        obj["features"] = features
    obj["served"] = False
    return obj
