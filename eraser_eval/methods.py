"""Rationale methods behind one interface, and the model engine they share.

A method turns prepared documents (:class:`DocInput`) into per-document-token rationales
(:class:`MethodOutput`): soft scores, optionally its own hard rationale, and for AdapLeR the
per-layer selections. Methods never run the model themselves; they ask the :class:`Engine`, which
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
  computed from the captured query/key projections (see :func:`cls_attention_from_qk`,
  :func:`rollout_from_qk`), so the fast SDPA kernel runs the model.
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
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
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


def _window_key(w: Window) -> str:
    """Content key of one model input window (piece ids and segment ids)."""
    h = hashlib.sha1(np.asarray(w.input_ids, dtype=np.int64).tobytes())
    h.update(b"|")
    h.update(np.asarray(w.token_type_ids, dtype=np.int8).tobytes())
    return h.hexdigest()


def cls_attention_from_qk(q, k, key_mask, num_heads: int, scaling: float):
    """[CLS] row of the attention probabilities, mean over heads, from one layer's projections.

    ``q``, ``k``: (B, L, heads * d) outputs of the layer's query/key linears; ``key_mask``: (B, L)
    bool, True on real tokens. Equals ``adapler.attention.cls_attention`` on the eager kernel's
    probabilities (``softmax(q k^T * scaling + mask)``; a masked key gets weight exactly 0 either way)
    without computing the other L - 1 rows. Returns (B, L), 0 on padding.
    """
    import torch

    B, L, _ = k.shape
    q0 = q[:, 0].float().reshape(B, num_heads, -1)
    kk = k.float().reshape(B, L, num_heads, -1)
    s = torch.einsum("bhd,blhd->bhl", q0, kk) * scaling
    s = s.masked_fill(~key_mask[:, None, :], float("-inf"))
    return s.softmax(-1).mean(1) * key_mask


def rollout_from_qk(qs, ks, key_mask, num_heads: int, scaling: float):
    """Attention rollout, [CLS] row, from every layer's query/key projections (first layer first).

    The same quantity as ``adapler.attention.attention_rollout`` (per layer: mean over heads, add the
    identity, renormalise rows; product ``A_L ... A_1``), computed as the row vector
    ``e_0^T A_L A_(L-1) ... A_1`` (a vector-matrix product per layer instead of an L x L x L one), one
    layer's probabilities in memory at a time. Returns (B, L), 0 on padding.
    """
    import torch

    v = None
    for q, k in zip(reversed(list(qs)), reversed(list(ks))):
        B, L, _ = q.shape
        qh = q.float().reshape(B, L, num_heads, -1).transpose(1, 2)
        kh = k.float().reshape(B, L, num_heads, -1).transpose(1, 2)
        s = (qh @ kh.transpose(-1, -2)) * scaling
        s = s.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        a = s.softmax(-1).mean(1)  # (B, L, L)
        del s
        a = a + torch.eye(L, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        v = a[:, 0, :] if v is None else torch.bmm(v[:, None, :], a)[:, 0, :]
    return v * key_mask


class _Capture:
    """Forward hooks for one unpruned pass: the embedding output as a gradient leaf (``grad=True``),
    and the query/key projections of the given encoder layers."""

    def __init__(self, model, layers: Sequence[int], grad: bool):
        self.model, self.layers, self.grad = model, list(layers), grad
        self.emb = None
        self.q: dict[int, Any] = {}
        self.k: dict[int, Any] = {}
        self.handles: list = []

    def __enter__(self):
        base = self.model.base_model
        if self.grad:
            def emb_hook(module, inputs, output):
                leaf = output.detach().requires_grad_(True)  # backward stops here: no weight gradients
                self.emb = leaf
                return leaf

            self.handles.append(base.embeddings.register_forward_hook(emb_hook))
        for l in self.layers:
            sa = base.encoder.layer[l].attention.self

            def store(target, l):
                def hook(module, inputs, output):
                    target[l] = output.detach()
                return hook

            self.handles.append(sa.query.register_forward_hook(store(self.q, l)))
            self.handles.append(sa.key.register_forward_hook(store(self.k, l)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        return False


class Engine:
    """Runs the model over windows of many documents, batched by length, with caching.

    ``batch_size`` is the number of full-length windows per batch: every batch is packed to the same
    token budget (``batch_size * max_length`` padded tokens), so short windows (sufficiency inputs,
    last windows of documents) go many to a batch and are padded only to the longest of their batch.
    Passes:

    * :meth:`unpruned` - ONE unpruned pass (``mode="masked"``, ``threshold_scale=0``, the fast SDPA
      kernel) that gives, as asked, the document class probabilities (mean over windows), the
      gradient x input saliency for the predicted (or given) class (one backward to the embedding
      output, no weight gradients) and the [CLS] attention / rollout piece scores (computed from the
      captured query/key projections, so no eager attention kernel is needed). :meth:`base` and
      :meth:`saliency` are views of it, served from the same cache.
    * :meth:`adapler` - pruned forward (``mode="drop"``, ``threshold_scale``): keep masks and CP
      scores per layer and piece, and the pruned model's probabilities.
    * :meth:`predict` - class probabilities of arbitrary (word-deleted) inputs for faithfulness,
      unpruned unless ``faithfulness_threshold_scale`` is set. Cached per *window*: a window whose
      pieces equal one already run (in the full document's pass, for another method or another AOPC
      bin) is not run again.

    ``stats`` counts, per stage, the windows, real and padded tokens and seconds of model work;
    ``forward_windows`` the windows run (not served from a cache).
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
        self.stats: dict[str, dict[str, float]] = {}

    # ---------------------------------------------------------------- plumbing

    def _windows(self, alignment: Alignment, query_ids, doc: int) -> list[Window]:
        return make_windows(alignment, self.tokenizer, self.max_length, query_ids, doc=doc)

    @property
    def token_budget(self) -> int:
        return self.batch_size * self.max_length

    def _batches(self, windows: Sequence[Window]) -> list[list[int]]:
        """Longest first, each batch at most ``token_budget`` padded tokens (and 64 x batch_size
        windows); a window much shorter than its batch's longest (< 80% and > 16 pieces shorter)
        starts a new batch rather than be padded."""
        order = sorted(range(len(windows)), key=lambda i: -windows[i].length)
        budget, cap = self.token_budget, 64 * self.batch_size
        batches, cur, longest = [], [], 0
        for i in order:
            ln = windows[i].length
            new_longest = max(longest, ln)
            too_short = ln < 0.8 * longest and longest - ln > 16
            if cur and (new_longest * (len(cur) + 1) > budget or len(cur) >= cap or too_short):
                batches.append(cur)
                cur, new_longest = [], ln
            cur.append(i)
            longest = new_longest
        if cur:
            batches.append(cur)
        return batches

    @staticmethod
    def _sub_batches(lengths: Sequence[int], tolerance: float = 0.8) -> list[list[int]]:
        """Split positions into groups of similar length (each >= ``tolerance`` x its group's longest)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        groups: list[list[int]] = []
        for i in order:
            if groups and lengths[i] >= tolerance * lengths[groups[-1][0]]:
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups

    def _collate(self, windows: Sequence[Window]):
        torch = self.torch
        n = max(w.length for w in windows)
        ids = np.full((len(windows), n), self.pad_id, dtype=np.int64)
        am = np.zeros((len(windows), n), dtype=np.int64)
        tt = np.zeros((len(windows), n), dtype=np.int64)
        for i, w in enumerate(windows):
            ids[i, : w.length] = w.input_ids
            am[i, : w.length] = 1
            tt[i, : w.length] = w.token_type_ids
        return (torch.from_numpy(ids).to(self.device), torch.from_numpy(am).to(self.device),
                torch.from_numpy(tt).to(self.device))

    def _call(self, ids, am, tt, mode: str, threshold_scale: float, output_attentions: bool = False):
        if self.is_adapler and mode == "masked" and threshold_scale == 0.0 and not output_attentions:
            # At threshold scale 0 no token is ever removed, so the unpruned AdapLeR model is exactly its
            # BERT encoder followed by its classification head: run that directly and skip the
            # Contribution Predictors and per-layer masks (about 6% of a forward; same logits).
            hidden = self.model.bert(input_ids=ids, attention_mask=am, token_type_ids=tt).last_hidden_state
            return SimpleNamespace(logits=self.model.classify(hidden))
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": am, "token_type_ids": tt}
        if self.is_adapler:
            kwargs.update(mode=mode, threshold_scale=threshold_scale)
        if output_attentions:
            kwargs["output_attentions"] = True
        return self.model(**kwargs)

    def _report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def _account(self, stage: str, windows: Sequence[Window], width: int, seconds: float) -> None:
        s = self.stats.setdefault(stage, {"windows": 0, "tokens": 0, "padded_tokens": 0, "batches": 0, "seconds": 0.0})
        s["windows"] += len(windows)
        s["tokens"] += sum(w.length for w in windows)
        s["padded_tokens"] += width * len(windows)
        s["batches"] += 1
        s["seconds"] += seconds
        self.forward_windows += len(windows)

    def _run(self, stage: str, windows: list[Window], fn: Callable[[list[Window], Any], list[Any]]) -> list[Any]:
        """Apply ``fn(windows_batch, tensors) -> per-window results`` over length-sorted batches."""
        results: list[Any] = [None] * len(windows)
        batches = self._batches(windows)
        total = sum(len(b) for b in batches)
        done = 0
        self._report(stage, 0, total)
        for b in batches:
            t0 = time.perf_counter()
            ws = [windows[i] for i in b]
            tensors = self._collate(ws)
            for i, r in zip(b, fn(ws, tensors)):
                results[i] = r
            done += len(b)
            self._account(stage, ws, int(tensors[0].shape[1]), time.perf_counter() - t0)
            self._report(stage, done, total)
        return results

    def _window_table(self, scale: float) -> str:
        """Cache table of per-window probabilities of the model at ``scale`` (the :meth:`predict` mode)."""
        return f"windows@{float(scale)}"

    def _seed_windows(self, scale: float, windows: Sequence[Window], per_window: Sequence[dict]) -> None:
        """Record per-window probabilities of a full-document pass for :meth:`predict` at ``scale``."""
        name = self._window_table(scale)
        table = self.cache.table(name)
        for w, r in zip(windows, per_window):
            table.setdefault(_window_key(w), r["probs"])
        self.cache.mark(name)

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
        with ``attention=True``); see :meth:`unpruned`."""
        res = self.unpruned(docs, attention=attention, rollout=attention)
        keys = ("probs", "attention", "rollout") if attention else ("probs",)
        return [{k: r[k] for k in keys} for r in res]

    def saliency(self, docs: Sequence[DocInput], targets: Sequence[int]) -> list[np.ndarray]:
        """Gradient x input per document piece, for class ``targets[i]`` of document ``i``."""
        return [r["saliency"] for r in self.unpruned(docs, targets=targets, saliency=True)]

    def unpruned(self, docs: Sequence[DocInput], targets: Sequence[int] | None = None, saliency: bool = False,
                 attention: bool = False, rollout: bool = False) -> list[dict]:
        """The unpruned pass, per document: ``{"probs": (C,)}`` (mean over windows) and, as asked,
        ``"attention"``/``"rollout"`` (P,) piece scores, ``"saliency"`` (P,) gradient x input for class
        ``targets[i]`` (None: the document's predicted class) with ``"target"`` the class used.

        Everything asked for comes from one forward (plus one backward for saliency) per window;
        results are cached per document content, so asking again (or for less) runs nothing.
        """
        docs = list(docs)
        table = self.cache.table("unpruned")
        sal_table = self.cache.table("saliency")
        keys = [_content_key(d.alignment.input_ids, d.query_ids) for d in docs]
        wanted = ["probs"] + (["attention"] if attention else []) + (["rollout"] if rollout else [])

        def target_of(i: int) -> int | None:
            if targets is not None:
                return int(targets[i])
            entry = table.get(keys[i])
            return int(np.argmax(entry["probs"])) if entry is not None else None

        def missing(i: int) -> bool:
            entry = table.get(keys[i])
            if entry is None or any(w not in entry for w in wanted):
                return True
            if saliency:
                t = target_of(i)
                return t is None or f"{keys[i]}#t{t}" not in sal_table
            return False

        todo: dict[str, int] = {}
        for i in range(len(docs)):
            if missing(i):
                todo.setdefault(keys[i], i)
        if todo:
            idx = list(todo.values())
            res = self._unpruned([docs[i] for i in idx], None if targets is None else [int(targets[i]) for i in idx],
                                 saliency, attention, rollout)
            for i, r in zip(idx, res):
                entry = dict(table.get(keys[i], {}))
                entry.update({k: r[k] for k in ("probs", "attention", "rollout") if k in r})
                table[keys[i]] = entry
                if saliency:
                    sal_table[f"{keys[i]}#t{r['target']}"] = r["saliency"]
            self.cache.mark("unpruned")
            if saliency:
                self.cache.mark("saliency")
            self.cache.flush()
        out = []
        for i in range(len(docs)):
            entry = table[keys[i]]
            r = {k: entry[k] for k in wanted}
            if saliency:
                t = target_of(i)
                r["target"] = t
                r["saliency"] = sal_table[f"{keys[i]}#t{t}"]
            out.append(r)
        return out

    def _attention_layout(self):
        base = self.model.base_model
        layers = base.encoder.layer
        sa = layers[-1].attention.self
        heads = int(sa.num_attention_heads)
        scaling = float(getattr(sa, "scaling", sa.attention_head_size ** -0.5))
        return len(layers), heads, scaling

    def _unpruned(self, docs: list[DocInput], targets: list[int] | None, saliency: bool, attention: bool,
                  rollout: bool) -> list[dict]:
        torch = self.torch
        n_layers, heads, scaling = self._attention_layout()
        cap_layers = list(range(n_layers)) if rollout else [n_layers - 1] if attention else []
        windows = [w for j, d in enumerate(docs) for w in self._windows(d.alignment, d.query_ids, j)]
        stage = "forward (unpruned)" + (" + saliency" if saliency else "") + (" + attention" if attention or rollout else "")

        def scores(cap, am, ws, probs) -> list[dict]:
            mask = am.bool()
            res = [{"probs": probs[i]} for i in range(len(ws))]
            with torch.no_grad():
                if attention:
                    l = n_layers - 1
                    att = cls_attention_from_qk(cap.q[l], cap.k[l], mask, heads, scaling).cpu().numpy()
                    for i, w in enumerate(ws):
                        res[i]["attention"] = att[i, : w.length]
                if rollout:
                    rol = rollout_from_qk([cap.q[l] for l in range(n_layers)], [cap.k[l] for l in range(n_layers)],
                                          mask, heads, scaling).cpu().numpy()
                    for i, w in enumerate(ws):
                        res[i]["rollout"] = rol[i, : w.length]
            cap.q.clear()
            cap.k.clear()
            return res

        if not saliency:
            def fn(ws, tensors):
                ids, am, tt = tensors
                with torch.inference_mode(), _Capture(self.model, cap_layers, grad=False) as cap:
                    out = self._call(ids, am, tt, "masked", 0.0)
                    probs = torch.softmax(out.logits.float(), -1).cpu().numpy()
                    return scores(cap, am, ws, probs)

            per_window = self._run(stage, windows, fn)
        else:
            per_window = self._saliency_steps(stage, docs, windows, targets, cap_layers, scores)
        self._seed_windows(0.0, windows, per_window)
        out = self._gather(docs, windows, per_window, [k for k in ("attention", "rollout", "saliency") if k in per_window[0]])
        for j, r in enumerate(out):
            if saliency:
                r["target"] = int(targets[j]) if targets is not None else int(np.argmax(r["probs"]))
        return out

    def _saliency_steps(self, stage, docs, windows, targets, cap_layers, scores) -> list[dict]:
        """Forward + backward in steps of whole documents (so a document's predicted class, the
        saliency target, is known before its backward), each step at most ``token_budget`` tokens
        (one document at least), its windows run in sub-batches of similar length."""
        torch = self.torch
        by_doc: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            by_doc.setdefault(w.doc, []).append(i)
        order = sorted(by_doc, key=lambda j: (-len(by_doc[j]), -windows[by_doc[j][-1]].length))
        steps: list[list[int]] = []
        cur, cur_tokens = [], 0
        for j in order:
            tokens = sum(windows[i].length for i in by_doc[j])
            if cur and cur_tokens + tokens > self.token_budget:
                steps.append(cur)
                cur, cur_tokens = [], 0
            cur.append(j)
            cur_tokens += tokens
        if cur:
            steps.append(cur)
        per_window: list[Any] = [None] * len(windows)
        total, done = len(windows), 0
        self._report(stage, 0, total)
        for step in steps:
            t0 = time.perf_counter()
            win_idx = [i for j in step for i in by_doc[j]]
            groups = [[win_idx[p] for p in g] for g in self._sub_batches([windows[i].length for i in win_idx])]
            runs = []
            with torch.enable_grad():
                for g in groups:
                    ws = [windows[i] for i in g]
                    ids, am, tt = self._collate(ws)
                    with _Capture(self.model, cap_layers, grad=True) as cap:
                        logits = self._call(ids, am, tt, "masked", 0.0).logits.float()
                    probs = torch.softmax(logits.detach(), -1).cpu().numpy()
                    for i, r in zip(g, scores(cap, am, ws, probs)):
                        per_window[i] = r
                    runs.append((g, ws, am, logits, cap.emb))
                doc_target = {}
                for j in step:
                    doc_target[j] = (int(targets[j]) if targets is not None
                                     else int(np.argmax(np.mean([per_window[i]["probs"] for i in by_doc[j]], axis=0))))
                loss = 0
                for _g, ws, _am, logits, _emb in runs:
                    tgt = torch.tensor([doc_target[w.doc] for w in ws], dtype=torch.long, device=logits.device)
                    # rows are independent, so the gradient of the sum is each row's own gradient
                    loss = loss + logits.gather(1, tgt[:, None]).sum()
                grads = torch.autograd.grad(loss, [r[4] for r in runs])
            for (g, ws, am, _logits, emb), grad in zip(runs, grads):
                sal = ((grad * emb).norm(dim=-1) * am.to(grad.dtype)).detach().float().cpu().numpy()
                for p, (i, w) in enumerate(zip(g, ws)):
                    per_window[i]["saliency"] = sal[p, : w.length]
                self._account(stage, ws, int(am.shape[1]), 0.0)
            del runs, grads, loss
            self.stats[stage]["seconds"] += time.perf_counter() - t0
            done += len(win_idx)
            self._report(stage, done, total)
        return per_window

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
        # the same windows in the same mode as predict() at this scale: faithfulness reuses them
        self._seed_windows(self.threshold_scale, windows, per_window)
        return self._gather(docs, windows, per_window, ["keep", "cp"])

    def predict(self, inputs: Sequence[tuple[Alignment, list[int] | None]], stage: str = "faithfulness") -> list[np.ndarray]:
        """Class probabilities (mean over windows) of inputs ``(alignment, query_ids)``.

        Unpruned (``mode="masked"``, scale 0) unless ``faithfulness_threshold_scale`` is set
        (``mode="drop"`` at that scale). Cached per window content: every distinct window is run
        once, across inputs, methods, AOPC bins and the full documents' own passes.
        """
        torch = self.torch
        scale = self.faithfulness_threshold_scale
        name = self._window_table(scale)
        table = self.cache.table(name)
        input_keys: list[list[str]] = []
        todo: dict[str, Window] = {}
        requested = 0
        for j, (al, q) in enumerate(inputs):
            ks = []
            for w in self._windows(al, q, j):
                k = _window_key(w)
                ks.append(k)
                if k not in table and k not in todo:
                    todo[k] = w
            requested += len(ks)
            input_keys.append(ks)
        s = self.stats.setdefault(stage, {"windows": 0, "tokens": 0, "padded_tokens": 0, "batches": 0, "seconds": 0.0})
        s["windows_requested"] = s.get("windows_requested", 0) + requested
        if todo:
            mode = "masked" if scale == 0 else "drop"

            def fn(ws, tensors):
                ids, am, tt = tensors
                with torch.inference_mode():
                    out = self._call(ids, am, tt, mode, scale)
                    probs = torch.softmax(out.logits.float(), -1).cpu().numpy()
                return list(probs)

            for k, p in zip(todo, self._run(stage, list(todo.values()), fn)):
                table[k] = p
            self.cache.mark(name)
        self.cache.flush()
        return [np.mean([table[k] for k in ks], axis=0) for ks in input_keys]


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
    #: what the method reads from the unpruned pass (``Engine.unpruned``): "saliency", "attention", "rollout"
    unpruned_outputs: tuple[str, ...] = ()

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
    unpruned_outputs = ("saliency",)

    def explain(self, docs, engine, context):
        sal = engine.saliency(docs, context["targets"])
        return [MethodOutput(scores=round_sig(_mask_lost(d.alignment.to_words(s), d.alignment)))
                for d, s in zip(docs, sal)]


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
