"""Wall-clock of AdapLeR against vanilla BERT (the same weights) in PyTorch and in ONNX Runtime, at
batch 1 and batch 32, on the shipped models and their evaluation splits, side by side in one run.

Rows per (task, batch size): vanilla PyTorch (``BertForSequenceClassification``), AdapLeR PyTorch
``drop`` (learned thresholds x1, and x0 = no pruning: the cost of the machinery), vanilla ONNX Runtime,
AdapLeR ONNX Runtime (the batch-1 graph of ``adapler.onnx_export``; no batch-32 row), and the 1-token
floor (one [CLS]-only forward, vanilla). Every model runs over the same examples in alternation,
``--repeats`` times; the table gives the median ms per example and each row's ratio to vanilla PyTorch
(and AdapLeR ONNX Runtime to vanilla ONNX Runtime), next to the corrected FLOPs speedup. 1 torch
thread and 1 ONNX Runtime thread unless ``--threads``.

    pip install -e .      # once: the benchmark imports the installed package
    python benchmarks/batch1_speed.py --data-dir DIR                     # the BENCHMARKS.md table
    python benchmarks/batch1_speed.py --data-dir DIR --limit 40 --movies-limit 8 --repeats 2   # a quick check

Tasks: ``sst2`` (val), ``hatexplain`` (test), ``movies`` (test windows of 512 pieces).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from adapler import AdapLeRForSequenceClassification  # noqa: E402
from adapler.evaluation import plain_bert_copy  # noqa: E402
from adapler.flops import flops_per_example, speedup  # noqa: E402
from adapler.inference import MODEL_INPUTS, feature_batches, load_features  # noqa: E402
from adapler.onnx_export import OnnxClassifier, export_model_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]  # the shipped models live in this checkout's assets/models/
SPLITS = {"sst2": "val", "hatexplain": "test", "movies": "test"}


def torch_call(m, **kw):
    """A function of one collated batch running the PyTorch model ``m``."""
    return lambda b: m(**{k: b[k] for k in MODEL_INPUTS}, **kw)


def runners(model, base, graphs, batch_size: int) -> dict:
    """name -> function of one collated batch; ONNX AdapLeR only at batch 1 (its graph is batch 1)."""
    def ort_call(g, **kw):
        return lambda b: g(b["input_ids"].numpy(), b["token_type_ids"].numpy(), b["attention_mask"].numpy(), **kw)

    out = {"vanilla PyTorch": torch_call(base), "AdapLeR PyTorch x1": torch_call(model),
           "AdapLeR PyTorch x0": torch_call(model, threshold_scale=0.0), "vanilla ORT": ort_call(graphs["vanilla"])}
    if batch_size == 1:
        out["AdapLeR ORT x1"] = ort_call(graphs["adapler"])
    return out


@torch.no_grad()
def time_side_by_side(fns: dict, batches: list, repeats: int) -> dict:
    """Median seconds of one pass over ``batches`` per function, the functions alternating."""
    for fn in fns.values():
        fn(batches[0])  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            for b in batches:
                fn(b)
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_task(task: str, data_dir, limit: int, batch_sizes, repeats: int, threads: int) -> list[str]:
    model_dir = REPO / "assets" / "models" / task
    model = AdapLeRForSequenceClassification.from_pretrained(model_dir).eval()
    base = plain_bert_copy(model)
    features = load_features(task, SPLITS[task], AutoTokenizer.from_pretrained(model_dir), data_dir)[:limit]
    kept = [None] * len(features)  # tokens per layer of each example (learned thresholds)
    with torch.no_grad():
        for idx, b in feature_batches(features, 32):
            for row, i in zip(model(**{k: b[k] for k in MODEL_INPUTS}).layer_lengths.tolist(), idx):
                kept[i] = row
    inputs = [len(f["input_ids"]) for f in features]
    fl = flops_per_example(inputs, kept, model.config)
    flops = f"{speedup(fl['corrected_base'], fl['corrected_adapler']):.2f}x"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_model_dir(model_dir, tmp)
        graphs = {k: OnnxClassifier(p, threads) for k, p in paths.items()}
        one = {"input_ids": torch.tensor([[101]]), "attention_mask": torch.ones(1, 1, dtype=torch.long),
               "token_type_ids": torch.zeros(1, 1, dtype=torch.long)}
        for bs in batch_sizes:
            batches = [b for _, b in feature_batches(features, bs)]
            fns = runners(model, base, graphs, bs)
            t = time_side_by_side(fns, batches, repeats)
            floor = {} if bs != 1 else time_side_by_side(
                {k: fns[k] for k in ("vanilla PyTorch", "vanilla ORT")}, [one] * 20, repeats)
            ms = {k: 1000 * v / len(features) for k, v in t.items()}
            ref, ort_ref = ms["vanilla PyTorch"], ms["vanilla ORT"]
            for name, v in ms.items():
                vs_ort = f"{ort_ref / v:.2f}x" if "ORT" in name else ""
                rows.append(f"| {task} | {bs} | {name} | {v:.2f} | {ref / v:.2f}x | {vs_ort} | "
                            f"{flops if name.endswith('x1') else ''} |")
            for name, v in floor.items():
                rows.append(f"| {task} | {bs} | 1-token floor, {name} | {1000 * v / 20:.2f} | | | |")
            print("\n".join(rows[-len(ms) - len(floor):]), flush=True)
    per_layer = "/".join(f"{statistics.fmean(k[l] for k in kept):.0f}" for l in range(model.num_layers))
    print(f"<!-- {task} {SPLITS[task]}: {len(features)} examples, {statistics.fmean(inputs):.1f} pieces on "
          f"average, kept per layer {per_layer} -->", flush=True)
    return rows


def overhead_rows(data_dir, lengths, limit: int, repeats: int) -> list[str]:
    """The cost of the machinery alone: AdapLeR ``drop`` with thresholds x0 (every token kept, every CP
    run) against vanilla PyTorch, batch 1, on Movies test text cut to exactly each length."""
    model_dir = REPO / "assets" / "models" / "sst2"
    model = AdapLeRForSequenceClassification.from_pretrained(model_dir).eval()
    base = plain_bert_copy(model)
    windows = [w for w in load_features("movies", "test", AutoTokenizer.from_pretrained(model_dir), data_dir)
               if len(w["input_ids"]) >= max(lengths)][:limit]  # full windows: every cut is exact
    rows = []
    for n in lengths:
        batches = [{"input_ids": torch.tensor([w["input_ids"][: n - 1] + [w["input_ids"][-1]]]),
                    "token_type_ids": torch.zeros(1, n, dtype=torch.long),
                    "attention_mask": torch.ones(1, n, dtype=torch.long)} for w in windows]
        fns = {"vanilla PyTorch": torch_call(base), "AdapLeR PyTorch x0": torch_call(model, threshold_scale=0.0)}
        t = time_side_by_side(fns, batches, repeats)
        ms = {k: 1000 * v / len(batches) for k, v in t.items()}
        rows.append(f"| {n} | {ms['vanilla PyTorch']:.2f} | {ms['AdapLeR PyTorch x0']:.2f} | "
                    f"{ms['AdapLeR PyTorch x0'] / ms['vanilla PyTorch']:.3f} |")
        print(rows[-1], flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--tasks", default="sst2,hatexplain,movies")
    ap.add_argument("--limit", type=int, default=256, help="examples per task (sst2, hatexplain)")
    ap.add_argument("--movies-limit", type=int, default=64, help="Movies test windows (512 pieces each)")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    ap.add_argument("--overhead-lengths", default="25,256",
                    help="input lengths of the x0-overhead table (empty: skip it)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); ms per example, median of {args.repeats}")
    print("| task | batch | model | ms / example | vs vanilla PyTorch | vs vanilla ORT | FLOPs speedup |")
    print("|---|---|---|---|---|---|---|")
    for task in filter(None, args.tasks.split(",")):  # --tasks "" runs only the overhead table
        limit = args.movies_limit if task == "movies" else args.limit
        bench_task(task, args.data_dir, limit, [int(x) for x in args.batches.split(",")], args.repeats, args.threads)
    if args.overhead_lengths:
        print("\nx0 overhead, batch 1, SST-2 model on Movies test text cut to each length "
              f"({args.movies_limit} inputs):")
        print("| pieces | vanilla PyTorch ms | AdapLeR x0 ms | x0 / vanilla |\n|---|---|---|---|")
        overhead_rows(args.data_dir, [int(x) for x in args.overhead_lengths.split(",")], args.movies_limit,
                      args.repeats)


if __name__ == "__main__":
    main()
