"""Command-line option helpers shared by ``python -m adapler`` and the explorer (``python -m app
--dataset``): options from an argument dataclass, and the help of the data options, so that the same
option has the same name and help in every command."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from . import data as D

__all__ = ["DATA_HELP", "SPLIT_HELP", "add_dataclass_options"]


def add_dataclass_options(parser: argparse.ArgumentParser, cls, helps: dict[str, str],
                          only: typing.Collection[str] | None = None) -> None:
    """One ``--flag`` per field of the argument dataclass ``cls`` (the fields named in ``only``, when
    given), typed from its resolved type hints (``X | None`` -> X; bool -> ``--flag/--no-flag``); fields
    without a default are required."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        kind = hints[f.name]
        base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else f.default
        flag = "--" + f.name.replace("_", "-")
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=helps.get(f.name))
        else:
            parser.add_argument(flag, type=base, default=default, required=required,
                                help=(helps.get(f.name, "") + (f" (default: {default})" if default is not None else "")).strip())


DATA_HELP = {
    "task": f"a built-in task: {', '.join(D.training_tasks())} (or --dataset)",
    "dataset": "your own data instead of --task: a Hub dataset name, or a local .csv/.tsv/.json/.jsonl/.parquet "
               "file or a folder of them, one file per split (train.csv, validation.csv, test.csv); see docs/data.md",
    "dataset_config": "configuration of a Hub dataset (e.g. mrpc of glue)",
    "data_dir": f"folder of the built-in tasks, see docs/data.md (default: ${D.DATA_DIR_ENV}; none = Hugging Face Hub)",
    "text_column": "column of the text (default: text)",
    "text_pair_column": "column of the second text of a pair task: [CLS] text [SEP] pair [SEP]",
    "label_column": "column of the label, names or numbers (default: label)",
    "id_column": "column of unique example ids (default: SPLIT-ROW-HASH of the texts)",
    "max_length": "word pieces per input incl. [CLS]/[SEP] (default: the task's; 128 for --dataset)",
    "long_inputs": "longer inputs: 'truncate' or 'windows' (every piece seen once; default: the task's; "
                   "truncate for --dataset)",
}
SPLIT_HELP = "train, val or test, or a slice of one as in `datasets`: train[36000:], val[:100], train[80%%:]"
