"""The model engine shared by every rationale method, the ERASER runner and the per-text analysis.

It runs the model over windows of many documents, batched by length, caches every pass (bounded,
least recently used out; optionally on disk per model fingerprint) and shares passes between
methods: one unpruned forward + backward gives the predictions, saliency and both attention scores.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from adapler import AdapLeRForSequenceClassification
from adapler.attention import attention_layout, capture_qk, cls_attention_from_qk, rollout_from_qk
from adapler.attribution import ig_token_scores, integrated_gradients, occlusion
from adapler.data import collate
from adapler.inference import MODEL_INPUTS, feature_batches
from adapler.saliency import capture_embeddings, saliency_scores

from .align import Alignment, Window, make_windows, scatter_window_scores
from .cache import DEFAULT_MAX_ENTRIES, Cache, content_key, window_key
from .fingerprint import model_fingerprint
from .types import DocInput

__all__ = ["Engine", "ProgressFn"]


ProgressFn = Callable[[str, int, int], None]


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
      captured query/key projections, so no eager attention kernel is needed). :meth:`saliency` is a
      view of it, served from the same cache.
    * :meth:`adapler` - pruned forward (``mode="drop"``; the threshold scale per call, default
      ``threshold_scale``): keep masks and CP scores per layer and piece, and the pruned model's
      probabilities. A pass the caller already ran can be handed in (``precomputed=``).
    * :meth:`integrated_gradients`, :meth:`occlusion` - captum's Integrated Gradients (on the
      embedding output, ``[PAD]`` baseline) and word occlusion (``[MASK]`` replacement) of the
      unpruned model for given classes (:mod:`adapler.attribution`), cached per document, class and
      setting.
    * :meth:`predict` - class probabilities of arbitrary (word-deleted) inputs for faithfulness,
      unpruned unless ``faithfulness_threshold_scale`` is set. Cached per *window*: a window whose
      pieces equal one already run (in the full document's pass, for another method or another AOPC
      bin) is not run again.

    ``cache_size``: entries kept per cache table (least recently used out; None = unbounded);
    ``cache_dir``: also keep the tables on disk, per model fingerprint. ``stats`` counts, per stage,
    the windows, real and padded tokens and seconds of model work; ``forward_windows`` the windows
    run (not served from a cache).

    Cost: every per-document result carries the milliseconds its passes took when they ran
    (``"ms"``; the unpruned pass ``"ms_forward"`` and, with saliency, ``"ms_backward"``), the time
    of a batch shared among its windows in proportion to their tokens. It is cached with the result,
    so a cached answer reports the cost of computing it.
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
        cache_size: int | None = DEFAULT_MAX_ENTRIES,
    ):
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
        self.cache = Cache(root, cache_size)
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

    @staticmethod
    def _features(windows: Sequence[Window]) -> list[dict]:
        return [{"input_ids": w.input_ids, "token_type_ids": w.token_type_ids} for w in windows]

    def _collate(self, windows: Sequence[Window]):
        batch = collate(self._features(windows), self.pad_id)
        return tuple(batch[k].to(self.device) for k in MODEL_INPUTS)

    def _call(self, ids, am, tt, mode: str, threshold_scale: float, output_attentions: bool = False,
              output_token_masks: bool = False):
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
        if output_token_masks:
            kwargs["output_token_masks"] = True
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
        t0 = time.perf_counter()
        for b, batch in feature_batches(self._features(windows), batches=batches, pad_id=self.pad_id):
            ws = [windows[i] for i in b]
            tensors = tuple(batch[k].to(self.device) for k in MODEL_INPUTS)
            out = fn(ws, tensors)
            seconds = time.perf_counter() - t0
            for i, r, ms in zip(b, out, _share_ms(ws, seconds)):
                if isinstance(r, dict):
                    r["ms"] = ms
                results[i] = r
            done += len(b)
            self._account(stage, ws, int(tensors[0].shape[1]), seconds)
            self._report(stage, done, total)
            t0 = time.perf_counter()
        return results

    def _window_table(self, scale: float) -> str:
        """Cache table of per-window probabilities of the model at ``scale`` (the :meth:`predict` mode)."""
        return f"windows@{float(scale)}"

    def _seed_windows(self, scale: float, windows: Sequence[Window], per_window: Sequence[dict]) -> None:
        """Record per-window probabilities of a full-document pass for :meth:`predict` at ``scale``."""
        name = self._window_table(scale)
        table = self.cache.table(name)
        for w, r in zip(windows, per_window):
            table.setdefault(window_key(w), r["probs"])
        self.cache.mark(name)

    # ---------------------------------------------------------------- passes

    def _doc_pass(self, name: str, docs: Sequence[DocInput], compute: Callable[[list[DocInput], list[str]], list[Any]],
                  key_extra: str | Sequence[str] = "") -> list[Any]:
        """Cached per document: ``compute(docs, keys)`` for the documents not in table ``name``;
        ``key_extra``: a suffix of every key, or one per document (e.g. its target class)."""
        table = self.cache.table(name)
        extras = [key_extra] * len(docs) if isinstance(key_extra, str) else list(key_extra)
        keys = [content_key(d.alignment.input_ids, d.query_ids) + e for d, e in zip(docs, extras)]
        todo = [i for i, k in enumerate(keys) if k not in table]
        if todo:
            uniq: dict[str, int] = {}
            for i in todo:
                uniq.setdefault(keys[i], i)
            idx = list(uniq.values())
            for i, res in zip(idx, compute([docs[i] for i in idx], [keys[i] for i in idx])):
                table[keys[i]] = res
            self.cache.mark(name)
        out = [table[k] for k in keys]
        self.cache.flush()
        return out

    def saliency(self, docs: Sequence[DocInput], targets: Sequence[int]) -> list[np.ndarray]:
        """Gradient x input per document piece, for class ``targets[i]`` of document ``i``."""
        return [r["saliency"] for r in self.unpruned(docs, targets=targets, saliency=True)]

    def unpruned(self, docs: Sequence[DocInput], targets: Sequence[int] | None = None, saliency: bool = False,
                 attention: bool = False, rollout: bool = False) -> list[dict]:
        """The unpruned pass, per document: ``{"probs": (C,)}`` (mean over windows) and, as asked,
        ``"attention"``/``"rollout"`` (P,) piece scores, ``"saliency"`` (P,) gradient x input for class
        ``targets[i]`` (None: the document's predicted class) with ``"target"`` the class used;
        ``"ms_forward"`` (and ``"ms_backward"`` once saliency was computed) the measured cost.

        Everything asked for comes from one forward (plus one backward for saliency) per window;
        results are cached per document content, so asking again (or for less) runs nothing.
        """
        docs = list(docs)
        table = self.cache.table("unpruned")
        sal_table = self.cache.table("saliency")
        keys = [content_key(d.alignment.input_ids, d.query_ids) for d in docs]
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
                entry.update({k: r[k] for k in ("probs", "attention", "rollout", "ms_forward", "ms_backward") if k in r})
                table[keys[i]] = entry
                if saliency:
                    sal_table[f"{keys[i]}#t{r['target']}"] = r["saliency"]
            self.cache.mark("unpruned")
            if saliency:
                self.cache.mark("saliency")
        out = []
        for i in range(len(docs)):
            entry = table[keys[i]]
            r = {k: entry[k] for k in wanted}
            r.update({k: entry[k] for k in ("ms_forward", "ms_backward") if k in entry})
            if saliency:
                t = target_of(i)
                r["target"] = t
                r["saliency"] = sal_table[f"{keys[i]}#t{t}"]
            out.append(r)
        self.cache.flush()
        return out

    def _unpruned(self, docs: list[DocInput], targets: list[int] | None, saliency: bool, attention: bool,
                  rollout: bool) -> list[dict]:
        n_layers, heads, scaling = attention_layout(self.model)
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
                with torch.inference_mode(), capture_qk(self.model, cap_layers) as cap:
                    out = self._call(ids, am, tt, "masked", 0.0)
                    probs = torch.softmax(out.logits.float(), -1).cpu().numpy()
                    return scores(cap, am, ws, probs)

            per_window = self._run(stage, windows, fn)
            for r in per_window:
                r["ms_forward"] = r.pop("ms")
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
                    t_fwd = time.perf_counter()
                    ws = [windows[i] for i in g]
                    ids, am, tt = self._collate(ws)
                    with capture_qk(self.model, cap_layers) as cap, capture_embeddings(self.model) as emb:
                        logits = self._call(ids, am, tt, "masked", 0.0).logits.float()
                    probs = torch.softmax(logits.detach(), -1).cpu().numpy()
                    results = scores(cap, am, ws, probs)
                    for i, r, ms in zip(g, results, _share_ms(ws, time.perf_counter() - t_fwd)):
                        r["ms_forward"] = ms
                        per_window[i] = r
                    runs.append((g, ws, am, logits, emb.emb))
                t_bwd = time.perf_counter()
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
            bwd_ms = _share_ms([windows[i] for i in win_idx], time.perf_counter() - t_bwd)
            bwd_of = dict(zip(win_idx, bwd_ms))
            for (g, ws, am, _logits, emb), grad in zip(runs, grads):
                sal = saliency_scores(grad, emb, am).float().cpu().numpy()
                for p, (i, w) in enumerate(zip(g, ws)):
                    per_window[i]["saliency"] = sal[p, : w.length]
                    per_window[i]["ms_backward"] = bwd_of[i]
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
            res: dict[str, Any] = {}
            if "probs" in per_window[idx[0]]:
                res["probs"] = np.mean([per_window[i]["probs"] for i in idx], axis=0)
            for key in piece_keys:
                res[key] = scatter_window_scores(ws, [per_window[i][key] for i in idx], d.alignment.num_pieces)
            for key in per_window[idx[0]]:
                if key.startswith("ms"):  # cost of the document = sum over its windows
                    res[key] = float(sum(per_window[i][key] for i in idx))
                elif key not in piece_keys and key != "probs":
                    res[key] = [per_window[i][key] for i in idx]
            out.append(res)
        return out

    def adapler(self, docs: Sequence[DocInput], threshold_scale: float | None = None,
                precomputed: Sequence[dict] | None = None) -> list[dict]:
        """The pruned pass (``mode="drop"``) per document: ``{"probs", "keep": (L, P) bool,
        "cp": (L, P) float, "layer_lengths": [(L,) per window]}``.

        ``threshold_scale``: scale of the learned thresholds for this call (default: the engine's).
        ``precomputed``: the same pass already run by the caller (e.g. the explorer's timed forward),
        one dict per document as above; it is cached and returned, and the model is not run.
        """
        if not self.is_adapler:
            raise ValueError("the adapler method needs an AdapLeR model (AdapLeRForSequenceClassification)")
        scale = self.threshold_scale if threshold_scale is None else float(threshold_scale)
        if precomputed is None:
            return self._doc_pass("adapler", docs, lambda ds, _k: self._adapler(ds, scale), key_extra=f"@{scale}")
        if len(precomputed) != len(docs):
            raise ValueError(f"precomputed AdapLeR pass for {len(precomputed)} documents, {len(docs)} given")
        table = self.cache.table("adapler")
        for d, p in zip(docs, precomputed):
            table[content_key(d.alignment.input_ids, d.query_ids) + f"@{scale}"] = p
        self.cache.mark("adapler")
        self.cache.flush()
        return list(precomputed)

    def _adapler(self, docs: list[DocInput], scale: float) -> list[dict]:
        windows = [w for j, d in enumerate(docs) for w in self._windows(d.alignment, d.query_ids, j)]

        def fn(ws, tensors):
            ids, am, tt = tensors
            with torch.inference_mode():
                out = self._call(ids, am, tt, "drop", scale, output_token_masks=True)
                probs = torch.softmax(out.logits.float(), -1).cpu().numpy()
                keep = out.keep_masks.bool().cpu().numpy()
                cp = out.cp_scores.float().cpu().numpy()
                lengths = out.layer_lengths.cpu().numpy()
            return [{"probs": probs[i], "keep": keep[i, :, : w.length], "cp": cp[i, :, : w.length],
                     "layer_lengths": lengths[i]} for i, w in enumerate(ws)]

        per_window = self._run("forward (AdapLeR pruning)", windows, fn)
        # the same windows in the same mode as predict() at this scale: faithfulness reuses them
        self._seed_windows(scale, windows, per_window)
        return self._gather(docs, windows, per_window, ["keep", "cp"])

    def integrated_gradients(self, docs: Sequence[DocInput], targets: Sequence[int], steps: int = 20) -> list[dict]:
        """Integrated Gradients per document for class ``targets[i]``: ``{"scores": (P,) piece scores
        (L2 over hidden of the attribution to the embedding output), "ms", "forward", "backward"}``.

        Baseline: the same window with ``[PAD]`` at every document piece ([CLS], [SEP], a query and
        padding unchanged). Windows of similar length go together; each forward/backward takes as
        many interpolation rows as fit in ``token_budget`` tokens.
        """
        steps = int(steps)
        if steps < 1:
            raise ValueError(f"Integrated Gradients needs at least 1 step, got {steps}")
        return self._targeted_pass("integrated_gradients", docs, targets, f"@steps{steps}",
                                   lambda ds, ts: self._ig(ds, ts, steps))

    def occlusion(self, docs: Sequence[DocInput], targets: Sequence[int]) -> list[dict]:
        """Word occlusion per document for class ``targets[i]``: ``{"scores": (P,), "ms", "forward",
        "backward"}``; a piece's score = p(target | window) - p(target | window with every piece of
        its word replaced by [MASK]), divided by the document's windows (the drop of the document's
        probability, the mean over windows)."""
        return self._targeted_pass("occlusion", docs, targets, "", self._occlusion)

    def _targeted_pass(self, name: str, docs, targets, setting: str, compute) -> list[dict]:
        target_of = {content_key(d.alignment.input_ids, d.query_ids) + f"#t{int(t)}{setting}": int(t)
                     for d, t in zip(docs, targets)}
        return self._doc_pass(name, docs, lambda ds, keys: compute(ds, [target_of[k] for k in keys]),
                              key_extra=[f"#t{int(t)}{setting}" for t in targets])

    def _ig(self, docs: list[DocInput], targets: list[int], steps: int) -> list[dict]:
        windows = [w for j, d in enumerate(docs) for w in self._windows(d.alignment, d.query_ids, j)]
        stage = f"integrated gradients ({steps} steps)"
        per_window: list[Any] = [None] * len(windows)
        self._report(stage, 0, len(windows))
        done = 0
        for b in self._batches(windows):
            t0 = time.perf_counter()
            ws = [windows[i] for i in b]
            ids, am, tt = self._collate(ws)  # (B, L)
            base = ids.clone()
            for r, w in enumerate(ws):
                base[r, 1: 1 + w.num_doc_pieces] = self.pad_id
            rows = max(len(ws), self.token_budget // ids.shape[1])  # interpolation rows per forward/backward
            attr = integrated_gradients(self.model, ids, am, base, [targets[w.doc] for w in ws], tt, steps=steps,
                                        internal_batch_size=rows)
            sc = ig_token_scores(attr, am).float().cpu().numpy()
            seconds = time.perf_counter() - t0
            for r, (i, w, ms) in enumerate(zip(b, ws, _share_ms(ws, seconds))):
                # captum runs the input and the baseline once to read their embedding outputs
                per_window[i] = {"scores": sc[r, : w.length], "ms": ms, "forward": steps + 2, "backward": steps}
            self._account(stage, ws, int(ids.shape[1]), seconds)
            done += len(b)
            self._report(stage, done, len(windows))
        return self._per_doc_cost(self._gather(docs, windows, per_window, ["scores"]), docs, windows)

    def _occlusion(self, docs: list[DocInput], targets: list[int]) -> list[dict]:
        windows = [w for j, d in enumerate(docs) for w in self._windows(d.alignment, d.query_ids, j)]
        n_windows = np.bincount([w.doc for w in windows], minlength=len(docs))
        stage = "occlusion"
        mask_id = self.tokenizer.mask_token_id if self.tokenizer.mask_token_id is not None else self.pad_id
        per_window: list[Any] = [None] * len(windows)
        self._report(stage, 0, len(windows))
        for n, w in enumerate(windows):
            if w.num_doc_pieces == 0:  # nothing to occlude
                per_window[n] = {"scores": np.zeros(w.length), "ms": 0.0, "forward": 0, "backward": 0}
                continue
            t0 = time.perf_counter()
            ids, am, tt = self._collate([w])  # (1, L)
            words = docs[w.doc].alignment.piece_word[w.start: w.end]
            _, group = np.unique(words, return_inverse=True)  # 0..G-1 per document piece, one group per word
            feature_mask = torch.zeros_like(ids)  # [CLS], [SEP] and a query join group 0 and never change
            feature_mask[0, 1: 1 + w.num_doc_pieces] = torch.as_tensor(group, dtype=ids.dtype)
            replacement = ids.clone()
            replacement[0, 1: 1 + w.num_doc_pieces] = mask_id
            attr = occlusion(self.model, ids, am, feature_mask, replacement, [targets[w.doc]], tt,
                             perturbations_per_eval=max(1, self.token_budget // w.length))
            scores = attr[0].cpu().numpy() / n_windows[w.doc]
            scores[0] = 0.0
            scores[1 + w.num_doc_pieces:] = 0.0
            seconds = time.perf_counter() - t0
            per_window[n] = {"scores": scores, "ms": 1000 * seconds, "forward": 1 + (int(group.max()) + 1),
                             "backward": 0}
            self._account(stage, [w], w.length, seconds)
            self._report(stage, n + 1, len(windows))
        return self._per_doc_cost(self._gather(docs, windows, per_window, ["scores"]), docs, windows)

    @staticmethod
    def _per_doc_cost(out: list[dict], docs, windows) -> list[dict]:
        """Model passes per document in passes over the whole input: window runs / windows."""
        n_windows = np.bincount([w.doc for w in windows], minlength=len(docs))
        for r, n in zip(out, n_windows):
            for key in ("forward", "backward"):
                r[key] = float(sum(r[key])) / n
        return out

    def predict(self, inputs: Sequence[tuple[Alignment, list[int] | None]], stage: str = "faithfulness") -> list[np.ndarray]:
        """Class probabilities (mean over windows) of inputs ``(alignment, query_ids)``.

        Unpruned (``mode="masked"``, scale 0) unless ``faithfulness_threshold_scale`` is set
        (``mode="drop"`` at that scale). Cached per window content: every distinct window is run
        once, across inputs, methods, AOPC bins and the full documents' own passes.
        """
        scale = self.faithfulness_threshold_scale
        name = self._window_table(scale)
        table = self.cache.table(name)
        input_keys: list[list[str]] = []
        todo: dict[str, Window] = {}
        requested = 0
        for j, (al, q) in enumerate(inputs):
            ks = []
            for w in self._windows(al, q, j):
                k = window_key(w)
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
        out = [np.mean([table[k] for k in ks], axis=0) for ks in input_keys]
        self.cache.flush()
        return out


def _share_ms(windows: Sequence[Window], seconds: float) -> list[float]:
    """Milliseconds of a batch shared among its windows in proportion to their tokens."""
    total = sum(w.length for w in windows) or 1
    return [1000.0 * seconds * w.length / total for w in windows]


def _is_adapler(model) -> bool:
    return isinstance(model, AdapLeRForSequenceClassification)
