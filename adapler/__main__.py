"""Command line: ``python -m adapler {finetune,saliency,train,evaluate} --help``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from . import data as D


def _add_dataclass_args(parser: argparse.ArgumentParser, cls, helps: dict[str, str]):
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        kind = f.type if isinstance(f.type, type) else str(f.type)
        if str(f.type).startswith("bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=helps.get(f.name))
            continue
        conv = {"int": int, "float": float, "str": str}
        base = next((v for k, v in conv.items() if str(kind).startswith(k)), str)
        parser.add_argument(flag, type=base, default=default, required=required,
                            help=(helps.get(f.name, "") + f" (default: {default})").strip())


COMMON_HELP = {
    "task": f"one of {', '.join(D.TASKS)}",
    "data_dir": f"local data folder laid out like ../shared/data (default: ${D.DATA_DIR_ENV}; none = Hugging Face Hub)",
    "output_dir": "where the final model is written",
    "run_dir": "checkpoints and resume state (default: OUTPUT_DIR/run); re-run the same command to resume",
    "limit": "use only the first N training examples",
    "eval_limit": "use only the first N validation examples",
    "bf16": "bf16 autocast (default: on where the CPU/GPU supports bf16, else off)",
    "checkpoint_minutes": "write a resumable checkpoint this often",
    "stop_after_steps": "stop after N steps as if interrupted (testing resume)",
}


def main(argv=None) -> int:
    from . import training

    parser = argparse.ArgumentParser(prog="python -m adapler", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("finetune", help="fine-tune a plain BERT classifier (pipeline step 1)")
    _add_dataclass_args(p, training.FinetuneArgs, {**COMMON_HELP, "base_model": "BERT checkpoint folder or Hub id (default: embedded all-MiniLM-L6-v2)"})
    args = parser.parse_args(argv)
    try:
        if args.command == "finetune":
            kwargs = {k: v for k, v in vars(args).items() if k != "command"}
            result = training.finetune(training.FinetuneArgs(**kwargs))
            print(json.dumps(result.get("best", result), indent=2))
    except D.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
