"""Integrated Gradients and occlusion with captum, on the same model call as gradient x input.

* :func:`integrated_gradients` - captum's ``LayerIntegratedGradients`` on the embedding layer
  (``model.base_model.embeddings``): the path runs from the baseline's embedding output ``E'`` to
  the input's ``E`` (word + position + segment, after LayerNorm: the ``E`` of
  :mod:`adapler.saliency`), for the target class's logit, on the unpruned model. The baseline is a
  real input: ``baseline_ids`` (callers put ``[PAD]`` at the text's word pieces and keep ``[CLS]``,
  ``[SEP]``, a query segment and padding), so the path changes only word identity, never
  positions or segments, and special tokens get exactly 0. The ``steps`` interpolation points run
  as batches of ``internal_batch_size`` rows (one forward + one backward each, no weight gradients).
  :func:`ig_token_scores` turns the (B, L, H) attributions into a token score like gradient x
  input: L2 over the hidden size, 0 on padding.
* :func:`occlusion` - captum's ``FeatureAblation`` over groups of word pieces (``feature_mask``,
  e.g. one group per word): score of a group = p(target | input) - p(target | input with the
  group's pieces replaced by ``replacement_ids``), signed; every piece of a group gets its score.
  One forward for the input plus one per group, ``perturbations_per_eval`` ablations per batch.
"""

from __future__ import annotations

import torch
from captum.attr import FeatureAblation, LayerIntegratedGradients

__all__ = ["integrated_gradients", "ig_token_scores", "occlusion"]


def _logits_fn(model):
    """``f(input_ids, attention_mask, token_type_ids) -> (B, C)`` logits of the unpruned model."""
    kwargs = {"threshold_scale": 0.0, "mode": "masked"} if hasattr(model, "cps") else {}

    def forward(input_ids, attention_mask, token_type_ids):
        return model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                     **kwargs).logits.float()

    return forward


def _eval(model):
    was_training = model.training
    model.eval()
    return was_training


def integrated_gradients(model, input_ids, attention_mask, baseline_ids, targets, token_type_ids=None,
                         steps: int = 20, internal_batch_size: int | None = None, return_delta: bool = False):
    """(B, L, H) Integrated Gradients of ``logit[target]`` w.r.t. the embedding output, from the
    embedding output of ``baseline_ids`` (B, L) to that of ``input_ids``; with ``return_delta``
    also captum's convergence delta (B,) = sum of attributions - (f(x) - f(baseline)).

    ``internal_batch_size``: rows (interpolation points x examples) per forward/backward
    (default: all ``steps * B`` at once).
    """
    if steps < 1:
        raise ValueError(f"Integrated Gradients needs at least 1 step, got {steps}")
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    targets = torch.as_tensor(targets, device=input_ids.device).long().reshape(-1)
    was_training = _eval(model)
    try:
        lig = LayerIntegratedGradients(_logits_fn(model), model.base_model.embeddings)
        with torch.enable_grad():
            out = lig.attribute(input_ids, baselines=baseline_ids, target=targets,
                                additional_forward_args=(attention_mask, token_type_ids), n_steps=int(steps),
                                internal_batch_size=internal_batch_size, return_convergence_delta=return_delta)
    finally:
        model.train(was_training)
    if return_delta:
        attr, delta = out
        return attr.detach(), delta.detach()
    return out.detach()


def ig_token_scores(attributions: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) ``|| attribution ||_2`` over the hidden size, 0 on padding (gradient x input's convention)."""
    return (attributions.norm(dim=-1) * attention_mask.to(attributions.dtype)).detach()


def occlusion(model, input_ids, attention_mask, feature_mask, replacement_ids, targets, token_type_ids=None,
              perturbations_per_eval: int = 1) -> torch.Tensor:
    """(B, L) drop of p(target) when each group of ``feature_mask`` (B, L) ints, 0..G-1) is replaced by
    ``replacement_ids`` (B, L) (positions that must never change carry their own id there)."""
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    logits = _logits_fn(model)
    targets = torch.as_tensor(targets, device=input_ids.device).long().reshape(-1)
    was_training = _eval(model)
    try:
        with torch.inference_mode():
            fa = FeatureAblation(lambda ids, am, tt: torch.softmax(logits(ids, am, tt), -1))
            attr = fa.attribute(input_ids, baselines=replacement_ids, target=targets, feature_mask=feature_mask,
                                additional_forward_args=(attention_mask, token_type_ids),
                                perturbations_per_eval=max(1, int(perturbations_per_eval)))
    finally:
        model.train(was_training)
    return attr.float()
