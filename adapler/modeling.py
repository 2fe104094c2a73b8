"""AdapLeR for sequence classification: BERT + one Contribution Predictor (CP) before every layer.

Before layer ``l`` the CP scores every surviving token; a token is kept iff its score
``p_j >= delta_l = eta_l / n_l`` (``n_l`` = tokens alive before the decision, [CLS] included).
[CLS] is never removed. One encoder loop, three paths (``mode=``):

* ``"soft"``   training path: the sharpness-annealed soft removal of docs/method.md §3.3-3.4, applied as a
               cumulative log-mask on the attention logits of keys;
* ``"masked"`` exact hard decisions applied as an attention bias (no compute saved; metric reference);
* ``"drop"``   removed tokens are physically gathered out between layers, per example, re-padded to the
               batch's longest survivor list (batch size 1 is the special case with no padding: the kept
               positions are selected without sorting and attention runs without a mask). The per-token
               record (CP scores and keep masks in original positions) costs a scatter per layer, so
               ``drop`` fills it only when asked (``output_token_masks=True``); logits, lengths and
               thresholds come always.

``masked`` and ``drop`` give the same logits (up to float error) on any batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.models.bert.modeling_bert import BertModel
from transformers.utils import ModelOutput

from .config import AdapLeRConfig

NEG = -10000.0  # additive bias of a removed/padded key, as in the reference (fp32 math throughout)
MODES = ("soft", "masked", "drop")


@dataclass
class AdapLeROutput(ModelOutput):
    """Outputs of every path; per-layer tensors are in ORIGINAL token positions.

    loss:          (,) cross-entropy when ``labels`` are given.
    logits:        (B, C).
    cp_scores:     (B, layers, L) CP probability of each token before layer l (0 on removed/padding).
    keep_masks:    (B, layers, L) bool, token processed by layer l ([CLS] always True, padding False).
    soft_masks:    (B, layers, L) float cumulative soft keep-mask (``soft`` path; hard paths: 0/1).
                   These three are None in ``drop`` unless ``output_token_masks=True``.
    layer_lengths: (B, layers) float, tokens processed by layer l; differentiable in ``soft``.
    local_lengths: (B, layers) ``soft`` only: ``layer_lengths`` recomputed from detached CP logits, so
                   their gradient reaches ``eta`` (and the [CLS] probe) along the threshold recurrence
                   only, not back through the encoder (training's single-backward mode).
    thresholds:    (B, layers) delta_l used by each decision.
    attentions:    tuple of (B, H, L', L') per layer when asked (``masked``: L' = L).
    hidden_states: when asked, tuple of (B, L, H): the embedding output, then every layer's output,
                   in original positions; 0 where the layer did not process the token (``soft``:
                   every token, unmasked).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cp_scores: torch.Tensor | None = None
    keep_masks: torch.Tensor | None = None
    soft_masks: torch.Tensor | None = None
    layer_lengths: torch.Tensor | None = None
    local_lengths: torch.Tensor | None = None
    thresholds: torch.Tensor | None = None
    attentions: tuple | None = None
    hidden_states: tuple | None = None


class ContributionPredictor(nn.Module):
    """Per-token score ``hidden -> cp_hidden -> 1`` with the model's activation (GELU)."""

    def __init__(self, config: AdapLeRConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.cp_hidden_size)
        self.out = nn.Linear(config.cp_hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, L, H) -> (B, L)
        # functional calls, not the submodules': at batch 1 and ~25 tokens the three module calls
        # per layer cost more than their arithmetic
        x = nn.functional.gelu(nn.functional.linear(hidden, self.dense.weight, self.dense.bias))
        return nn.functional.linear(x, self.out.weight, self.out.bias).squeeze(-1)


def masked_softmax(logits: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``softmax(z) * u / sum`` (= ``softmax(z + log u)``): a distribution over weighted survivors.

    logits, weights: (B, L); weights are 0 on removed/padding, fractional in the soft path; None =
    all 1 (the same numbers: multiplying by 1 is exact).
    """
    e = torch.softmax(logits.float(), dim=-1)
    e = e if weights is None else e * weights
    return e / (e.sum(-1, keepdim=True) + 1e-15)


def soft_removal(x: torch.Tensor, delta: torch.Tensor, sharpness: float, beta: float = 0.1) -> torch.Tensor:
    """Log keep-mask ``S(x)`` of docs/method.md §3.3, in [-10000, 0], continuous at ``x = delta``.

    Above the threshold ``exp(S)`` stays in ``[exp(-beta/lambda), 1]`` (a small slope, so ``eta`` gets
    gradient); below it decays like ``exp(-lambda * (delta - x) / delta)``. x: (B, L); delta: (B, 1).
    """
    steep = sharpness * (x - delta) / delta - beta / sharpness
    shallow = beta * (x - 1) / (sharpness * (1 - delta).clamp_min(1e-6))
    return torch.minimum(torch.minimum(steep, shallow), torch.zeros_like(x)).clamp(NEG, 0.0)


def key_weighted_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """``softmax(q k^T * scaling + b) v`` for a per-key bias ``b`` (B, 1, 1, L), as ``(A (w v)) / (A w)``
    with ``A = softmax(q k^T * scaling)`` and ``w = exp(b)``: the same result, but ``w`` enters as an
    extra value column, so the fused attention kernel runs and ``b`` still gets its gradient. (A
    float mask that needs a gradient sends PyTorch's CPU attention to its slow math path; the soft
    path's key bias always needs one.) query/key/value: (B, heads, L, d) -> (B, L, heads, d).
    Dropout, when training with it, falls on ``A`` before the re-normalisation."""
    w = attention_mask.exp().transpose(-1, -2).expand(*value.shape[:-1], 1)  # (B, heads, L, 1)
    v_ext = torch.cat([value * w, w.to(value.dtype)], dim=-1)  # (B, heads, L, d + 1)
    # the fused kernel wants one head size for q, k and v: a zero column leaves q k^T unchanged
    query, key = nn.functional.pad(query, (0, 1)), nn.functional.pad(key, (0, 1))
    out = nn.functional.scaled_dot_product_attention(query, key, v_ext, dropout_p=dropout, scale=scaling)
    out = out[..., :-1] / out[..., -1:].clamp_min(1e-30)  # [CLS] (w = 1) keeps the denominator > 0
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register("adapler_key_weighted", key_weighted_attention)


class AdapLeRPreTrainedModel(PreTrainedModel):
    config_class = AdapLeRConfig
    base_model_prefix = "bert"
    _supports_sdpa = True
    _keys_to_ignore_on_load_unexpected = [r"^cls\."]  # MLM heads of pre-training checkpoints

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """As ``PreTrainedModel.from_pretrained``, but fp32 unless ``dtype`` is given: shipped
        checkpoints are stored in fp16 to halve their size, and CPU inference wants fp32."""
        kwargs.setdefault("dtype", torch.float32)
        return super().from_pretrained(*args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, AdapLeRForSequenceClassification):
            module.eta.fill_(self.config.eta_init)
            if module.theta is not None:
                module.theta.fill_(1.0)
        if hasattr(module, "position_ids") and hasattr(module, "token_type_ids"):  # BertEmbeddings buffers
            module.position_ids.copy_(torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            module.token_type_ids.zero_()


class AdapLeRForSequenceClassification(AdapLeRPreTrainedModel):
    """BERT classifier whose sequence shrinks layer by layer. See the module docstring."""

    def __init__(self, config: AdapLeRConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(config.classifier_dropout if config.classifier_dropout is not None
                                  else config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        n = config.num_hidden_layers
        self.cps = nn.ModuleList(ContributionPredictor(config) for _ in range(n))
        self.eta = nn.Parameter(torch.full((n,), float(config.eta_init)))  # learned by its own optimiser
        # [CLS] share of the KL targets for layers 1..n-1 (docs/method.md §4.3); None when the flag is off
        self.theta = nn.Parameter(torch.ones(n - 1)) if config.cls_share and n > 1 else None
        self.post_init()

    # ------------------------------------------------------------------ helpers
    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    def effective_eta(self, threshold_scale: float = 1.0, thresholds=None) -> torch.Tensor:
        """Per-layer ``eta`` used at inference: learned (or ``thresholds`` override) x scale."""
        eta = self.eta if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float32,
                                                                   device=self.eta.device)
        if eta.shape != (self.num_layers,):
            raise ValueError(f"thresholds must have {self.num_layers} values, got {tuple(eta.shape)}")
        return eta.float() * threshold_scale

    @contextlib.contextmanager
    def eager_attention(self, enabled: bool = True):
        """Context in which layers use the eager attention kernel, the only one that returns
        attention probabilities (SDPA returns none)."""
        with self._attention_kernel("eager" if enabled else None):
            yield

    @contextlib.contextmanager
    def _attention_kernel(self, name: str | None):
        old = self.config._attn_implementation
        if name is not None:
            self.config._attn_implementation = name
        try:
            yield
        finally:
            self.config._attn_implementation = old

    def run_layer(self, l: int, hidden: torch.Tensor, key_bias: torch.Tensor | None,
                  attn_store: list | None = None) -> torch.Tensor:
        """Encoder layer ``l`` on hidden (B, L, H) with an additive key bias (B, L): 0 for a live key,
        ``NEG`` for a removed or padded one; None when every key is live (no mask: the faster kernel).
        With ``attn_store`` (inside ``eager_attention``) the layer's attention probabilities
        (B, heads, L, L) are appended to it."""
        layer = self.bert.encoder.layer[l]
        mask = None if key_bias is None else key_bias[:, None, None, :].to(hidden.dtype)
        if attn_store is None:
            return layer(hidden, attention_mask=mask)
        handle = layer.attention.self.register_forward_hook(lambda m, i, o: attn_store.append(o[1]))
        try:
            return layer(hidden, attention_mask=mask)
        finally:
            handle.remove()

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        """Class logits (B, C) from the last hidden states (B, L, H); reads position 0 ([CLS])."""
        pooled = self.bert.pooler(hidden)  # reads position 0 = [CLS]
        return self.classifier(self.dropout(pooled))

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, mode: str = "drop", threshold_scale: float = 1.0,
                thresholds=None, sharpness: float | None = None, cls_probe: torch.Tensor | None = None,
                output_attentions: bool = False, output_token_masks: bool = False,
                output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> AdapLeROutput:
        """Classify, dropping tokens layer by layer.

        Args:
            input_ids, attention_mask, token_type_ids, position_ids: (B, L), right padding.
            inputs_embeds: (B, L, H) word embeddings instead of ``input_ids`` (as in Hugging Face
                classifiers; embedding-space attribution tools pass this).
            labels: (B,) class ids; adds ``loss`` (cross-entropy).
            mode: ``"drop"`` (default, really faster), ``"masked"`` or ``"soft"`` (training).
            threshold_scale: multiplies every ``eta_l``; 0 keeps every token (the unpruned model).
            thresholds: per-layer ``eta`` overriding the learned ones (list or tensor of ``layers``).
            sharpness: lambda of the ``soft`` path (default 1e20 = exact hard step).
            cls_probe: (layers-1,) [CLS] rescale before the threshold test (training-only gradient
                probe of docs/method.md §4.3); None = identity.
            output_attentions: also return per-layer attention probabilities (eager kernel).
            output_token_masks: ``drop`` also fills ``cp_scores``, ``keep_masks`` and ``soft_masks``
                in original positions (a scatter per layer; ``masked`` and ``soft`` always do).
            output_hidden_states: also return every layer's output in original positions (0 where a
                token was removed), as Hugging Face classifiers do.
            return_dict: accepted for compatibility; the output is always an ``AdapLeROutput``.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if attention_mask is None:
            shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
            device = (input_ids if input_ids is not None else inputs_embeds).device
            attention_mask = torch.ones(shape, dtype=torch.long, device=device)
        eta = self.effective_eta(threshold_scale, thresholds) if mode != "soft" else self.eta.float()
        kernel = "eager" if output_attentions else "adapler_key_weighted" if mode == "soft" else None
        with self._attention_kernel(kernel):
            hidden = self.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids,
                                          position_ids=position_ids, inputs_embeds=inputs_embeds)  # (B, L, H)
            if mode == "drop":
                run, kwargs = self._forward_drop, {"output_token_masks": output_token_masks}
            else:
                run, kwargs = self._forward_masked, {"sharpness": sharpness if mode == "soft" else None}
            kwargs["output_hidden_states"] = bool(output_hidden_states)
            logits, record = run(hidden, attention_mask, eta, cls_probe, output_attentions, **kwargs)
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return AdapLeROutput(loss=loss, logits=logits, **record)

    def _probe(self, p: torch.Tensor, l: int, cls_probe) -> torch.Tensor:
        """[CLS] entry x max(0.001, probe[l-1]) and renormalise (identity when probe is None)."""
        if cls_probe is None or l == 0:
            return p
        rest = torch.ones(p.shape[-1] - 1, device=p.device)
        p = p * torch.cat([cls_probe[l - 1].clamp_min(1e-3).float().reshape(1), rest])
        return p / (p.sum(-1, keepdim=True) + 1e-15)

    def _forward_masked(self, hidden, attention_mask, eta, cls_probe, output_attentions, sharpness=None,
                        output_hidden_states=False):
        """``soft`` (sharpness given) and ``masked`` (hard) on the full padded batch."""
        B, L = attention_mask.shape
        real = attention_mask.float()
        m = real.clone()
        m[:, 0] = 0.0  # cumulative keep-mask; [CLS] excluded so it can never be removed
        key_bias = (1.0 - real) * NEG  # (B, L)
        is_cls = torch.zeros(B, L, dtype=torch.bool, device=hidden.device)
        is_cls[:, 0] = True
        scores, keeps, softs, lengths, deltas, attns = [], [], [], [], [], [] if output_attentions else None
        states = [hidden] if output_hidden_states else None
        local_m, local_lengths = m, []  # the recurrence again on detached CP logits (soft path only)
        for l in range(self.num_layers):
            cp_logits = self.cps[l](hidden)  # (B, L)
            p = masked_softmax(cp_logits, torch.where(is_cls, 1.0, m))  # (B, L)
            delta = (eta[l] / (m.sum(-1) + 1.0)).unsqueeze(-1)  # (B, 1)
            if sharpness is not None:  # soft path (docs/method.md §3.4)
                m, e = self._soft_step(p, m, delta, l, cls_probe, sharpness)
                key_bias = (key_bias + e).clamp_min(NEG)
                local_p = masked_softmax(cp_logits.detach(), torch.where(is_cls, 1.0, local_m))
                local_m, _ = self._soft_step(local_p, local_m, (eta[l] / (local_m.sum(-1) + 1.0)).unsqueeze(-1),
                                             l, cls_probe, sharpness)
                local_lengths.append(local_m.sum(-1) + 1.0)
            else:  # exact hard decision
                m = m * (self._probe(p, l, cls_probe) >= delta).float()
                key_bias = torch.where((m > 0) | is_cls & (real > 0), 0.0, NEG)
            scores.append(p)
            softs.append(torch.where(is_cls, real, m))
            keeps.append((m > 0.5) | (is_cls & (real > 0)))
            lengths.append(m.sum(-1) + 1.0)
            deltas.append(delta.squeeze(-1))
            hidden = self.run_layer(l, hidden, key_bias, attns)
            if states is not None:
                states.append(hidden if sharpness is not None else torch.where(keeps[-1][..., None], hidden, 0.0))
        record = {"cp_scores": torch.stack(scores, 1), "keep_masks": torch.stack(keeps, 1),
                  "soft_masks": torch.stack(softs, 1), "layer_lengths": torch.stack(lengths, 1),
                  "thresholds": torch.stack(deltas, 1), "attentions": tuple(attns) if attns else None,
                  "hidden_states": tuple(states) if states else None,
                  "local_lengths": torch.stack(local_lengths, 1) if local_lengths else None}
        return self.classify(hidden), record

    def _soft_step(self, p, m, delta, l: int, cls_probe, sharpness: float):
        """One soft removal: CP scores p (B, L), cumulative mask m (B, L), threshold delta (B, 1) ->
        (new m, log keep-mask e (B, L))."""
        e = soft_removal(self._probe(p, l, cls_probe), delta, sharpness, self.config.soft_beta) * m
        return torch.where(m > 1e-6, m * torch.exp(e), m), e

    def _forward_drop(self, hidden, attention_mask, eta, cls_probe, output_attentions, output_token_masks=False,
                      output_hidden_states=False):
        """Hard decisions with removed tokens gathered out after every CP; the full-length per-token
        record only with ``output_token_masks`` (and hidden states only with ``output_hidden_states``).
        Batch size 1 first drops its padding (if any), so every slot is live: the kept slots are
        selected in order and attention needs no mask."""
        B, L = attention_mask.shape
        device = hidden.device
        states = [hidden] if output_hidden_states else None  # (B, L, H) embeddings, original positions
        track = output_token_masks or output_hidden_states  # original positions are needed
        single = B == 1
        if single:
            pos = attention_mask[0].nonzero().squeeze(-1)  # (L',) real positions
            hidden, pos, alive = hidden.index_select(1, pos), pos[None], None
        else:
            pos = torch.arange(L, device=device).expand(B, L)  # original position of each slot
            alive = attention_mask.bool()  # (B, L') slots holding a live token; right padding
        n = attention_mask.sum(-1, keepdim=True).float()  # (B, 1) survivors incl. [CLS]
        lengths, deltas, scores, keeps, attns = [], [], [], [], [] if output_attentions else None
        rows = torch.arange(B, device=device)[:, None]
        for l in range(self.num_layers):
            p = masked_softmax(self.cps[l](hidden), None if single else alive.float())  # (B, L')
            delta = eta[l] / n  # (B, 1)
            keep = self._probe(p, l, cls_probe) >= delta
            keep[:, 0] = True  # [CLS] is slot 0 (an all-padding row has no live slot: cleared next)
            if not single:
                keep &= alive
            kept = keep.sum(-1, keepdim=True)  # (B, 1)
            lengths.append(kept)
            deltas.append(delta)
            if output_token_masks:  # back to original positions (unique per row: a scatter)
                empty = torch.zeros(B, L, device=device)
                scores.append(empty.scatter(1, pos, p if single else torch.where(alive, p, 0.0)))
                keeps.append(empty.scatter(1, pos, keep.float()) > 0)
            if single:  # the kept slots in order: no sort, no padding, no attention mask
                idx = keep[0].nonzero().squeeze(-1)  # (L'',)
                hidden, bias = hidden.index_select(1, idx), None
                pos = pos.index_select(1, idx) if track else pos
            else:  # kept slots first (stable, so original order is preserved), cut, re-padded
                order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, : int(kept.max())]
                hidden, pos, alive = hidden[rows, order], pos[rows, order], keep[rows, order]
                bias = torch.where(alive, 0.0, NEG)
            n = kept.float()
            hidden = self.run_layer(l, hidden, bias, attns)
            if states is not None:  # back to original positions, 0 where the token is gone
                full = hidden.new_zeros(B, L, hidden.shape[-1])
                full[rows, pos] = hidden if single else torch.where(alive[..., None], hidden, 0.0)
                states.append(full)
        record = {"layer_lengths": torch.cat(lengths, 1).float(), "thresholds": torch.cat(deltas, 1),
                  "attentions": tuple(attns) if attns else None, "hidden_states": tuple(states) if states else None}
        if output_token_masks:
            keep_masks = torch.stack(keeps, 1)
            record.update(cp_scores=torch.stack(scores, 1), keep_masks=keep_masks, soft_masks=keep_masks.float())
        return self.classify(hidden), record
