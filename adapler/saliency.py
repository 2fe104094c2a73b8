"""Gradient x input saliency on the embedding output (method doc 5).

Score of token j = || dlogit_target / dE_j  *  E_j ||_2 over the hidden dimension, where E is the
embedding-layer output (word + position + segment, after LayerNorm). Eval mode, no token removal,
padding zeroed, no normalisation. ``targets`` = gold labels when given, else the predicted class.
"""

from __future__ import annotations

import torch


def gradient_x_input(model, input_ids, attention_mask, token_type_ids=None, targets=None) -> torch.Tensor:
    """(B, L) non-negative saliency; one backward pass for the whole batch.

    Works for ``AdapLeRForSequenceClassification`` (run unpruned) and plain BERT classifiers.
    """
    was_training = model.training
    model.eval()
    captured = {}

    def keep_output(module, inputs, output):
        output.retain_grad()
        captured["emb"] = output

    bert = model.bert
    handle = bert.embeddings.register_forward_hook(keep_output)
    try:
        with torch.enable_grad():
            kwargs = {"threshold_scale": 0.0, "mode": "masked"} if hasattr(model, "cps") else {}
            logits = model(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids, **kwargs).logits.float()  # (B, C)
            if targets is None:
                targets = logits.argmax(-1)
            targets = torch.as_tensor(targets, device=logits.device).long()
            # rows are independent, so the gradient of the sum is each row's own gradient
            logits.gather(1, targets[:, None]).sum().backward()
            emb = captured["emb"]  # (B, L, H)
            sal = (emb.grad * emb).norm(dim=-1)  # (B, L)
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return (sal * attention_mask.to(sal.dtype)).detach()
