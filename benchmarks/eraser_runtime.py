"""Runtime of the ERASER evaluation on Movie Reviews (test), per stage, with the work done.

Runs ``eraser_eval.evaluate`` exactly as ``python -m eraser_eval --dataset movies --split test
--methods adapler,saliency,attention,random --no-cache`` does (report files written to a temporary
folder, no cache hits) and prints, per model stage, the wall-clock seconds, the windows and tokens run
(real and padded) and the tokens per second; then the other stages (loading, alignment, scoring and
report) and the total. With ``--limit N`` it also extrapolates every stage to the whole split by the
ratio of document word pieces (each stage's work is proportional to the pieces of the documents it
runs on), which is how the full-run estimate in the report was made.

    pip install -e .                                                     # once: imports the installed package
    export ADAPLER_DATA_DIR=/path/to/data                                # the data folder (docs/data.md)
    python benchmarks/eraser_runtime.py --threads 2                      # the whole split (199 reviews)
    python benchmarks/eraser_runtime.py --limit 20 --threads 2           # a quick sample + extrapolation
    python benchmarks/eraser_runtime.py --limit 20 --faithfulness basic  # without the AOPC bins

Timings depend on what else runs on the machine; the work counters (windows, tokens) do not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the default model is this checkout's assets/models/movies
for _flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_flag, "1")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "assets" / "models" / "movies"))
    p.add_argument("--data-dir", default=os.environ.get("ADAPLER_DATA_DIR"),
                   help="data folder with the ERASER Movie Reviews layout (docs/data.md); default: $ADAPLER_DATA_DIR")
    p.add_argument("--methods", default="adapler,saliency,attention,random")
    p.add_argument("--limit", type=int, default=None, help="first N reviews (default: all 199)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--faithfulness", choices=["full", "basic", "none"], default="full")
    p.add_argument("--faithfulness-threshold-scale", type=float, default=0.0)
    p.add_argument("--json", default=None, help="also write the measurements to this file")
    args = p.parse_args(argv)

    # Imported after parsing, so that --help does not load torch.
    import torch

    from eraser_eval import evaluate
    from eraser_eval.align import align_batch
    from eraser_eval.data import load_dataset

    torch.set_num_threads(args.threads)

    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="eraser_runtime_") as out:
        res = evaluate(dataset="movies", split="test", model=args.model, data_dir=args.data_dir, methods=args.methods,
                       limit=args.limit, batch_size=args.batch_size, faithfulness=args.faithfulness,
                       faithfulness_threshold_scale=args.faithfulness_threshold_scale, out_dir=out,
                       show_progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    timings, work = res.timings, getattr(res, "work", {}) or {}

    # extrapolation factor: word pieces of the whole split / of the documents run
    factor = 1.0
    if args.limit is not None:
        from transformers import AutoTokenizer  # only for the extrapolation

        ds = load_dataset("movies", "test", args.data_dir)
        tok = AutoTokenizer.from_pretrained(args.model)
        pieces_all = sum(a.num_pieces for a in align_batch(tok, [ds.documents[a.docid].tokens for a in ds.annotations]))
        factor = pieces_all / max(1, res.alignment["word_pieces"])

    print(f"Movies test, {res.config['n_annotations']} reviews ({res.alignment['windows']} windows, "
          f"{res.alignment['word_pieces']:,} word pieces), methods {args.methods}, faithfulness {args.faithfulness} "
          f"(threshold scale {args.faithfulness_threshold_scale:g}), {args.threads} thread(s), batch {args.batch_size}")
    print(f"{'stage':<44} {'seconds':>8} {'windows':>8} {'tokens':>10} {'padded':>10} {'tok/s':>7}"
          + (f" {'est. 199 docs s':>16}" if factor != 1.0 else ""))
    model_s = 0.0
    rows = []
    for stage, s in work.items():
        model_s += s["seconds"]
        row = {"stage": stage, **s}
        rows.append(row)
        extra = f" {s['seconds'] * factor:16.0f}" if factor != 1.0 else ""
        req = f" (of {int(s['windows_requested'])} requested)" if "windows_requested" in s else ""
        print(f"{stage:<44} {s['seconds']:8.1f} {int(s['windows']):8d} {int(s['tokens']):10,d} {int(s['padded_tokens']):10,d} "
              f"{s['tokens'] / max(s['seconds'], 1e-9):7.0f}{extra}{req}")
    other = timings["total_s"] - model_s
    print(f"{'other (load, align, methods, scoring, report)':<44} {other:8.1f}"
          + (f" {'':>8} {'':>10} {'':>10} {'':>7} {other:16.0f}" if factor != 1.0 else ""))
    print(f"{'total (evaluate)':<44} {timings['total_s']:8.1f}"
          + (f" {'':>8} {'':>10} {'':>10} {'':>7} {model_s * factor + other:16.0f}" if factor != 1.0 else ""))
    print(f"wall {wall:.1f} s, process CPU {cpu:.1f} s (CPU/wall {cpu / max(wall, 1e-9):.2f}); "
          f"faithfulness inputs {timings.get('faithfulness_inputs')}; timings: "
          + ", ".join(f"{k} {v:.1f}" for k, v in timings.items() if k.endswith("_s")))
    if factor != 1.0:
        print(f"extrapolation factor to the whole split (word pieces): {factor:.2f}; 'other' is not scaled "
              "(mostly fixed costs); the estimate is for this machine's current load")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "wall_s": wall, "cpu_s": cpu, "factor": factor,
                                               "timings": timings, "work": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
