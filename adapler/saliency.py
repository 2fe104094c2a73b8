"""Gradient x input saliency on the embedding output (docs/method.md §5).

Score of token j = || dlogit_target / dE_j  *  E_j ||_2 over the hidden dimension, where E is the
embedding-layer output (word + position + segment, after LayerNorm). Eval mode, no token removal,
padding zeroed, no normalisation. ``targets`` = gold labels when given, else the predicted class.

The one implementation: :func:`gradient_x_input` for a batch, and its two parts
(:func:`capture_embeddings`, :func:`saliency_scores`) for callers that run the forward themselves
(the ERASER engine, which also captures attention projections in the same pass).
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import torch


@contextlib.contextmanager
def capture_embeddings(model):
    """While active, the embedding output of ``model.base_model`` becomes a gradient leaf, kept as
    ``.emb`` of the yielded object; a backward stops there (no weight gradients)."""
    cap = SimpleNamespace(emb=None)

    def hook(module, inputs, output):
        cap.emb = output.detach().requires_grad_(True)
        return cap.emb

    handle = model.base_model.embeddings.register_forward_hook(hook)
    try:
        yield cap
    finally:
        handle.remove()


def saliency_scores(grad: torch.Tensor, emb: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) ``|| grad * emb ||_2`` over the hidden size, 0 on padding."""
    return ((grad * emb).norm(dim=-1) * attention_mask.to(grad.dtype)).detach()


def gradient_x_input(model, input_ids, attention_mask, token_type_ids=None, targets=None) -> torch.Tensor:
    """(B, L) non-negative saliency; one backward pass (to the embeddings only) for the whole batch.

    Works for ``AdapLeRForSequenceClassification`` (run unpruned) and plain BERT classifiers.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), capture_embeddings(model) as cap:
            kwargs = {"threshold_scale": 0.0, "mode": "masked"} if hasattr(model, "cps") else {}
            logits = model(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids, **kwargs).logits.float()  # (B, C)
            if targets is None:
                targets = logits.argmax(-1)
            targets = torch.as_tensor(targets, device=logits.device).long()
            # rows are independent, so the gradient of the sum is each row's own gradient
            (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), cap.emb)
    finally:
        model.train(was_training)
    return saliency_scores(grad, cap.emb, attention_mask)
