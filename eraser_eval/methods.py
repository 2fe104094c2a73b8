"""Rationale methods behind one interface, and the model engine they share.

A method turns prepared documents (:class:`DocInput`) into per-document-token rationales
(:class:`MethodOutput`): soft scores, optionally its own hard rationale, and for AdapLeR the
per-layer selections. Methods never run the model themselves; they ask the engine
(:class:`eraser_eval.engine.Engine`), which
batches windows of all documents, caches every pass in memory and on disk, and shares passes between
methods (one unpruned forward + backward gives the predictions, saliency and both attention methods).

Methods (``METHODS``):

* ``adapler`` - the model's own token pruning (``mode="drop"``, learned thresholds times
  ``threshold_scale``). Soft score of a word piece = survival depth = number of layers that process
  it (0..L); of a document token = max over its pieces. Hard rationale at layer ``l`` = tokens with
  a piece alive at layer ``l`` (default the last layer). Ties in the depth are broken by the piece's
  Contribution-Predictor score at the last layer it was alive.
* ``saliency`` - gradient x input (as ``adapler.saliency.gradient_x_input``: gradient of the target
  logit w.r.t. the embedding output, times it, L2 over hidden) for the document's predicted class
  (the same target for every window of a long document).
* ``attention`` - last-layer [CLS] attention averaged over heads; ``attention_rollout`` - attention
  rollout, [CLS] row (as ``adapler.attention``). Both from the unpruned pass (``threshold_scale=0``),
  computed from the captured query/key projections (``adapler.attention.cls_attention_from_qk``,
  ``rollout_from_qk``), so the fast SDPA kernel runs the model.
* ``integrated_gradients`` - captum's Integrated Gradients of the predicted class's logit on the
  embedding output (``steps`` interpolation points, default 20; baseline = ``[PAD]`` at every word
  piece of the document, [CLS]/[SEP] kept), token score = L2 over hidden as saliency.
* ``occlusion`` - captum's feature ablation with one feature per word: each word's pieces replaced
  by ``[MASK]`` in turn; score = drop of the predicted class's probability (signed).
* ``random`` - uniform scores, seeded per (seed, annotation id): reproducible and independent of
  batch order or ``--limit``.
* ``import`` - a user's ERASER results file: its hard and soft predictions, classification and
  faithfulness scores are taken as they are.

Cost: every output carries ``extra["cost"]`` = ``{"forward", "backward", "ms"}``: model passes
over the document (a document of several windows: window runs / windows) and the measured
milliseconds of the passes the method needs (a shared pass is charged in full to every method that
reads it: the unpruned forward to saliency and both attention methods, its backward to saliency).

Piece scores become document-token scores with :meth:`eraser_eval.align.Alignment.to_words`
(max over pieces). Lost tokens (no pieces) score 0 for every method.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .align import Alignment
from .engine import Engine
from .results_file import load_results_jsonl
from .types import DocInput, MethodOutput, round_sig

__all__ = [
    "METHODS",
    "AdapLeRMethod",
    "AttentionMethod",
    "ImportMethod",
    "IntegratedGradientsMethod",
    "OcclusionMethod",
    "RandomMethod",
    "RationaleMethod",
    "SaliencyMethod",
    "get_method",
]


class RationaleMethod:
    """Interface: ``explain(docs, engine, context) -> list[MethodOutput]``.

    ``context`` carries what the caller already knows: ``base_attention`` (the unpruned pass per document),
    ``targets`` (predicted class per document).
    """

    name: str = ""
    needs_model: bool = True
    #: what the method reads from the unpruned pass (``Engine.unpruned``): "saliency", "attention", "rollout"
    unpruned_outputs: tuple[str, ...] = ()

    def explain(self, docs: Sequence[DocInput], engine: Engine | None, context: dict) -> list[MethodOutput]:
        raise NotImplementedError


def _cost(forward: float, backward: float, ms: float | None) -> dict:
    return {"forward": forward, "backward": backward, "ms": ms}


def _sum_ms(*parts: float | None) -> float | None:
    return None if any(p is None for p in parts) else float(sum(parts))


def _mask_lost(scores: np.ndarray, alignment: Alignment) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).copy()
    scores[~alignment.scored] = 0.0
    return scores


class AdapLeRMethod(RationaleMethod):
    name = "adapler"

    def __init__(self, layer: int | None = None):
        self.layer = layer  # 1-based encoder layer, negative from the end, None = last

    def layer_index(self, num_layers: int) -> int:
        if self.layer is None:
            return num_layers - 1
        idx = self.layer - 1 if self.layer > 0 else num_layers + self.layer
        if not 0 <= idx < num_layers:
            raise ValueError(f"layer {self.layer} out of range for a {num_layers}-layer model")
        return idx

    def explain(self, docs, engine, context):
        passes = engine.adapler(docs, threshold_scale=context.get("threshold_scale"),
                                precomputed=context.get("adapler_passes"))
        outs = []
        for d, p in zip(docs, passes):
            keep = np.asarray(p["keep"], dtype=bool)  # (L, P)
            depth = keep.sum(0)  # (P,)
            num_layers = keep.shape[0]
            li = self.layer_index(num_layers)
            cp = np.asarray(p["cp"], dtype=np.float64)
            last = np.clip(depth - 1, 0, num_layers - 1)
            tb_piece = np.where(depth > 0, cp[last, np.arange(cp.shape[1])], 0.0) if cp.size else np.zeros(0)
            layer_masks = d.alignment.mask_to_words(keep) if keep.size else np.zeros((num_layers, d.num_tokens), bool)
            scores = d.alignment.to_words(depth.astype(np.float64))
            outs.append(MethodOutput(
                scores=_mask_lost(scores, d.alignment),
                hard=layer_masks[li].copy(),
                layer_masks=layer_masks,
                tiebreak=round_sig(d.alignment.to_words(tb_piece)),
                extra={"probs_pruned": p["probs"], "layer_lengths": p.get("layer_lengths"),
                       "cost": _cost(1, 0, p.get("ms"))},
            ))
        return outs


class SaliencyMethod(RationaleMethod):
    name = "saliency"
    unpruned_outputs = ("saliency",)

    def explain(self, docs, engine, context):
        passes = engine.unpruned(docs, targets=context["targets"], saliency=True)
        return [MethodOutput(scores=round_sig(_mask_lost(d.alignment.to_words(p["saliency"]), d.alignment)),
                             extra={"cost": _cost(1, 1, _sum_ms(p.get("ms_forward"), p.get("ms_backward")))})
                for d, p in zip(docs, passes)]


class AttentionMethod(RationaleMethod):

    def __init__(self, rollout: bool = False):
        self.rollout = rollout
        self.name = "attention_rollout" if rollout else "attention"
        self.unpruned_outputs = ("rollout",) if rollout else ("attention",)

    def explain(self, docs, engine, context):
        key = "rollout" if self.rollout else "attention"
        base = context.get("base_attention")
        if base is None or any(key not in b for b in base):
            base = engine.unpruned(docs, attention=not self.rollout, rollout=self.rollout)
        return [MethodOutput(scores=round_sig(_mask_lost(d.alignment.to_words(b[key]), d.alignment)),
                             extra={"cost": _cost(1, 0, b.get("ms_forward"))})
                for d, b in zip(docs, base)]


class RandomMethod(RationaleMethod):
    name = "random"
    needs_model = False

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def explain(self, docs, engine, context):
        outs = []
        for d in docs:
            t0 = time.perf_counter()
            rng = np.random.default_rng([self.seed, zlib.crc32(d.annotation_id.encode())])
            scores = round_sig(_mask_lost(rng.random(d.num_tokens), d.alignment))
            outs.append(MethodOutput(scores=scores, extra={"cost": _cost(0, 0, 1000 * (time.perf_counter() - t0))}))
        return outs


class IntegratedGradientsMethod(RationaleMethod):
    name = "integrated_gradients"

    def __init__(self, steps: int = 20):
        if int(steps) < 1:
            raise ValueError(f"Integrated Gradients needs at least 1 step, got {steps}")
        self.steps = int(steps)

    def explain(self, docs, engine, context):
        res = engine.integrated_gradients(docs, context["targets"], self.steps)
        return [MethodOutput(scores=round_sig(_mask_lost(d.alignment.to_words(r["scores"]), d.alignment)),
                             extra={"cost": _cost(r["forward"], r["backward"], r["ms"])})
                for d, r in zip(docs, res)]


class OcclusionMethod(RationaleMethod):
    name = "occlusion"

    def explain(self, docs, engine, context):
        res = engine.occlusion(docs, context["targets"])
        return [MethodOutput(scores=round_sig(_mask_lost(d.alignment.to_words(r["scores"]), d.alignment)),
                             extra={"cost": _cost(r["forward"], r["backward"], r["ms"])})
                for d, r in zip(docs, res)]


class ImportMethod(RationaleMethod):
    """Rationales from an ERASER results file (``--import-results``)."""

    needs_model = False

    def __init__(self, path: str | os.PathLike, name: str = "import"):
        self.path = Path(path)
        self.name = name
        self.records = {r["annotation_id"]: r for r in load_results_jsonl(self.path)}

    def explain(self, docs, engine, context):
        outs = []
        for d in docs:
            rec = self.records.get(d.annotation_id)
            if rec is None:
                outs.append(MethodOutput(record=None, extra={"missing": True}))
                continue
            hard = np.zeros(d.num_tokens, dtype=bool)
            scores = None
            for rat in rec.get("rationales", []) or []:
                if rat.get("docid") != d.docid:
                    continue
                for h in rat.get("hard_rationale_predictions", []) or []:
                    s, e = int(h["start_token"]), int(h["end_token"])
                    if not (0 <= s <= e <= d.num_tokens):
                        raise ValueError(
                            f"{self.path}: annotation {d.annotation_id!r}: span {s}:{e} out of range for "
                            f"document {d.docid!r} with {d.num_tokens} tokens"
                        )
                    hard[s:e] = True
                soft = rat.get("soft_rationale_predictions")
                if soft is not None:
                    if len(soft) != d.num_tokens:
                        raise ValueError(
                            f"{self.path}: annotation {d.annotation_id!r}: {len(soft)} soft scores for document "
                            f"{d.docid!r} with {d.num_tokens} tokens"
                        )
                    scores = np.asarray(soft, dtype=np.float64)
            outs.append(MethodOutput(scores=scores, hard=hard, record=rec))
        return outs


METHODS: dict[str, Callable[..., RationaleMethod]] = {
    "adapler": lambda **kw: AdapLeRMethod(layer=kw.get("layer")),
    "saliency": lambda **kw: SaliencyMethod(),
    "attention": lambda **kw: AttentionMethod(rollout=False),
    "attention_rollout": lambda **kw: AttentionMethod(rollout=True),
    "integrated_gradients": lambda **kw: IntegratedGradientsMethod(steps=kw.get("ig_steps", 20)),
    "occlusion": lambda **kw: OcclusionMethod(),
    "random": lambda **kw: RandomMethod(seed=kw.get("seed", 0)),
    "import": lambda **kw: ImportMethod(kw["import_results"]),
}


def get_method(name: str, **kwargs) -> RationaleMethod:
    """Build a method by name (``METHODS``); ``layer``, ``seed``, ``ig_steps``, ``import_results`` as needed."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    if name == "import" and not kwargs.get("import_results"):
        raise ValueError("method 'import' needs an ERASER results file (--import-results FILE)")
    return METHODS[name](**kwargs)
