"""Training: configuration (``config``), LR schedule (``schedule``), the loop (``trainer``),
logging (``logger``) and torchrun set-up (``distributed``)."""
from .config import TrainConfig, load_config
from .trainer import Trainer, TrainingError, run_training

__all__ = ["TrainConfig", "load_config", "Trainer", "TrainingError", "run_training"]
