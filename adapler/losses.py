"""Training losses of AdapLeR (docs/method.md §4.2-4.3)."""

from __future__ import annotations

import torch

from .modeling import soft_removal


def _kl(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Keras-style KL(target || pred) per row, both clipped to [1e-7, 1]. (B, L) -> (B,)."""
    t, p = target.clamp(1e-7, 1.0), pred.clamp(1e-7, 1.0)
    return (t * (t / p).log()).sum(-1)


def cp_kl_loss(cp_scores: torch.Tensor, saliency: torch.Tensor, attention_mask: torch.Tensor,
               eta: torch.Tensor, sharpness: float, theta: torch.Tensor | None = None,
               beta: float = 0.1) -> torch.Tensor:
    """``sum_l (layers - l) * KL_l(saliency target || CP_l)``, docs/method.md §4.2.

    The target of layer l is the input-level saliency renormalised over the tokens that survive the
    soft removals of CPs 0..l-1, re-simulated from the CP outputs (so gradients reach the CPs through
    the target mask too). ``theta`` rescales the [CLS] share of targets for layers >= 1.
    cp_scores: (B, layers, L) un-rescaled CP outputs; saliency: (B, L) >= 0; eta: (layers,) (no grad).
    """
    B, layers, L = cp_scores.shape
    q = attention_mask.float()  # soft survival of the target simulation, [CLS] included
    sal = saliency.float() * q
    total = cp_scores.new_zeros(())
    for l in range(layers):
        t = sal * q
        t = t / (t.sum(-1, keepdim=True) + 1e-15)
        if theta is not None and l >= 1:
            t = torch.cat([t[:, :1] * theta[l - 1], t[:, 1:]], dim=-1)
            t = t / (t.sum(-1, keepdim=True) + 1e-15)
        p = cp_scores[:, l]
        gate = q[:, 1:].max(-1).values.detach()  # ~1 while any non-[CLS] token survives
        total = total + (layers - l) * (gate * _kl(t, p)).mean()
        delta = (eta[l] / q.sum(-1)).unsqueeze(-1)
        q = torch.where(q > 1e-6, q * torch.exp(soft_removal(p, delta, sharpness, beta) * q), q)
        q = torch.cat([torch.ones_like(q[:, :1]) * attention_mask[:, :1].float(), q[:, 1:]], dim=-1)
    return total


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                        distill: float = 0.0) -> torch.Tensor:
    """``(1 - distill) * CE(labels) + distill * KL(teacher || student)`` over classes; logits (B, C).

    ``distill = 0`` is AdapLeR's plain cross-entropy. With a teacher (the unpruned fine-tuned model) the
    pruned student also learns the teacher's confidence on each input, not only its label: on windows of
    long documents, which carry the document's label whether or not they show it, that is a softer target.
    """
    ce = torch.nn.functional.cross_entropy(logits.float(), labels)
    if not distill:
        return ce
    teacher = torch.log_softmax(teacher_logits.float(), -1)
    kl = torch.nn.functional.kl_div(torch.log_softmax(logits.float(), -1), teacher, log_target=True,
                                    reduction="batchmean")
    return (1.0 - distill) * ce + distill * kl


HARD_SHARPNESS = 1e5  # end of the step schedule: the soft removal is then practically the hard step of inference


def sharpness_for_step(step: int, total_steps: int, start: float = 10.0, end: float = HARD_SHARPNESS) -> float:
    """Geometric annealing per step from ``start`` to ``end`` over the run: for short runs (one or two
    epochs) where the per-epoch schedule would never leave the soft regime."""
    frac = step / max(total_steps - 1, 1)
    return float(start * (end / start) ** min(frac, 1.0))


def sharpness_for_epoch(epoch: int, epochs: int) -> float:
    """Reference lambda schedule (docs/method.md §3.4): 10*10^k; 10*3^k for 10 epochs; 50*50^k for 3."""
    if epochs == 10:
        return 10.0 * 3.0**epoch
    if epochs == 3:
        return 50.0 * 50.0**epoch
    return 10.0 * 10.0**epoch
