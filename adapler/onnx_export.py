"""AdapLeR in ONNX Runtime: export the batch-1 ``drop`` path (CPs, thresholds, tokens removed between
layers) and the same weights as plain BERT, and run either with :class:`OnnxClassifier`.

The AdapLeR graph is traced from ``model(mode="drop")`` at batch size 1 (TorchScript exporter): the
kept positions are a ``NonZero`` of the keep decision and the hidden states a ``Gather`` of them, so
the sequence really shrinks inside the graph. Inputs ``input_ids``, ``token_type_ids`` (1, L) int64
and ``threshold_scale`` () float (x the learned thresholds; 0 = no pruning); outputs ``logits`` (1, C)
and ``layer_lengths`` (1, layers), tokens processed by each layer. The vanilla graph takes
``input_ids``, ``attention_mask``, ``token_type_ids`` (B, L) and returns ``logits`` (B, C).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from transformers import AutoTokenizer

from .evaluation import plain_bert_copy
from .inference import load_features, time_call
from .modeling import AdapLeRForSequenceClassification

OPSET = 17
ADAPLER_FILE, VANILLA_FILE = "model.onnx", "vanilla.onnx"


class _DropBatch1(nn.Module):
    """``model(mode="drop")`` with the threshold scale as an input, for tracing."""

    def __init__(self, model: AdapLeRForSequenceClassification, token_masks: bool):
        super().__init__()
        self.model, self.token_masks = model, token_masks

    def forward(self, input_ids, token_type_ids, threshold_scale):
        out = self.model(input_ids=input_ids, token_type_ids=token_type_ids, threshold_scale=threshold_scale,
                         output_token_masks=self.token_masks)
        return (out.logits, out.layer_lengths) + ((out.keep_masks,) if self.token_masks else ())


def _export(module, args, path, inputs, outputs, dynamic_axes) -> Path:
    # the exporter restores the wrapper's train/eval flag afterwards, recursively: it must be eval
    # the trace fixes the batch size (B == 1 of the drop path, checks in transformers' mask code);
    # the length stays dynamic, which the equality tests check
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic_axes)
    return Path(path)


class _Vanilla(nn.Module):
    """Plain BERT classifier returning logits only (a tensor, for tracing)."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


@torch.no_grad()
def export_adapler(model: AdapLeRForSequenceClassification, path, token_masks: bool = False) -> Path:
    """Write the batch-1 ``drop`` graph of ``model`` to ``path``; ``token_masks`` adds the output
    ``keep_masks`` (1, layers, L) (the per-token record, for checks and heatmaps)."""
    model = model.float().eval()
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    axes = {"input_ids": {1: "length"}, "token_type_ids": {1: "length"}}
    axes.update({"keep_masks": {2: "length"}} if token_masks else {})
    return _export(_DropBatch1(model, token_masks), (ids, torch.zeros_like(ids), torch.tensor(1.0)), path,
                   ["input_ids", "token_type_ids", "threshold_scale"],
                   ["logits", "layer_lengths"] + (["keep_masks"] if token_masks else []), axes)


@torch.no_grad()
def export_vanilla(model: AdapLeRForSequenceClassification, path) -> Path:
    """Write the same BERT weights without CPs (no pruning; any batch size) to ``path``."""
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]] * 2)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    return _export(_Vanilla(plain_bert_copy(model.float())), (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                   path, names, ["logits"], {k: {0: "batch", 1: "length"} for k in names})


def export_model_dir(model_dir, output_dir, vanilla: bool = True) -> dict:
    """``python -m adapler export-onnx``: ``OUTPUT/model.onnx`` (AdapLeR, batch 1), optionally
    ``OUTPUT/vanilla.onnx``, and the tokenizer and config beside them."""
    model = AdapLeRForSequenceClassification.from_pretrained(model_dir).eval()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"adapler": str(export_adapler(model, out / ADAPLER_FILE))}
    if vanilla:
        written["vanilla"] = str(export_vanilla(model, out / VANILLA_FILE))
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    model.config.save_pretrained(out)
    return written


class OnnxClassifier:
    """An exported graph in one ONNX Runtime session (CPU, ``threads`` intra-op threads).

    ``clf(input_ids, token_type_ids=None, attention_mask=None, threshold_scale=1.0)`` -> ``(logits
    (B, C), layer_lengths (B, layers) or None)`` as numpy arrays. The AdapLeR graph takes one
    unpadded example (B = 1) and returns its per-layer kept counts; the vanilla graph takes a padded
    batch and returns no lengths.
    """

    def __init__(self, path, threads: int = 1):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.is_adapler = "threshold_scale" in self.inputs
        self.output_names = [o.name for o in self.session.get_outputs()]

    def outputs(self, input_ids, token_type_ids=None, attention_mask=None, threshold_scale: float = 1.0) -> dict:
        """Every output of the graph by name (numpy arrays)."""
        ids = np.asarray(input_ids, dtype=np.int64)
        ids = ids[None] if ids.ndim == 1 else ids
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids, np.int64).reshape(ids.shape)
        if self.is_adapler:
            if ids.shape[0] != 1 or (attention_mask is not None and not np.all(attention_mask)):
                raise ValueError("the AdapLeR ONNX graph takes one unpadded example at a time")
            feed = {"input_ids": ids, "token_type_ids": types, "threshold_scale": np.array(threshold_scale, np.float32)}
        else:
            mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, np.int64)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return dict(zip(self.output_names, self.session.run(None, feed)))

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, threshold_scale: float = 1.0):
        out = self.outputs(input_ids, token_type_ids, attention_mask, threshold_scale)
        return out["logits"], out.get("layer_lengths")


def onnx_wall_clock(model_dir, task: str, split: str, data_dir=None, limit: int | None = None,
                    max_examples: int = 256, threshold_scale: float = 1.0, repeats: int = 3) -> dict:
    """Batch-1 wall-clock of ONNX Runtime vanilla BERT vs ONNX Runtime AdapLeR (1 thread each), side
    by side on the first ``max_examples`` features of ``split`` (graphs exported to a temporary folder):
    the ``evaluate --onnx`` figures."""
    feats = load_features(task, split, AutoTokenizer.from_pretrained(model_dir), data_dir, limit)[:max_examples]
    inputs = [(f["input_ids"], f.get("token_type_ids")) for f in feats]
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_model_dir(model_dir, tmp)
        adapler, vanilla = OnnxClassifier(paths["adapler"]), OnnxClassifier(paths["vanilla"])

        def timed(fn) -> float:  # median over repeats of one pass over every example, after a warm-up
            return time_call(lambda: [fn(*x) for x in inputs], repeats, warmup=lambda: fn(*inputs[0]))[1]

        t_adapler = timed(lambda ids, tt: adapler(ids, tt, threshold_scale=threshold_scale))
        t_vanilla = timed(lambda ids, tt: vanilla(ids, tt))
    return {"batch_size": 1, "examples": len(feats), "threads": 1,
            "onnx_adapler_ms_per_example": 1000 * t_adapler / len(feats),
            "onnx_vanilla_ms_per_example": 1000 * t_vanilla / len(feats), "speedup": t_vanilla / t_adapler}
