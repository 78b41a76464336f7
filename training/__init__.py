"""A reference continual trainer over ``training-examples`` (pure: no files, no Kafka).

:class:`~training.trainer.ContinualTrainer` scores each example with the live model
and the champion before learning it (progressive validation), checkpoints versions
with lineage as values (:class:`~training.trainer.Checkpoint`) and promotes a version
only when it beats the champion significantly (:mod:`training.champion`).
"""

from training.config import TrainerConfig
from training.trainer import Checkpoint, ContinualTrainer, ExampleResult, ModelVersion

__all__ = ["Checkpoint", "ContinualTrainer", "ExampleResult", "ModelVersion", "TrainerConfig"]
