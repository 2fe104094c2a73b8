"""AdapLeR in PyTorch: BERT classifiers that drop the tokens they don't need, layer by layer."""

from transformers import AutoConfig, AutoModelForSequenceClassification

from .config import AdapLeRConfig
from .modeling import AdapLeRForSequenceClassification, AdapLeROutput, ContributionPredictor

AutoConfig.register("adapler", AdapLeRConfig)
AutoModelForSequenceClassification.register(AdapLeRConfig, AdapLeRForSequenceClassification)

__all__ = ["AdapLeRConfig", "AdapLeRForSequenceClassification", "AdapLeROutput", "ContributionPredictor"]
