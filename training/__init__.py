"""A reference continual trainer over ``training-examples`` (pure: no files, no Kafka).

:class:`~training.trainer.ContinualTrainer` scores each example with the live model
and the champion before learning it (progressive validation), checkpoints versions
with lineage as values (:class:`~training.trainer.Checkpoint`) and promotes a version
only when it beats the champion significantly (:mod:`training.champion`).

The trainer's names load on first use: importing River takes seconds, and every
``freshet`` command builds its parser from :mod:`training.config`.

>>> from training import TrainerConfig
>>> TrainerConfig().checkpoint_every > 0
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from training.config import TrainerConfig

if TYPE_CHECKING:
    from training.trainer import Checkpoint, ContinualTrainer, ExampleResult, ModelVersion

__all__ = ["Checkpoint", "ContinualTrainer", "ExampleResult", "ModelVersion", "TrainerConfig"]

_LAZY = frozenset({"Checkpoint", "ContinualTrainer", "ExampleResult", "ModelVersion"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
