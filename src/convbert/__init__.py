"""ConvBERT in PyTorch: model, Hugging Face-compatible checkpoints, pretraining, fine-tuning, benchmarks."""

from .config import PRESETS, ConfigError, ConvBertConfig
from .errors import InputError
from .model import (
    ConvBertForMaskedLM,
    ConvBertForMultipleChoice,
    ConvBertForPreTraining,
    ConvBertForQuestionAnswering,
    ConvBertForSequenceClassification,
    ConvBertForTokenClassification,
    ConvBertModel,
    EncoderOutput,
    HeadOutput,
    ModelOutput,
    QuestionAnsweringOutput,
    load_model_dir,
)
from .tokenizer import ConvBertTokenizer

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "ConfigError",
    "ConvBertConfig",
    "InputError",
    "ConvBertModel",
    "ConvBertForMaskedLM",
    "ConvBertForPreTraining",
    "ConvBertForSequenceClassification",
    "ConvBertForTokenClassification",
    "ConvBertForQuestionAnswering",
    "ConvBertForMultipleChoice",
    "EncoderOutput",
    "HeadOutput",
    "ModelOutput",
    "QuestionAnsweringOutput",
    "load_model_dir",
    "ConvBertTokenizer",
]
