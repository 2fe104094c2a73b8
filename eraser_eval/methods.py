"""Rationale methods behind one interface, and the model engine they share.

A method turns prepared documents (:class:`DocInput`) into per-document-token rationales
(:class:`MethodOutput`): soft scores, optionally its own hard rationale, and for AdapLeR the
per-layer selections. Methods never run the model themselves; they ask the :class:`Engine`, which
batches windows of all documents, caches every pass in memory and on disk, and shares passes between
methods (one unpruned forward gives the predictions and both attention methods).

Methods (``METHODS``):

* ``adapler`` - the model's own token pruning (``mode="drop"``, learned thresholds times
  ``threshold_scale``). Soft score of a word piece = survival depth = number of layers that process
  it (0..L); of a document token = max over its pieces. Hard rationale at layer ``l`` = tokens with
  a piece alive at layer ``l`` (default the last layer). Ties in the depth are broken by the piece's
  Contribution-Predictor score at the last layer it was alive.
* ``saliency`` - gradient x input (``adapler.saliency.gradient_x_input``) for the document's
  predicted class (the same target for every window of a long document).
* ``attention`` - last-layer [CLS] attention averaged over heads; ``attention_rollout`` - attention
  rollout, [CLS] row. Both from one unpruned forward (``mode="masked"``, ``threshold_scale=0``).
* ``random`` - uniform scores, seeded per (seed, annotation id): reproducible and independent of
  batch order or ``--limit``.
* ``import`` - a user's ERASER results file: its hard and soft predictions, classification and
  faithfulness scores are taken as they are.

Piece scores become document-token scores with :meth:`eraser_eval.align.Alignment.to_words`
(max over pieces). Lost tokens (no pieces) score 0 for every method.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .align import Alignment, Window, make_windows, scatter_window_scores

__all__ = [
    "METHODS",
    "AdapLeRMethod",
    "AttentionMethod",
    "DocInput",
    "Engine",
    "ImportMethod",
    "MethodOutput",
    "RandomMethod",
    "RationaleMethod",
    "ResultsFileError",
    "SaliencyMethod",
    "class_label_map",
    "get_method",
    "load_results_jsonl",
    "round_sig",
]


# --------------------------------------------------------------------------------------------------
# data passed between runner, engine and methods


@dataclass
class DocInput:
    """One annotation prepared for the model."""

    annotation_id: str
    docid: str
    alignment: Alignment
    gold: np.ndarray  # (T,) bool human rationale over document tokens
    label: str  # gold dataset label
    query_ids: list[int] | None = None  # segment-B pieces (MultiRC question || answer)

    @property
    def tokens(self) -> list[str]:
        return self.alignment.tokens

    @property
    def num_tokens(self) -> int:
        return self.alignment.num_tokens


@dataclass
class MethodOutput:
    """A method's rationale for one document, over document tokens.

    ``scores`` (T,) soft scores or None; ``hard`` (T,) bool when the method defines its own hard
    rationale (adapler, import), else None (the runner takes top-k of ``scores``); ``layer_masks``
    (L, T) bool per-layer selection (adapler only); ``tiebreak`` (T,) secondary ranking key;
    ``record`` an imported ERASER result line (import only); ``extra`` free per-document info.
    """

    scores: np.ndarray | None = None
    hard: np.ndarray | None = None
    layer_masks: np.ndarray | None = None
    tiebreak: np.ndarray | None = None
    record: dict | None = None
    extra: dict = field(default_factory=dict)


def round_sig(x: np.ndarray, digits: int = 6) -> np.ndarray:
    """Round to ``digits`` significant digits (the precision written to results files; metrics are
    computed from the rounded values so an exported file re-scores to the same numbers)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mags = np.floor(np.log10(np.abs(x)))
    mags[~np.isfinite(mags)] = 0
    factor = 10.0 ** (digits - 1 - mags)
    out = np.round(x * factor) / factor
    out[~np.isfinite(out)] = 0.0
    return out


# --------------------------------------------------------------------------------------------------
# label mapping


def class_label_map(config, dataset_labels: Sequence[str], synonyms: dict[str, tuple[str, ...]],
                    default_class_map: dict[int, dict[int, str]]) -> list[str]:
    """Dataset label of every model class.

    Read from ``config.id2label`` when the names are meaningful (``NEG``/``negative``,
    ``hatespeech``/``offensive`` -> ``toxic``, ``normal`` -> ``non-toxic``, ...); generic names
    (``LABEL_0``) fall back to the dataset's default order (see ``eraser_eval.data.DATASETS``).
    """
    num = int(getattr(config, "num_labels", 0) or len(getattr(config, "id2label", {}) or {}))
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    lookup = {}
    for lab in dataset_labels:
        lookup[lab.lower()] = lab
        for s in synonyms.get(lab, ()):
            lookup[s.lower()] = lab
    mapped = [lookup.get(id2label.get(i, "").strip().lower()) for i in range(num)]
    if num and all(m is not None for m in mapped):
        return mapped  # type: ignore[return-value]
    if num in default_class_map:
        return [default_class_map[num][i] for i in range(num)]
    raise ValueError(
        f"cannot map the model's {num} classes {[id2label.get(i) for i in range(num)]} to dataset labels "
        f"{list(dataset_labels)}; set config.id2label"
    )


# --------------------------------------------------------------------------------------------------
# disk cache


class _Cache:
    """Pickled dict per (model fingerprint, pass) under ``root``; None root = memory only."""

    def __init__(self, root: Path | None):
        self.root = root
        self.mem: dict[str, dict] = {}
        self.dirty: set[str] = set()

    def table(self, name: str) -> dict:
        if name not in self.mem:
            data = {}
            if self.root is not None and (self.root / f"{name}.pkl").is_file():
                try:
                    with open(self.root / f"{name}.pkl", "rb") as fh:
                        data = pickle.load(fh)
                except (pickle.UnpicklingError, EOFError, OSError, AttributeError, ImportError, ValueError):
                    # a truncated or foreign cache file: recompute
                    data = {}
            self.mem[name] = data
        return self.mem[name]

    def mark(self, name: str) -> None:
        self.dirty.add(name)

    def flush(self) -> None:
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        for name in sorted(self.dirty):
            tmp = self.root / f"{name}.pkl.tmp"
            with open(tmp, "wb") as fh:
                pickle.dump(self.mem[name], fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.root / f"{name}.pkl")
        self.dirty.clear()


def _content_key(ids: np.ndarray | Sequence[int], query: Sequence[int] | None) -> str:
    h = hashlib.sha1(np.asarray(ids, dtype=np.int64).tobytes())
    h.update(b"|")
    h.update(np.asarray(query or [], dtype=np.int64).tobytes())
    return h.hexdigest()


def model_fingerprint(model, extra: str = "") -> str:
    """sha1 of the model class, config and every parameter/buffer (so a retrained model never hits
    a stale cache)."""
    h = hashlib.sha1(type(model).__name__.encode())
    cfg = getattr(model, "config", None)
    if cfg is not None:
        try:
            h.update(cfg.to_json_string(use_diff=False).encode())
        except (TypeError, ValueError):
            h.update(repr(cfg).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    h.update(extra.encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# engine


ProgressFn = Callable[[str, int, int], None]


class Engine:
    """Runs the model over windows of many documents, batched by length, with caching.

    ``batch_size`` is the number of full-length windows per batch; shorter windows are packed into
    batches of the same token budget (at most ``4 * batch_size`` windows). Passes:

    * :meth:`base` - unpruned forward (``mode="masked"``, ``threshold_scale=0``): document class
      probabilities (mean over windows) and, with ``attention=True``, piece scores of [CLS]
      attention and rollout.
    * :meth:`adapler` - pruned forward (``mode="drop"``, ``threshold_scale``): keep masks and CP
      scores per layer and piece, and the pruned model's probabilities.
    * :meth:`saliency` - gradient x input per piece for given target classes.
    * :meth:`predict` - class probabilities of arbitrary (re-tokenised) inputs for faithfulness,
      unpruned unless ``faithfulness_threshold_scale`` is set.
    """

    def __init__(
        self,
        model,
        tokenizer,
        max_length: int | None = None,
        batch_size: int = 8,
        device: str = "cpu",
        cache_dir: str | os.PathLike | None = None,
        threshold_scale: float = 1.0,
        faithfulness_threshold_scale: float = 0.0,
        progress: ProgressFn | None = None,
    ):
        import torch

        self.torch = torch
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        cfg = model.config
        self.max_length = int(max_length or getattr(cfg, "max_position_embeddings", 512))
        self.batch_size = max(1, int(batch_size))
        self.threshold_scale = float(threshold_scale)
        self.faithfulness_threshold_scale = float(faithfulness_threshold_scale)
        self.num_layers = int(getattr(cfg, "num_hidden_layers", 0))
        self.is_adapler = _is_adapler(model)
        self.progress = progress
        self.fingerprint = model_fingerprint(model, f"max_length={self.max_length}")
        root = None if cache_dir is None else Path(cache_dir) / self.fingerprint
        self.cache = _Cache(root)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.forward_windows = 0  # windows run through the model (not from cache), for timing reports

    # ---------------------------------------------------------------- plumbing

    def _windows(self, alignment: Alignment, query_ids, doc: int) -> list[Window]:
        return make_windows(alignment, self.tokenizer, self.max_length, query_ids, doc=doc)

    def _batches(self, windows: Sequence[Window]) -> list[list[int]]:
        order = sorted(range(len(windows)), key=lambda i: -windows[i].length)
        budget = self.batch_size * self.max_length
        batches, cur, longest = [], [], 0
        for i in order:
            ln = windows[i].length
            new_longest = max(longest, ln)
            if cur and (new_longest * (len(cur) + 1) > budget or len(cur) >= 4 * self.batch_size):
                batches.append(cur)
                cur, new_longest = [], ln
            cur.append(i)
            longest = new_longest
        if cur:
            batches.append(cur)
        return batches

    def _collate(self, windows: Sequence[Window]):
        torch = self.torch
        n = max(w.length for w in windows)
        ids = torch.full((len(windows), n), self.pad_id, dtype=torch.long)
        am = torch.zeros((len(windows), n), dtype=torch.long)
        tt = torch.zeros((len(windows), n), dtype=torch.long)
        for i, w in enumerate(windows):
            ids[i, : w.length] = torch.tensor(w.input_ids)
            am[i, : w.length] = 1
            tt[i, : w.length] = torch.tensor(w.token_type_ids)
        return ids.to(self.device), am.to(self.device), tt.to(self.device)

    def _call(self, ids, am, tt, mode: str, threshold_scale: float, output_attentions: bool = False):
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": am, "token_type_ids": tt}
        if self.is_adapler:
            kwargs.update(mode=mode, threshold_scale=threshold_scale)
        if output_attentions:
            kwargs["output_attentions"] = True
        return self.model(**kwargs)

    def _report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def _run(self, stage: str, windows: list[Window], fn: Callable[[list[Window], Any], list[Any]]) -> list[Any]:
        """Apply ``fn(windows_batch, tensors) -> per-window results`` over length-sorted batches."""
        results: list[Any] = [None] * len(windows)
        batches = self._batches(windows)
        total = sum(len(b) for b in batches)
        done = 0
        self._report(stage, 0, total)
        for b in batches:
            ws = [windows[i] for i in b]
            for i, r in zip(b, fn(ws, self._collate(ws))):
                results[i] = r
            done += len(b)
            self.forward_windows += len(b)
            self._report(stage, done, total)
        return results

    # ---------------------------------------------------------------- passes

    def _doc_pass(self, name: str, docs: Sequence[DocInput], compute: Callable[[list[DocInput], list[str]], list[Any]],
                  key_extra: str = "") -> list[Any]:
        table = self.cache.table(name)
        keys = [_content_key(d.alignment.input_ids, d.query_ids) + key_extra for d in docs]
        todo = [i for i, k in enumerate(keys) if k not in table]
        if todo:
            uniq: dict[str, int] = {}
            for i in todo:
                uniq.setdefault(keys[i], i)
            idx = list(uniq.values())
            for i, res in zip(idx, compute([docs[i] for i in idx], [keys[i] for i in idx])):
                table[keys[i]] = res
            self.cache.mark(name)
            self.cache.flush()
        return [table[k] for k in keys]

    def base(self, docs: Sequence[DocInput], attention: bool = False) -> list[dict]:
        """``{"probs": (C,), "attention": (P,), "rollout": (P,)}`` per document (attention keys only
        with ``attention=True``)."""
        name = "base_att" if attention else "base"
        if not attention:  # a cached attention pass has the probabilities too
            table = self.cache.table("base_att")
            hit = [table.get(_content_key(d.alignment.input_ids, d.query_ids)) for d in docs]
            if all(h is not None for h in hit):
                return [{"probs": h["probs"]} for h in hit]
        return self._doc_pass(name, docs, lambda ds, _k: self._base(ds, attention))

    def _base(self, docs: list[DocInput], attention: bool) -> list[dict]:
        torch = self.torch
        windows = [w for j, d in enumerate(docs) for w in self._windows(d.alignment, d.query_ids, j)]
        if attention:
            from adapler.attention import attention_rollout, cls_attention

        def fn(ws, tensors):
            ids, am, tt = tensors
            with torch.inference_mode():
                out = self._call(ids, am, tt, "masked", 0.0, output_attentions=attention)
                probs = torch.softmax(out.logits.float(), -1).cpu().numpy()
                if attention:
                    att = cls_attention(out.attentions, am).float().cpu().numpy()
                    rol = attention_rollout(out.attentions, am).float().cpu().numpy()
            res = []
            for i, w in enumerate(ws):
                r = {"probs": probs[i]}
                if attention:
                    r["attention"] = att[i, : w.length]
                    r["rollout"] = rol[i, : w.length]
                res.append(r)
            return res

        per_window = self._run("forward (unpruned)" + (" + attentions" if attention else ""), windows, fn)
        return self._gather(docs, windows, per_window, ["attention", "rollout"] if attention else [])

    def _gather(self, docs, windows, per_window, piece_keys: list[str]) -> list[dict]:
        by_doc: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            by_doc.setdefault(w.doc, []).append(i)
        out = []
        for j, d in enumerate(docs):
            idx = by_doc[j]
            ws = [windows[i] for i in idx]
            res: dict[str, Any] = {"probs": np.mean([per_window[i]["probs"] for i in idx], axis=0)}
            for key in piece_keys:
                res[key] = scatter_window_scores(ws, [per_window[i][key] for i in idx], d.alignment.num_pieces)
            for key in per_window[idx[0]]:
                if key not in piece_keys and key != "probs":
                    res[key] = [per_window[i][key] for i in idx]
            out.append(res)
        return out

    def adapler(self, docs: Sequence[DocInput]) -> list[dict]:
        """``{"probs", "keep": (L, P) bool, "cp": (L, P) float, "layer_lengths": [(L,) per window]}``."""
        if not self.is_adapler:
            raise ValueError("the adapler method needs an AdapLeR model (AdapLeRForSequenceClassification)")
        return self._doc_pass("adapler", docs, lambda ds, _k: self._adapler(ds), key_extra=f"@{self.threshold_scale}")

    def _adapler(self, docs: list[DocInput]) -> list[dict]:
        torch = self.torch
        windows = [w for j, d in enumerate(docs) for w in self._windows(d.alignment, d.query_ids, j)]

        def fn(ws, tensors):
            ids, am, tt = tensors
            with torch.inference_mode():
                out = self._call(ids, am, tt, "drop", self.threshold_scale)
                probs = torch.softmax(out.logits.float(), -1).cpu().numpy()
                keep = out.keep_masks.bool().cpu().numpy()
                cp = out.cp_scores.float().cpu().numpy()
                lengths = out.layer_lengths.cpu().numpy()
            return [{"probs": probs[i], "keep": keep[i, :, : w.length], "cp": cp[i, :, : w.length],
                     "layer_lengths": lengths[i]} for i, w in enumerate(ws)]

        per_window = self._run("forward (AdapLeR pruning)", windows, fn)
        return self._gather(docs, windows, per_window, ["keep", "cp"])

    def saliency(self, docs: Sequence[DocInput], targets: Sequence[int]) -> list[np.ndarray]:
        """Gradient x input per document piece, for class ``targets[i]`` of document ``i``."""
        docs = list(docs)
        table = self.cache.table("saliency")
        keys = [_content_key(d.alignment.input_ids, d.query_ids) + f"#t{int(t)}" for d, t in zip(docs, targets)]
        todo = [i for i, k in enumerate(keys) if k not in table]
        if todo:
            res = self._saliency([docs[i] for i in todo], [int(targets[i]) for i in todo])
            for i, r in zip(todo, res):
                table[keys[i]] = r
            self.cache.mark("saliency")
            self.cache.flush()
        return [table[k] for k in keys]

    def _saliency(self, docs: list[DocInput], targets: list[int]) -> list[np.ndarray]:
        torch = self.torch
        from adapler.saliency import gradient_x_input

        windows = [w for j, d in enumerate(docs) for w in self._windows(d.alignment, d.query_ids, j)]

        def fn(ws, tensors):
            ids, am, tt = tensors
            tgt = torch.tensor([targets[w.doc] for w in ws], dtype=torch.long, device=ids.device)
            sal = gradient_x_input(self.model, ids, am, token_type_ids=tt, targets=tgt)
            sal = sal.detach().float().cpu().numpy()
            return [{"probs": np.zeros(1), "saliency": sal[i, : w.length]} for i, w in enumerate(ws)]

        per_window = self._run("saliency (gradient x input)", windows, fn)
        return [r["saliency"] for r in self._gather(docs, windows, per_window, ["saliency"])]

    def predict(self, inputs: Sequence[tuple[Alignment, list[int] | None]], stage: str = "faithfulness") -> list[np.ndarray]:
        """Class probabilities (mean over windows) of re-tokenised inputs ``(alignment, query_ids)``.

        Cached by content, so the same remaining text is run once across methods and re-runs.
        """
        torch = self.torch
        name = f"predict@{self.faithfulness_threshold_scale}"
        table = self.cache.table(name)
        keys = [_content_key(a.input_ids, q) for a, q in inputs]
        todo: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in table and k not in todo:
                todo[k] = i
        if todo:
            idx = list(todo.values())
            windows = [w for j, i in enumerate(idx) for w in self._windows(inputs[i][0], inputs[i][1], j)]
            scale = self.faithfulness_threshold_scale
            mode = "masked" if scale == 0 else "drop"

            def fn(ws, tensors):
                ids, am, tt = tensors
                with torch.inference_mode():
                    out = self._call(ids, am, tt, mode, scale)
                    probs = torch.softmax(out.logits.float(), -1).cpu().numpy()
                return [{"probs": probs[i]} for i in range(len(ws))]

            per_window = self._run(stage, windows, fn)
            sums: dict[int, list] = {}
            for w, r in zip(windows, per_window):
                sums.setdefault(w.doc, []).append(r["probs"])
            for j, i in enumerate(idx):
                table[keys[i]] = np.mean(sums[j], axis=0)
            self.cache.mark(name)
            self.cache.flush()
        return [table[k] for k in keys]


def _is_adapler(model) -> bool:
    try:
        from adapler import AdapLeRForSequenceClassification
    except ImportError:  # adapler.modeling not importable: treat as a plain classifier
        return False
    return isinstance(model, AdapLeRForSequenceClassification)


# --------------------------------------------------------------------------------------------------
# methods


class RationaleMethod:
    """Interface: ``explain(docs, engine, context) -> list[MethodOutput]``.

    ``context`` carries what the runner already knows: ``base`` (the unpruned pass per document) and
    ``targets`` (predicted class per document).
    """

    name: str = ""
    needs_model: bool = True
    needs_attention: bool = False

    def explain(self, docs: Sequence[DocInput], engine: Engine | None, context: dict) -> list[MethodOutput]:
        raise NotImplementedError


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
        passes = engine.adapler(docs)
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
                extra={"probs_pruned": p["probs"], "layer_lengths": p.get("layer_lengths")},
            ))
        return outs


class SaliencyMethod(RationaleMethod):
    name = "saliency"

    def explain(self, docs, engine, context):
        sal = engine.saliency(docs, context["targets"])
        return [MethodOutput(scores=round_sig(_mask_lost(d.alignment.to_words(s), d.alignment)))
                for d, s in zip(docs, sal)]


class AttentionMethod(RationaleMethod):
    needs_attention = True

    def __init__(self, rollout: bool = False):
        self.rollout = rollout
        self.name = "attention_rollout" if rollout else "attention"

    def explain(self, docs, engine, context):
        base = context.get("base_attention") or engine.base(docs, attention=True)
        key = "rollout" if self.rollout else "attention"
        return [MethodOutput(scores=round_sig(_mask_lost(d.alignment.to_words(b[key]), d.alignment)))
                for d, b in zip(docs, base)]


class RandomMethod(RationaleMethod):
    name = "random"
    needs_model = False

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def explain(self, docs, engine, context):
        outs = []
        for d in docs:
            rng = np.random.default_rng([self.seed, zlib.crc32(d.annotation_id.encode())])
            outs.append(MethodOutput(scores=round_sig(_mask_lost(rng.random(d.num_tokens), d.alignment))))
        return outs


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


class ResultsFileError(ValueError):
    """A malformed ERASER results file; the message names the file and line."""


def load_results_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read an ERASER results file; malformed lines raise :class:`ResultsFileError` naming file and line."""
    path = Path(path)
    out, seen = [], {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ResultsFileError(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("annotation_id"), str):
                raise ResultsFileError(f"{path}:{lineno}: a result line needs a string 'annotation_id'")
            rats = rec.get("rationales", [])
            if not isinstance(rats, list) or any(not isinstance(r, dict) or "docid" not in r for r in rats):
                raise ResultsFileError(f"{path}:{lineno}: 'rationales' must be a list of objects with a 'docid'")
            for r in rats:
                for h in r.get("hard_rationale_predictions", []) or []:
                    if not isinstance(h, dict) or not all(isinstance(h.get(k), int) for k in ("start_token", "end_token")):
                        raise ResultsFileError(f"{path}:{lineno}: hard_rationale_predictions need integer start_token/end_token")
            if rec["annotation_id"] in seen:
                raise ResultsFileError(f"{path}:{lineno}: duplicate annotation_id {rec['annotation_id']!r} (line {seen[rec['annotation_id']]})")
            seen[rec["annotation_id"]] = lineno
            out.append(rec)
    return out


METHODS: dict[str, Callable[..., RationaleMethod]] = {
    "adapler": lambda **kw: AdapLeRMethod(layer=kw.get("layer")),
    "saliency": lambda **kw: SaliencyMethod(),
    "attention": lambda **kw: AttentionMethod(rollout=False),
    "attention_rollout": lambda **kw: AttentionMethod(rollout=True),
    "random": lambda **kw: RandomMethod(seed=kw.get("seed", 0)),
    "import": lambda **kw: ImportMethod(kw["import_results"]),
}


def get_method(name: str, **kwargs) -> RationaleMethod:
    """Build a method by name (``METHODS``); ``layer``, ``seed``, ``import_results`` as needed."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    if name == "import" and not kwargs.get("import_results"):
        raise ValueError("method 'import' needs an ERASER results file (--import-results FILE)")
    return METHODS[name](**kwargs)
