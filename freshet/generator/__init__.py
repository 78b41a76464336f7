"""Synthetic ``predictions`` and ``clicks`` streams for tests, demos and benchmarks.

The generator is pure: it reads no clock and talks to no broker, and all randomness
comes from generators seeded with :attr:`GeneratorConfig.seed`, so one config always
gives byte-identical records. :mod:`freshet.producer` sends them to Kafka;
:func:`write_jsonl` writes them to files.

The simulated world:

* ``users`` users and ``items`` items. Item popularity follows a Zipf law
  (exponent ``zipf_s``); each user also has a taste vector, so the same item is
  more relevant to some users than to others.
* Users come in sessions: bursts of requests a few seconds apart, separated by idle
  gaps of about ``session_gap_ms_mean`` (shorter for more active users). A request
  scores a pool of candidate items with one of ``models`` and serves the top few
  (a slate) as predictions that share a ``request_id`` and carry their ``position``.
* Routing: each request is served by a model drawn with the routing ``weights``
  (uniform by default). :class:`Simulation` runs the world chunk by chunk and takes
  new weights between chunks (:meth:`Simulation.set_weights`, or the
  ``weights_source`` callable of :func:`stream`), as a bandit's routing would.
* Each item shown has a true click probability (user, item and taste terms, minus
  a position penalty). Model ``i`` scores it as that relevance plus Gaussian noise
  of ``model_noise[i]`` logits, so ``model-a`` ranks better than ``model-b``: its
  served slates hold more relevant items (a higher CTR) and its scores a higher AUC.
* Shadow models (``shadow_models``) score every served prediction too, with their
  own noise (``shadow_noise``), and log it as a prediction with ``"served": false``
  right after the served one: same ``request_id``, ``user_id``, ``item_id``, ``ts``
  and ``position``, the same logged ``features``, no ``propensity``, its own
  ``prediction_id`` and ``score``. Shadow scores come from their own random stream
  and never change anything else: the served predictions and clicks are exactly
  those of the same config without shadows.
* Clicks are drawn from the true probability. Their delay is lognormal (median
  ``click_delay_median_ms``) with a long tail (``click_tail_fraction`` of clicks
  come about an hour later), and a few clicks are stamped slightly *before* their
  prediction (client clock skew). Clicks carry ``prediction_id`` and
  ``request_id``, only ``request_id``, or neither, in the ``attribution`` shares.
* Some requests log a ``propensity``; some predictions log the ``features`` the
  model saw ("log and wait"): ``user_ctr_prior`` (the user's true average click
  probability, 4 decimals) and ``item_popularity`` (the item's Zipf share, 6
  decimals), see :data:`LOGGED_FEATURES`.
* Drift (``drift_at_ms``): from that event time on (requests with
  ``ts >= drift_at_ms``), exactly two things change. (1) Every logged feature named
  in ``drift_features`` is shifted by ``drift_feature_shift`` times its standard
  deviation over its population (users for ``user_ctr_prior``, items for
  ``item_popularity``; :attr:`Simulation.feature_sd`), then rounded as before; the
  world itself (who clicks what) does not change, only what the models log, so a
  PSI over the logged features fires. (2) Every model's score noise, served and
  shadow, grows by ``drift_noise`` logits, so each model ranks and scores worse:
  its log-loss rises, its AUC and its served CTR drop (a performance-drop trigger).
  The predictions before ``drift_at_ms``, and which of them get clicked, are exactly
  those of the same config without drift (click delays, attribution and delivery
  jitter come from draws shared with the later records, so they may differ).
* Optionally, ``malformed_fraction`` of the served predictions, clicks and
  malformed records together are broken copies of valid served predictions or
  clicks, each tagged with the kind of damage (see :data:`MALFORMED_KINDS`);
  shadow predictions are never broken.

Records come out in delivery order: event-time order with bounded disorder, where
no record is delivered after one whose event time exceeds its own by
``max_disorder_ms`` or more; this holds across the chunks of a :class:`Simulation`
too, which holds back a record until no later chunk can deliver one before it.

>>> records = list(generate(GeneratorConfig(predictions=20, users=5, items=10)))
>>> sum(r.topic == "predictions" for r in records)
20
>>> records == list(generate(GeneratorConfig(predictions=20, users=5, items=10)))
True
"""

from __future__ import annotations

from freshet.generator.config import GeneratorConfig
from freshet.generator.jsonl import read_jsonl, write_jsonl
from freshet.generator.records import LOGGED_FEATURES, MALFORMED_KINDS, TOPICS, GeneratedRecord
from freshet.generator.simulation import Simulation
from freshet.generator.streaming import WeightsSource, generate, stream

__all__ = [
    "LOGGED_FEATURES",
    "MALFORMED_KINDS",
    "TOPICS",
    "GeneratedRecord",
    "GeneratorConfig",
    "Simulation",
    "WeightsSource",
    "generate",
    "read_jsonl",
    "stream",
    "write_jsonl",
]
