"""Command line: ``python -m adapler {finetune,saliency,train,evaluate,calibrate,export-onnx} --help``.

Every command that reads data takes a built-in task (``--task``) or your own data (``--dataset`` with its columns).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from accelerate import PartialState

from . import data as D
from . import onnx_export, training
from .cli import DATA_HELP, SPLIT_HELP, add_dataclass_options
from .evaluation import calibrate_command, evaluate_command

COMMON_HELP = {
    **DATA_HELP,
    "train_split": "training split; a slice like train[:80%%] works",
    "val_split": "validation split (model selection); e.g. train[80%%:] when there is no validation file",
    "output_dir": "where the final model is written",
    "run_dir": "checkpoints and resume state (default: OUTPUT_DIR/run); re-run the same command to resume",
    "limit": "use only the first N training examples",
    "eval_limit": "use only the first N validation examples",
    "bf16": "bf16 autocast (default: on where the CPU/GPU supports bf16, else off)",
    "checkpoint_minutes": "write a resumable checkpoint this often",
    "stop_after_steps": "stop after N steps as if interrupted (testing resume)",
    "attention_dropout": "dropout on attention probabilities while training; > 0 is several times "
                         "slower on CPU (PyTorch's attention leaves its fast kernel)",
}


def data_source(args: argparse.Namespace) -> D.DatasetSpec:
    """The dataset named by the ``adapler.data.DataArgs`` options of a parsed command line."""
    return D.DataArgs(**{f.name: getattr(args, f.name) for f in dataclasses.fields(D.DataArgs)}).source()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapler", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("finetune", help="fine-tune a plain BERT classifier (pipeline step 1)")
    add_dataclass_options(p, training.FinetuneArgs, {
        **COMMON_HELP, "base_model": "BERT checkpoint folder or Hub id, or an AdapLeR folder (its encoder "
                       "and classifier) (default: embedded all-MiniLM-L6-v2)"})
    p = sub.add_parser("saliency", help="gradient x input saliency file, keyed by example id (step 2)")
    p.add_argument("--model", nargs="+", required=True, help="fine-tuned model folder(s); several are averaged")
    add_dataclass_options(p, D.DataArgs, DATA_HELP)
    p.add_argument("--split", default="train", help=SPLIT_HELP)
    p.add_argument("--output", required=True, help="saliency file to write (safetensors)")
    p.add_argument("--limit", type=int, default=None, help="first N examples only")
    p.add_argument("--batch-size", type=int, default=64, help="examples (or windows) per forward/backward (default: 64)")
    p.add_argument("--target", default="gold", choices=["gold", "predicted"], help="class whose logit is explained")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help=COMMON_HELP["bf16"])
    p = sub.add_parser("train", help="train AdapLeR: CPs, thresholds and BERT (step 3)")
    add_dataclass_options(p, training.TrainArgs, {**COMMON_HELP,
        "init_model": "fine-tuned model folder to start from", "saliency": "saliency file of the training split",
        "gamma": "weight of the CP KL loss (default: per task)", "phi": "weight of the length loss (default: per task)",
        "cp_lr": "learning rate of the Contribution Predictors", "eta_lr": "learning rate of the thresholds",
        "anneal": "sharpness schedule: 'epoch' (reference: 10*10^k per epoch), 'step' (geometric 10 -> 1e5 over "
                  "the run) or 'hard' (1e5 throughout: to continue a model that already prunes, e.g. with "
                  "--eta-lr 0 so that BERT and the CPs adapt to fixed thresholds)",
        "distill": "weight of KL(teacher || student) in the classification loss, the rest being cross-entropy "
                   "with the labels (0 = AdapLeR as published)",
        "teacher": "unpruned model folder whose logits --distill follows, computed once per run (default: "
                   "--baseline, else --init-model without pruning)",
        "eta_grad": "gradient of the thresholds: 'local' (one backward for everything; the length term's gradient "
                    "along the threshold recurrence only, not through later layers: ~1.2x a bare forward+backward) "
                    "or 'full' (exact, in a pass of its own: ~1.7x; the shipped models up to 12-05 used it)",
        "max_drop": "model selection: fastest epoch with val accuracy >= baseline - MAX_DROP",
        "baseline": "model folder whose unpruned val accuracy is the selection baseline (default: --init-model "
                    "without pruning; set it when continuing from an AdapLeR run, whose unpruned accuracy is not "
                    "the fine-tuned one)"})
    p = sub.add_parser("evaluate", help="accuracy, FLOPs speedup, tokens per layer and wall-clock (JSON report)")
    p.add_argument("--model", required=True, help="AdapLeR model folder")
    add_dataclass_options(p, D.DataArgs, DATA_HELP)
    p.add_argument("--split", default="val", help=SPLIT_HELP)
    p.add_argument("--limit", type=int, default=None, help="first N examples only")
    p.add_argument("--baseline", default=None, help="fine-tuned baseline folder (accuracy and timing; an AdapLeR "
                   "folder counts without its CPs); default: the same weights without CPs")
    p.add_argument("--threshold-scale", type=float, default=1.0, help="multiply learned thresholds")
    p.add_argument("--timing-examples", type=int, default=256, help="examples timed per batch size (0 = no timing)")
    p.add_argument("--attention-baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="also report attention top-k pruning at the same FLOPs")
    p.add_argument("--sweep", default="", help="comma-separated threshold scales: accuracy/speedup Pareto points")
    p.add_argument("--json", default=None, help="also write the report to this file")
    p.add_argument("--onnx", action="store_true",
                   help="also time ONNX Runtime vanilla BERT and ONNX Runtime AdapLeR at batch 1 (1 thread)")
    p = sub.add_parser("export-onnx", help="export a model folder to ONNX: model.onnx (AdapLeR, batch 1) "
                       "and vanilla.onnx (same weights, no pruning)")
    p.add_argument("--model", required=True, help="AdapLeR model folder")
    p.add_argument("--output", required=True, help="folder to write model.onnx, vanilla.onnx, tokenizer and config to")
    p.add_argument("--vanilla", action=argparse.BooleanOptionalAction, default=True,
                   help="also export vanilla.onnx")
    p = sub.add_parser("calibrate", help="scale the learned thresholds for max speedup within --max-drop of the baseline")
    p.add_argument("--model", required=True, help="AdapLeR model folder")
    p.add_argument("--baseline", required=True, help="fine-tuned baseline folder (its accuracy is the reference; an "
                   "AdapLeR folder counts without its CPs)")
    add_dataclass_options(p, D.DataArgs, DATA_HELP)
    p.add_argument("--split", default="val", help=SPLIT_HELP + "; keep the reported split out of calibration where you can")
    p.add_argument("--limit", type=int, default=None, help="use only the first N examples of the split")
    p.add_argument("--max-drop", type=float, default=0.01,
                   help="keep the fastest scale with accuracy >= baseline - MAX_DROP (default: 0.01)")
    p.add_argument("--scales", default="0.25,0.5,0.75,1,1.25,1.5,2",
                   help="comma-separated multipliers of the learned thresholds to try (default: %(default)s)")
    p.add_argument("--min-speedup", type=float, default=None,
                   help="if no scale stays within --max-drop: the most accurate scale with at least this FLOPs speedup")
    p.add_argument("--output-dir", required=True, help="where the calibrated model is written")
    args = parser.parse_args(argv)
    try:
        if args.command == "finetune":
            kwargs = {k: v for k, v in vars(args).items() if k != "command"}
            result = training.finetune(training.FinetuneArgs(**kwargs))
            if PartialState().is_main_process:  # one summary, not one per process of a multi-process run
                print(json.dumps(result.get("best", result), indent=2))
        elif args.command == "saliency":
            print(json.dumps(training.extract_saliency(args.model, data_source(args), args.split, args.output,
                                                       limit=args.limit, batch_size=args.batch_size,
                                                       target=args.target, bf16=args.bf16)))
        elif args.command == "train":
            kwargs = {k: v for k, v in vars(args).items() if k != "command"}
            result = training.train_adapler(training.TrainArgs(**kwargs))
            if PartialState().is_main_process:
                print(json.dumps({k: v for k, v in result.items() if k != "args"}, indent=2))
        elif args.command == "export-onnx":
            print(json.dumps(onnx_export.export_model_dir(args.model, args.output, args.vanilla), indent=2))
        elif args.command == "calibrate":
            print(json.dumps(calibrate_command(args, data_source(args)), indent=2))
        elif args.command == "evaluate":
            report = evaluate_command(args.model, data_source(args), args.split, None, args.limit,
                                      args.baseline, args.threshold_scale, args.timing_examples,
                                      args.attention_baseline,
                                      [float(x) for x in args.sweep.split(",") if x.strip()])
            if args.onnx:
                report["adapler"]["wall_clock_onnx"] = onnx_export.onnx_wall_clock(
                    args.model, args.task, args.split, args.data_dir, args.limit, args.timing_examples or 256,
                    args.threshold_scale)
            text = json.dumps(report, indent=2)
            print(text)
            if args.json:
                with open(args.json, "w") as fh:
                    fh.write(text + "\n")
    except (D.DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
