"""Whole runs of a :class:`~freshet.generator.simulation.Simulation`: :func:`generate` and
:func:`stream` (chunks with routing weights polled between them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from freshet.generator.config import GeneratorConfig, _check, _is_int
from freshet.generator.records import GeneratedRecord
from freshet.generator.simulation import Simulation

#: What :func:`stream` polls before each chunk: new routing weights, or ``None`` to keep them.
WeightsSource = Callable[[], Mapping[str, float] | None]


def generate(config: GeneratorConfig) -> Iterator[GeneratedRecord]:
    """Generate the records ``config`` describes, in delivery order.

    Exactly ``config.predictions`` valid served predictions (plus one per shadow
    model for each), the clicks they draw, and the malformed records; everything is
    computed up front (about 10 s and 600 MB per million predictions), then yielded.
    It is one :meth:`Simulation.step` of ``config.predictions``, then the flush.

    >>> records = list(generate(GeneratorConfig(predictions=200, malformed_fraction=0.1)))
    >>> sorted({r.topic for r in records}), all(r.ts is None for r in records if r.malformed)
    (['clicks', 'predictions'], True)
    """
    sim = Simulation(config)
    yield from sim._advance(config.predictions)
    yield from sim.flush()


def stream(
    config: GeneratorConfig,
    weights_source: WeightsSource | None = None,
    *,
    chunk_predictions: int = 1_000,
    forever: bool = False,
) -> Iterator[GeneratedRecord]:
    """Generate ``config``'s stream lazily in chunks, polling ``weights_source`` before each.

    Before each chunk of ``chunk_predictions`` served predictions, ``weights_source()``
    is called: a mapping routes that chunk's requests by it (validated like
    ``GeneratorConfig.weights``; a ``ValueError`` stops the stream), ``None`` keeps the
    current weights. It ends after ``config.predictions`` served predictions (then
    flushes the held-back records), or never with ``forever=True``. The output is
    deterministic for a config, a chunk size and the sequence of weights returned.
    With ``chunk_predictions >= config.predictions`` and no weights it equals
    :func:`generate`.

    >>> schedule = iter([{"model-a": 1.0}, None])
    >>> out = list(stream(GeneratorConfig(predictions=400), lambda: next(schedule, None),
    ...                   chunk_predictions=200))
    >>> sum(r.topic == "predictions" for r in out)
    400
    """
    _check(_is_int(chunk_predictions) and chunk_predictions >= 1,
           f"chunk_predictions must be an integer >= 1, got {chunk_predictions!r}")
    return _stream(Simulation(config), weights_source, chunk_predictions, forever)


def _stream(sim: Simulation, weights_source: WeightsSource | None, chunk_predictions: int,
            forever: bool) -> Iterator[GeneratedRecord]:
    remaining = sim.config.predictions
    while forever or remaining > 0:
        if weights_source is not None:
            weights = weights_source()
            if weights is not None:
                sim.set_weights(weights)
        n = chunk_predictions if forever else min(chunk_predictions, remaining)
        yield from sim._advance(n)
        remaining -= n
    yield from sim.flush()
