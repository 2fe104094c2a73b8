"""Command line: ``python -m eraser_eval --dataset movies --split test --model PATH --out DIR``.

Writes metrics.json, metrics.csv, fpr.csv, report.md, report.html and <method>.results.jsonl
(ERASER results schema) to --out, and prints the metrics table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from .data import DATASETS, EraserDataError
from .methods import METHODS
from .metrics import AOPC_THRESHOLDS
from .runner import EvalConfig, evaluate


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _label_map(text: str) -> dict[str, str]:
    """``CLASS=LABEL,...`` or a JSON file ``{"CLASS": "LABEL"}``: model class name -> dataset label."""
    if Path(text).is_file():
        try:
            mapping = json.loads(Path(text).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise argparse.ArgumentTypeError(f"{text}: not valid JSON ({err})") from None
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise argparse.ArgumentTypeError(f'{text}: expected a JSON object {{"CLASS": "LABEL", ...}}')
        return {str(k): v for k, v in mapping.items()}
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise argparse.ArgumentTypeError(f"{text!r}: expected CLASS=LABEL,... or a JSON file")
    return {k.strip(): v.strip() for k, v in pairs}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eraser_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True,
                   help=f"{', '.join(sorted(DATASETS))}, or the path of any ERASER-layout folder "
                        "(docs/ or docs.jsonl, {train,val,test}.jsonl; see docs/data.md)")
    p.add_argument("--label-map", type=_label_map, default=None, metavar="CLASS=LABEL,...",
                   help="model class names -> dataset labels where they differ, e.g. pos=POS,neg=NEG, "
                        "or a JSON file with that object")
    p.add_argument("--split", default="test", help="train, val or test (default: test)")
    p.add_argument("--data-dir", default=None,
                   help="folder containing movies/, multirc/, hatexplain/, see docs/data.md "
                        "(default: $ADAPLER_DATA_DIR, then $ERASER_DATA_DIR)")
    p.add_argument("--model", default=None, help="AdapLeR or plain BERT model folder")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model folder)")
    p.add_argument("--methods", default="adapler,saliency,attention,random",
                   help=f"comma-separated, from {', '.join(METHODS)} (default: %(default)s)")
    p.add_argument("--import-results", default=None, metavar="FILE",
                   help="an ERASER results .jsonl to evaluate as method 'import'")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--limit", type=int, default=None, help="only the first N annotations")
    p.add_argument("--batch-size", type=int, default=8, help="full-length windows per batch (default: 8)")
    p.add_argument("--layer", type=int, default=None,
                   help="AdapLeR hard-rationale layer, 1-based, negative from the end (default: last)")
    p.add_argument("--max-length", type=int, default=None,
                   help="window length in word pieces incl. [CLS]/[SEP] (default: config.max_position_embeddings)")
    p.add_argument("--faithfulness", choices=["full", "basic", "none"], default="full",
                   help="full = comprehensiveness, sufficiency and AOPC; basic = no AOPC (default: full)")
    p.add_argument("--aopc-thresholds", type=_floats, default=list(AOPC_THRESHOLDS),
                   help="comma-separated fractions (default: 0.01,0.05,0.1,0.2,0.5)")
    p.add_argument("--iou-thresholds", type=_floats, default=[0.5])
    p.add_argument("--no-fpr", action="store_true", help="skip FPR per layer")
    p.add_argument("--threshold-scale", type=float, default=1.0,
                   help="scale of AdapLeR's learned thresholds for the adapler method (default: 1)")
    p.add_argument("--faithfulness-threshold-scale", type=float, default=0.0,
                   help="threshold scale of the predictions used for classification and faithfulness "
                        "(0 = unpruned model, default; 1 = the deployed pruning model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random method")
    p.add_argument("--ig-steps", type=int, default=20,
                   help="interpolation steps of integrated_gradients (default: %(default)s)")
    p.add_argument("--cache-dir", default=None, help="model-output cache (default: OUT/cache)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cache_dir = args.cache_dir
    if args.no_cache:
        cache_dir = tempfile.mkdtemp(prefix="eraser_eval_nocache_")
    try:
        res = evaluate(EvalConfig(
            dataset=args.dataset, split=args.split, label_map=args.label_map, model=args.model, tokenizer=args.tokenizer,
            data_dir=args.data_dir, methods=args.methods, limit=args.limit, import_results=args.import_results,
            batch_size=args.batch_size, layer=args.layer, max_length=args.max_length,
            faithfulness=args.faithfulness, aopc_thresholds=args.aopc_thresholds,
            iou_thresholds=args.iou_thresholds, fpr=not args.no_fpr, seed=args.seed, ig_steps=args.ig_steps,
            threshold_scale=args.threshold_scale, faithfulness_threshold_scale=args.faithfulness_threshold_scale,
            cache_dir=cache_dir, out_dir=args.out, show_progress=not args.quiet, device=args.device,
        ))
    except (EraserDataError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if args.no_cache and cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.float_format", "{:.4f}".format):
        print(res.summary.to_string(index=False))
    print(f"\nwrote {args.out}/: metrics.json, metrics.csv, report.md, report.html, examples.jsonl, "
          + ", ".join(f"{m}.results.jsonl" for m in res.records)
          + f"  ({res.timings.get('total_s', 0):.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
