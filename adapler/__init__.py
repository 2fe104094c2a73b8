"""AdapLeR in PyTorch: BERT classifiers that drop the tokens they don't need, layer by layer."""

import importlib.metadata

from transformers import AutoConfig, AutoModelForSequenceClassification

from .config import AdapLeRConfig
from .modeling import AdapLeRForSequenceClassification, AdapLeROutput, ContributionPredictor

AutoConfig.register("adapler", AdapLeRConfig)
AutoModelForSequenceClassification.register(AdapLeRConfig, AdapLeRForSequenceClassification)

try:
    __version__ = importlib.metadata.version("adapler")
except importlib.metadata.PackageNotFoundError:  # a source checkout that was not pip-installed
    __version__ = "0.0.0+unknown"

__all__ = ["AdapLeRConfig", "AdapLeRForSequenceClassification", "AdapLeROutput", "ContributionPredictor"]
