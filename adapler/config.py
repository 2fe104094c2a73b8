"""``AdapLeRConfig``: a ``BertConfig`` plus the AdapLeR fields."""

from transformers import BertConfig


class AdapLeRConfig(BertConfig):
    """BERT configuration with Contribution Predictors and learned per-layer thresholds.

    Any BERT size works: one CP per ``num_hidden_layers``, each ``hidden_size -> cp_hidden_size -> 1``.

    Args:
        cp_hidden_size: hidden width of each Contribution Predictor (reference: 32).
        eta_init: initial per-layer threshold numerator; threshold ``delta_l = eta_l / n_l`` (0.25).
        cls_share: learn the [CLS] share of the KL targets (docs/method.md §4.3, the reference's THETA).
        soft_beta: slope of the shallow branch of the soft removal function (docs/method.md §3.3; 0.1).
    """

    model_type = "adapler"

    def __init__(self, cp_hidden_size: int = 32, eta_init: float = 0.25, cls_share: bool = True,
                 soft_beta: float = 0.1, **kwargs):
        kwargs.pop("model_type", None)  # loading a plain BERT config.json must still save as "adapler"
        super().__init__(**kwargs)
        self.cp_hidden_size = cp_hidden_size
        self.eta_init = eta_init
        self.cls_share = cls_share
        self.soft_beta = soft_beta
