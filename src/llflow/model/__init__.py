"""The LLFlow network: encoder (``encoder``), invertible layers (``flow``), prior (``prior``),
configuration and presets (``config``), checkpoints (``checkpoint``) and the model (``llflow``)."""
from .checkpoint import CheckpointError
from .config import PRESETS, LLFlowConfig, resolve_config
from .llflow import LikelihoodOutput, LLFlow

__all__ = ["LLFlow", "LLFlowConfig", "LikelihoodOutput", "PRESETS", "CheckpointError", "resolve_config"]
