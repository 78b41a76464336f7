"""The simulated world: users, items, popularity, tastes, activity, and the click model."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from freshet.generator.config import GeneratorConfig
from freshet.generator.records import LOGGED_FEATURES

_TASTE_DIMS = 4


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-x))
    return out


def _candidates(
    n_requests: int, pool: int, cdf: npt.NDArray[np.float64], popularity: npt.NDArray[np.float64],
    rng: np.random.Generator, chunk: int = 8_192,
) -> npt.NDArray[np.int64]:
    """``pool`` distinct popularity-weighted candidate items per request."""
    n_items = len(cdf)
    out = np.empty((n_requests, pool), dtype=np.int64)
    for lo in range(0, n_requests, chunk):
        hi = min(lo + chunk, n_requests)
        draws = np.searchsorted(cdf, rng.random((hi - lo, 4 * pool)), side="right")
        for r, row in enumerate(np.minimum(draws, n_items - 1).tolist(), start=lo):
            distinct = list(dict.fromkeys(row))
            if len(distinct) >= pool:
                out[r] = distinct[:pool]
            else:  # rare: too few distinct items drawn; sample without replacement
                out[r] = rng.choice(n_items, size=pool, replace=False, p=popularity)
    return out


class World:
    """The users and items of a simulation, drawn once from the config's seed.

    Item popularity follows a Zipf law (exponent ``zipf_s``, over a random ranking of
    the items); every item has a quality and every user a bias (logits), and both
    have a taste vector; users differ in activity (lognormal, mean 1). A shown item's
    true click probability is the sigmoid of its relevance (base, user, item and
    taste terms) minus a position penalty. The logged features ("log and wait") are
    kept twice: as the models log them before drift, and shifted as after it.

    >>> world = World(GeneratorConfig(users=3, items=4), np.random.default_rng(0))
    >>> world.user_ids, len(world.item_ids), round(float(world.popularity.sum()), 9)
    (['user-00000', 'user-00001', 'user-00002'], 4, 1.0)
    """

    def __init__(self, config: GeneratorConfig, rng: np.random.Generator) -> None:
        n_users, n_items = config.users, config.items
        # popularity, quality, taste, activity: the draws' order is part of the output
        ranks = rng.permutation(n_items)
        zipf = 1.0 / (ranks + 1.0) ** config.zipf_s
        self.popularity: npt.NDArray[np.float64] = zipf / zipf.sum()
        self.cdf: npt.NDArray[np.float64] = np.cumsum(self.popularity)
        self.cdf[-1] = 1.0
        self.item_quality: npt.NDArray[np.float64] = rng.normal(0.0, 0.5, n_items)
        self.item_taste: npt.NDArray[np.float64] = rng.normal(0.0, 1.0, (n_items, _TASTE_DIMS))
        self.user_bias: npt.NDArray[np.float64] = rng.normal(0.0, 0.5, n_users)
        self.user_taste: npt.NDArray[np.float64] = rng.normal(0.0, 1.0, (n_users, _TASTE_DIMS))
        activity = rng.lognormal(0.0, 0.75, n_users)
        #: Each user's activity relative to the average user's (scales the session rate).
        self.activity: list[float] = (activity / activity.mean()).tolist()
        self.base_logit = math.log(config.base_ctr / (1.0 - config.base_ctr))
        self.taste_scale = config.taste_strength / math.sqrt(_TASTE_DIMS)
        self.position_decay = config.position_decay
        prior = _sigmoid(self.base_logit + self.user_bias)
        #: Each logged feature's population standard deviation (the unit of drift).
        self.feature_sd = {"user_ctr_prior": float(np.std(prior)),
                           "item_popularity": float(np.std(self.popularity))}
        shift = {name: config.drift_feature_shift * self.feature_sd[name]
                 if name in config.drift_features else 0.0 for name in LOGGED_FEATURES}
        #: Logged feature values per user / item: ``[False]`` before drift, ``[True]`` after.
        self.user_prior: tuple[list[float], list[float]] = (
            np.round(prior, 4).tolist(),
            np.round(prior + shift["user_ctr_prior"], 4).tolist())
        self.item_popularity: tuple[list[float], list[float]] = (
            np.round(self.popularity, 6).tolist(),
            np.round(self.popularity + shift["item_popularity"], 6).tolist())
        self.user_ids = [f"user-{u:05d}" for u in range(n_users)]
        self.user_keys = [u.encode() for u in self.user_ids]
        self.item_ids = [f"item-{i:05d}" for i in range(n_items)]

    def candidates(
        self, n_requests: int, pool: int, rng: np.random.Generator
    ) -> npt.NDArray[np.int64]:
        """``pool`` distinct popularity-weighted candidate items per request."""
        return _candidates(n_requests, pool, self.cdf, self.popularity, rng)

    def relevance(
        self, users: npt.NDArray[np.int64], items: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        """The true click logit of each candidate (``items``: rows of requests) for the
        request's user (``users``), before the position penalty."""
        relevance: npt.NDArray[np.float64] = (
            self.base_logit + self.user_bias[users][:, None] + self.item_quality[items]
            + self.taste_scale * np.einsum("rd,rcd->rc", self.user_taste[users],
                                           self.item_taste[items])
        )
        return relevance

    def click_probability(
        self, relevance: npt.NDArray[np.float64], positions: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        """The true click probability of items of ``relevance`` shown at ``positions``."""
        return _sigmoid(relevance - self.position_decay * positions)
