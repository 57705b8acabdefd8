"""llflow: low-light image enhancement with a conditional normalizing flow (LLFlow, AAAI 2022)."""
from .model import PRESETS, CheckpointError, LLFlow, LLFlowConfig

__version__ = "0.1.0"

from .inference import Enhancer, OutOfRangeWarning, enhance, load_model, sample, uncertainty  # noqa: E402

__all__ = ["LLFlow", "LLFlowConfig", "PRESETS", "CheckpointError", "__version__",
           "Enhancer", "OutOfRangeWarning", "enhance", "load_model", "sample", "uncertainty"]
