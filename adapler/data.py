"""Datasets: where examples come from, the task presets, tokenisation and batching.

One mechanism reads every dataset: a :class:`DatasetSpec` says where the rows are (a Hub dataset or
local ``.csv .tsv .json .jsonl .parquet`` files, read with ``datasets.load_dataset``; or a reader for
a format ``datasets`` does not know, such as ERASER folders) and how a row becomes an example
(text, optional second text, label and id columns). The built-in tasks of ``TASKS`` are presets of
it: their local folder under the data folder (``--data-dir`` or ``ADAPLER_DATA_DIR``, see
docs/data.md) and their Hub name. A task's ``eraser`` entry says where its ERASER rationales live and
how its classes map to the ERASER labels (HateXplain's three classes -> toxic / non-toxic).

Every dataset yields examples ``{"id": str, "text": str, "label": int}`` (plus ``"text_pair"`` for
two-text tasks). Examples are keyed by id everywhere (saliency files, reports), never by order.
ERASER-format files (annotation JSONL, ``docs/`` or ``docs.jsonl``) are read by :func:`read_jsonl`
and :func:`load_documents`, here and in ``eraser_eval.data``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .windows import split_windows

DATA_DIR_ENV = "ADAPLER_DATA_DIR"
LEGACY_DATA_DIR_ENV = "ERASER_DATA_DIR"  # still read, after ADAPLER_DATA_DIR


class DataError(ValueError):
    """A data folder or file is missing or malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class EraserSpec:
    """Where a task's ERASER rationales live and how model classes map to the ERASER labels."""

    subdir: str  # relative to the data root
    labels: tuple[str, ...]  # ERASER label names; index = label id in the rationale metrics
    has_query: bool = False  # True: the query (question || answer) goes into segment B
    # lower-cased class names (a model's id2label, the task's labels) -> ERASER label
    label_map: dict[str, str] = field(default_factory=dict)
    # named model classes that map to no label may still be matched by position: the built-in label
    # orders are meaningful (negative class first), a folder's sorted labels are not
    position_fallback: bool = True


LONG_INPUTS = ("truncate", "windows")  # what happens to an input longer than max_length
# local file suffix -> (datasets builder, its options)
FILE_FORMATS = {".csv": ("csv", {}), ".tsv": ("csv", {"delimiter": "\t"}), ".json": ("json", {}),
                ".jsonl": ("json", {}), ".parquet": ("parquet", {})}
VAL_SPLIT_NAMES = ("val", "validation", "dev", "valid")  # split "val" is the first of these a dataset has
GENERIC_LABEL = re.compile(r"LABEL_\d+")  # transformers' placeholder class names


@dataclass(frozen=True)
class DatasetSpec:
    """Where the examples of a dataset come from and how a row becomes an example.

    ``path`` is a local file or folder (one file per split, named by split: ``train.csv``,
    ``validation.jsonl``, ``dev.tsv``, ``test-00000-of-00002.parquet``; a single file is split
    ``train``) or a Hub dataset name (with ``config``); ``reader(path, split)`` replaces
    ``datasets.load_dataset`` for formats it does not read (rows with the same columns).
    """

    path: str
    config: str | None = None  # Hub dataset configuration (e.g. glue's "mrpc")
    text_column: str = "text"
    text_pair_column: str | None = None  # second text of pair tasks: [CLS] text [SEP] text_pair [SEP]
    label_column: str = "label"
    id_column: str | None = None  # None: ids from id_template
    max_length: int = 128  # word pieces incl. [CLS]/[SEP]
    long_inputs: str = "truncate"  # or "windows": cut long inputs into windows (adapler.windows)
    labels: tuple[str, ...] | None = None  # class names, in model order; None = inferred from the data
    # {split}: split name, {row}: row number in the split from 0, {hash}: 8 hex digits of the text(s)
    id_template: str = "{split}-{row}-{hash}"
    load_options: tuple[tuple[str, object], ...] = ()  # more datasets.load_dataset keywords
    reader: Callable[[str, str], list[dict]] | None = None
    name: str = ""  # shown in logs and reports (default: path)

    @property
    def title(self) -> str:
        return self.name or self.path

    @property
    def windows(self) -> bool:
        return self.long_inputs == "windows"

    def describe(self) -> dict:
        """What a model trained on this dataset records in its config (``adapler_dataset``)."""
        return {"name": self.title, "text_column": self.text_column, "text_pair_column": self.text_pair_column,
                "label_column": self.label_column, "max_length": self.max_length, "long_inputs": self.long_inputs}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    labels: tuple[str, ...]  # the model's classes
    max_length: int
    # Per-task AdapLeR defaults (docs/method.md §4.4; tuned here where the reference has none).
    gamma: float
    phi: float
    long_inputs: bool = False  # documents longer than max_length: split into windows
    eraser: EraserSpec | None = None  # None: no ERASER rationales for this task
    local: DatasetSpec | None = None  # rows in the data folder (path relative to it); None: no loader
    hub: DatasetSpec | None = None  # the same rows from the Hugging Face Hub

    def eraser_label(self, name: str) -> str | None:
        """The ERASER label meaning class ``name`` (case-insensitive), or None."""
        if self.eraser is None:
            return None
        key = str(name).strip().lower()
        lookup = {lab.lower(): lab for lab in self.eraser.labels} | self.eraser.label_map
        return lookup.get(key)


# AdapLeR loss weights of datasets that are not built-in tasks (docs/method.md §4.4)
DEFAULT_GAMMA, DEFAULT_PHI = 0.05, 0.01

_HATEXPLAIN_TOXIC = {"hatespeech": "toxic", "hate speech": "toxic", "hate": "toxic", "offensive": "toxic",
                     "normal": "non-toxic", "nontoxic": "non-toxic", "non_toxic": "non-toxic", "not toxic": "non-toxic"}


def _read_hatexplain(path: str, split: str) -> list[dict]:
    base = Path(path)
    labels = {r["post_id"]: r for _, r in read_jsonl(_need(base / "labels.jsonl"))}
    divisions = json.loads(_need(base / "post_id_divisions.json").read_text())
    if split not in divisions:
        raise DataError(f"{base / 'post_id_divisions.json'}: no split {split!r} (available: {', '.join(divisions)})")
    post_ids = divisions[split]
    for post_id in post_ids:
        if post_id not in labels:
            raise DataError(f"{base}: post {post_id} of split {split} has no label")
    texts = _document_texts(base / "eraser", post_ids)
    return [{"id": p, "text": texts[p], "label": labels[p]["label"]} for p in post_ids]


def _read_eraser_movies(path: str, split: str) -> list[dict]:
    """Reviews interleaved by class (negR_000, posR_000, negR_001, ...): the ERASER files list all
    negative reviews first, so a plain ``--limit N`` would otherwise take one class only."""
    base = Path(path)
    rows = [r for _, r in read_jsonl(_need(base / f"{split}.jsonl"))]
    rows.sort(key=lambda r: (int("".join(c for c in r["annotation_id"] if c.isdigit()) or 0), r["annotation_id"]))
    texts = _document_texts(base, [r["annotation_id"] for r in rows])
    return [{"id": r["annotation_id"], "text": texts[r["annotation_id"]], "label": r["classification"]} for r in rows]


def _read_hub_hatexplain(path: str, split: str) -> list[dict]:
    """Majority label of the three annotators; posts without one are "undecided" and skipped."""
    names = ("hatespeech", "normal", "offensive")  # the Hub's label ids
    rows = []
    for r in _load_hub(path, None, split):
        label, count = Counter(r["annotators"]["label"]).most_common(1)[0]
        if count >= 2:
            rows.append({"id": r["id"], "text": " ".join(r["post_tokens"]), "label": names[label]})
    return rows


TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec(
        "sst2", ("negative", "positive"), 64, gamma=0.05, phi=0.01,
        # GLUE's TSV files have no quoting: a quote character is part of the sentence
        local=DatasetSpec("sst2", text_column="sentence", id_template="sst2-{split}-{row}",
                          load_options=(("quoting", 3),)),
        hub=DatasetSpec("glue", "sst2", text_column="sentence", id_template="sst2-{split}-{row}")),
    "hatexplain": TaskSpec(
        "hatexplain", ("hatespeech", "offensive", "normal"), 128, gamma=0.05, phi=0.01,
        eraser=EraserSpec("hatexplain/eraser", ("non-toxic", "toxic"), label_map=_HATEXPLAIN_TOXIC),
        local=DatasetSpec("hatexplain", id_column="id", reader=_read_hatexplain),
        hub=DatasetSpec("hatexplain", id_column="id", reader=_read_hub_hatexplain)),
    "movies": TaskSpec(
        "movies", ("NEG", "POS"), 512, gamma=0.05, phi=0.001, long_inputs=True,
        eraser=EraserSpec("movies", ("NEG", "POS"),
                          label_map={"neg": "NEG", "negative": "NEG", "pos": "POS", "positive": "POS"}),
        local=DatasetSpec("movies", id_column="id", reader=_read_eraser_movies),
        hub=DatasetSpec("movie_rationales", text_column="review", id_template="movies-{split}-{row}")),
    # evaluated on its ERASER rationales only (no training loader)
    "multirc": TaskSpec(
        "multirc", ("False", "True"), 512, gamma=0.05, phi=0.001, long_inputs=True,
        eraser=EraserSpec("multirc", ("False", "True"), has_query=True,
                          label_map={"false": "False", "no": "False", "incorrect": "False",
                                     "true": "True", "yes": "True", "correct": "True"})),
}
SPLIT_ALIASES = {"validation": "val", "dev": "val", "valid": "val"}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def training_tasks() -> list[str]:
    """Tasks with example loaders (``finetune``, ``train``, ``evaluate``)."""
    return [name for name, spec in TASKS.items() if spec.local is not None]


def eraser_tasks() -> list[str]:
    """Tasks with ERASER rationales (``python -m eraser_eval --dataset``)."""
    return [name for name, spec in TASKS.items() if spec.eraser is not None]


def loss_weights(name: str) -> tuple[float, float]:
    """AdapLeR's ``(gamma, phi)`` for a task or dataset name (defaults for your own data)."""
    spec = TASKS.get(name)
    return (spec.gamma, spec.phi) if spec else (DEFAULT_GAMMA, DEFAULT_PHI)


def label_names(config) -> list[str]:
    """The class names of a model ``config`` in class order (``id2label``; ``LABEL_i`` when unnamed)."""
    num = int(getattr(config, "num_labels", 0) or len(getattr(config, "id2label", {}) or {}))
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    return [id2label.get(i, f"LABEL_{i}") for i in range(num)]


def is_pair_model(config) -> bool:
    """True when the model was trained here on a two-text dataset (``config.adapler_dataset``)."""
    return bool((getattr(config, "adapler_dataset", None) or {}).get("text_pair_column"))


def class_label_map(config, task: str | TaskSpec) -> list[str]:
    """ERASER label of every model class of ``config`` for ``task``.

    Read from ``config.id2label`` when the names are meaningful (``NEG``/``negative``,
    ``hatespeech``/``offensive`` -> ``toxic``, ``normal`` -> ``non-toxic``, ...); generic names
    (``LABEL_0``) fall back to the ERASER label order (as many classes as ERASER labels) or to the
    task's own classes mapped to ERASER labels (HateXplain's three classes). Named classes that
    map to no label go by position too for the built-in datasets (their label orders mean something:
    a sentiment model's negative class is non-toxic), and are an error otherwise (an
    ``EraserSpec.label_map``, ``--label-map``, adds names).
    """
    spec = get_task(task) if isinstance(task, str) else task
    if spec.eraser is None:
        raise DataError(f"task {spec.name!r} has no ERASER rationales")
    names = label_names(config)
    num = len(names)
    mapped = [spec.eraser_label(n) for n in names]
    if num and all(m is not None for m in mapped):
        return mapped  # type: ignore[return-value]
    by_position = spec.eraser.position_fallback or all(GENERIC_LABEL.fullmatch(n) for n in names)
    if by_position and num == len(spec.eraser.labels):
        return list(spec.eraser.labels)
    if by_position and num == len(spec.labels):
        return [spec.eraser_label(lab) for lab in spec.labels]  # type: ignore[misc]
    raise ValueError(
        f"cannot map the model's {num} classes {names} to dataset labels {list(spec.eraser.labels)}; "
        "give a label map (--label-map CLASS=LABEL,...) or set config.id2label"
    )


def data_root(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The one data-folder resolution: ``data_dir``, else ``$ADAPLER_DATA_DIR``, else
    ``$ERASER_DATA_DIR``, else None. The folder holds ``sst2/``, ``movies/``, ``hatexplain/``,
    ``multirc/`` (see docs/data.md)."""
    for cand in (data_dir, os.environ.get(DATA_DIR_ENV), os.environ.get(LEGACY_DATA_DIR_ENV)):
        if cand:
            return Path(cand).expanduser()
    return None


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """:func:`data_root`, checked to exist; None = load from the Hub."""
    path = data_root(data_dir)
    if path is not None and not path.is_dir():
        raise DataError(f"data folder {path} does not exist (set --data-dir or {DATA_DIR_ENV})")
    return path


# ---------------------------------------------------------------- which dataset

def task_source(task: str, data_dir=None) -> DatasetSpec:
    """The preset of a built-in task: its folder in the data folder, else its Hub dataset."""
    spec = get_task(task)
    if spec.local is None:
        raise DataError(f"task {spec.name!r} has no example loader (it is evaluated on its ERASER rationales: "
                        "python -m eraser_eval)")
    root = resolve_data_dir(data_dir)
    source = spec.local if root is not None else spec.hub
    path = str(root / source.path) if root is not None else source.path
    return replace(source, path=path, name=spec.name, labels=spec.labels, max_length=spec.max_length,
                   long_inputs="windows" if spec.long_inputs else "truncate")


def dataset_source(dataset: str, config: str | None = None, **options) -> DatasetSpec:
    """Your own dataset: a local file or folder when ``dataset`` exists on disk, else a Hub name.
    ``options`` are further :class:`DatasetSpec` fields (columns, max_length, long_inputs)."""
    path = Path(dataset).expanduser()
    if path.exists():
        dataset = str(path)
    elif path.suffix.lower() in FILE_FORMATS or dataset.startswith((".", "/", "~")):
        raise DataError(f"{dataset}: no such file or folder")
    return _checked(DatasetSpec(dataset, config, **options))


def _checked(source: DatasetSpec) -> DatasetSpec:
    if source.long_inputs not in LONG_INPUTS:
        raise DataError(f"--long-inputs must be one of {', '.join(LONG_INPUTS)}, got {source.long_inputs!r}")
    if source.max_length < 4:
        raise DataError(f"--max-length must be at least 4, got {source.max_length}")
    return source


@dataclass(kw_only=True)
class DataArgs:
    """Which examples a command reads: ``--task`` (a preset) or ``--dataset`` with its columns.
    The command-line options of every command that reads a dataset (``python -m adapler``)."""

    task: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    data_dir: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    id_column: str | None = None
    max_length: int | None = None
    long_inputs: str | None = None

    def source(self) -> DatasetSpec:
        if (self.task is None) == (self.dataset is None):
            raise DataError(f"give exactly one of --task ({', '.join(training_tasks())}) or --dataset "
                            "(a Hub dataset name or local .csv/.tsv/.json/.jsonl/.parquet files)")
        sized = {k: v for k, v in (("max_length", self.max_length), ("long_inputs", self.long_inputs))
                 if v is not None}
        if self.task is not None:
            own = [f for f in ("dataset_config", "text_column", "text_pair_column", "label_column", "id_column")
                   if getattr(self, f) is not None]
            if own:
                raise DataError(f"--{own[0].replace('_', '-')} goes with --dataset; task {self.task!r} has its own "
                                "columns")
            return _checked(replace(task_source(self.task, self.data_dir), **sized))
        if self.data_dir is not None:
            raise DataError("--data-dir is the folder of the built-in tasks; with --dataset give the path itself")
        columns = {k: v for k, v in (("text_column", self.text_column), ("text_pair_column", self.text_pair_column),
                                     ("label_column", self.label_column), ("id_column", self.id_column))
                   if v is not None}
        return dataset_source(self.dataset, self.dataset_config, **columns, **sized)


# ---------------------------------------------------------------- examples

def load_examples(source: DatasetSpec | str, split: str, data_dir=None, limit: int | None = None,
                  labels: Iterable[str] | None = None) -> list[dict]:
    """Examples of one split (``"train"``, ``"val"``, ``"test[:100]"``, ...) of a dataset or a
    task preset (by name, from ``data_dir`` when there is one, else from the Hub).

    ``labels`` are the class names in model order (a model's :func:`label_names`); default: the
    dataset's own (:func:`dataset_labels`). A label value that is not one of them is an error.
    """
    if isinstance(source, str):
        source = task_source(source, data_dir)
    name, rows_slice = parse_split(split)
    rows, classes = _read_split(source, name)
    names = tuple(labels) if labels is not None else dataset_labels(source, (name, rows, classes))
    examples = _examples(source, name, rows, classes, names)[_slice(rows_slice, len(rows))]
    return examples[:limit] if limit else examples


def dataset_labels(source: DatasetSpec, read: tuple | None = None) -> tuple[str, ...]:
    """Class names of a dataset: the preset's, else the ``ClassLabel`` names of its label column,
    else the sorted distinct values of that column in split ``train`` (numbers sorted as numbers).
    ``read``: ``(split, rows, classes)`` already read, used when it is ``train`` or there is none."""
    if source.labels is not None:
        return source.labels
    if read is not None and read[0] == "train":
        rows, classes = read[1:]
    else:
        try:
            rows, classes = _read_split(source, "train")
        except _NoSplit:
            if read is None:
                raise
            rows, classes = read[1:]
    if classes is not None:
        return classes
    values = {_row_value(row, source.label_column, where) for where, row in rows}
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    return tuple(str(v) for v in sorted(values, key=(int if ints else str)))


def model_labels(config, source: DatasetSpec) -> tuple[str, ...]:
    """The class names to read ``source`` with for a model: its ``id2label`` when the names are
    meaningful (every dataset label must be one), else the dataset's labels (same count)."""
    names = label_names(config)
    data = dataset_labels(source)
    if all(GENERIC_LABEL.fullmatch(n) for n in names):
        if len(data) != len(names):
            raise DataError(f"the model has {len(names)} classes, {source.title} has {len(data)} labels "
                            f"({', '.join(data)}): start from a model with as many classes, or fine-tune one "
                            "on this data (python -m adapler finetune)")
        return data
    missing = [lab for lab in data if lab not in names]
    if missing:
        raise DataError(f"labels {', '.join(map(repr, missing))} of {source.title} are not classes of the model "
                        f"({', '.join(names)}): fine-tune a model on this data (python -m adapler finetune), "
                        "or rename the classes in the model's config.json id2label/label2id")
    return tuple(names)


def parse_split(split: str) -> tuple[str, tuple]:
    """``"train"`` -> ("train", (None, None)); ``"train[36000:]"``, ``"train[:80%]"``: a slice of
    the split as in ``datasets`` (row numbers or percentages); ``validation``/``dev`` = ``val``."""
    m = re.fullmatch(r"([\w.-]+)(?:\[(-?\d*%?):(-?\d*%?)\])?", split.strip())
    if not m:
        raise DataError(f"unknown split {split!r}; use train, val (validation) or test, "
                        "optionally sliced like train[36000:] or train[:80%]")
    return SPLIT_ALIASES.get(m.group(1), m.group(1)), (m.group(2) or None, m.group(3) or None)


def _slice(bounds: tuple, n: int) -> slice:
    def index(b):
        if b is None:
            return None
        return round(n * int(b[:-1]) / 100) if b.endswith("%") else int(b)
    return slice(index(bounds[0]), index(bounds[1]))


def _row_value(row: dict, column: str, where: str):
    if column not in row:
        raise DataError(f"{where}: no column {column!r} (columns: {', '.join(row)}); "
                        "name the right one with --text-column/--text-pair-column/--label-column/--id-column")
    return row[column]


def _text(row: dict, column: str, where: str) -> str:
    value = _row_value(row, column, where)
    text = str(value).strip() if value is not None else ""
    if not text:
        raise DataError(f"{where}: empty text in column {column!r}; remove the row or fill it in")
    return text


def _examples(source: DatasetSpec, split: str, rows: list[tuple[str, dict]], classes, names) -> list[dict]:
    """Rows -> examples: texts stripped, labels as indices into ``names``, ids from the id column or
    ``source.id_template``."""
    index = {n: i for i, n in enumerate(names)}
    out, seen = [], set()
    for i, (where, row) in enumerate(rows):
        text = _text(row, source.text_column, where)
        pair = _text(row, source.text_pair_column, where) if source.text_pair_column else None
        value = _row_value(row, source.label_column, where)
        if value is None or str(value).strip() == "":
            raise DataError(f"{where}: no label in column {source.label_column!r}; fill it in or remove the row")
        if classes and isinstance(value, int) and 0 <= value < len(classes):
            value = classes[value]  # ClassLabel columns hold class numbers
        label = index.get(str(value))
        if label is None and source.labels and re.fullmatch(r"\d+", str(value)) and int(value) < len(source.labels):
            label = index.get(source.labels[int(value)])  # a preset's class number (sst2's 0/1)
        if label is None:
            raise DataError(f"{where}: label {value!r} is not in the label set ({', '.join(names)}); "
                            "fix the row, or use a model whose classes include it")
        if source.id_column:
            ex_id = str(_row_value(row, source.id_column, where))
        else:
            digest = hashlib.sha1("\x1f".join(t for t in (text, pair) if t is not None).encode()).hexdigest()[:8]
            ex_id = source.id_template.format(split=split, row=i, hash=digest)
        if ex_id in seen:
            raise DataError(f"{where}: duplicate id {ex_id!r}; ids must be unique (--id-column)")
        seen.add(ex_id)
        ex = {"id": ex_id, "text": text, "label": label}
        if pair is not None:
            ex["text_pair"] = pair
        out.append(ex)
    return out


class _NoSplit(DataError):
    """The dataset has no such split."""


def _read_split(source: DatasetSpec, split: str) -> tuple[list[tuple[str, dict]], tuple[str, ...] | None]:
    """``([(where, row)], ClassLabel names or None)`` of one whole split; ``where`` names the file
    and row for messages."""
    if source.reader is not None:
        where = f"{source.path} ({split})"
        return [(f"{where}, row {i + 1}", row) for i, row in enumerate(source.reader(source.path, split))], None
    path = Path(source.path)
    if path.exists():
        return _read_local(path, split, source.label_column, dict(source.load_options))
    return _read_hub(source, split)


def _pick_split(split: str, available: Iterable[str], where) -> str:
    available = list(available)
    for cand in VAL_SPLIT_NAMES if split == "val" else (split,):
        if cand in available:
            return cand
    raise _NoSplit(f"{where}: no split {split!r} (available: {', '.join(available) or 'none'}); name the files "
                   "by split (train.csv, validation.csv, test.csv) or choose another split")


def _read_local(path: Path, split: str, label_column: str, options: dict):
    files: dict[str, list[Path]] = {}
    if path.is_file():
        files["train"] = [path]
    else:
        for f in sorted(path.iterdir()):
            if f.is_file() and f.suffix.lower() in FILE_FORMATS:
                files.setdefault(f.name.split(".")[0].split("-")[0], []).append(f)
    chosen = files[_pick_split(split, files, path)]
    rows, classes = [], None
    for f in chosen:
        table = _load_file(f, options)
        feature = table.features.get(label_column)
        classes = tuple(feature.names) if hasattr(feature, "names") else classes
        rows += [(f"{f}, row {i + 1}", row) for i, row in enumerate(table.to_list())]
    return rows, classes


def _load_file(file: Path, options: dict):
    import datasets  # heavy dependency: only when reading datasets

    builder, defaults = FILE_FORMATS[file.suffix.lower()]
    kwargs = {**defaults, **options}
    if builder == "csv":
        kwargs.setdefault("na_filter", False)  # "NA", "null" and empty cells stay text
    else:
        kwargs.pop("quoting", None)
    library_log = logging.getLogger("datasets")
    level = library_log.level
    library_log.setLevel(logging.CRITICAL)  # it logs a parse error with its traceback; ours names the file
    try:
        return datasets.load_dataset(builder, data_files=str(file), split="train", **kwargs)
    except Exception as err:  # noqa: BLE001 - datasets raises many types; the message must name the file
        if file.suffix.lower() == ".jsonl":
            for _ in read_jsonl(file):  # one object per line: name the line that is not valid JSON
                pass
        cause = err
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
        raise DataError(f"{file}: not a valid {file.suffix.lstrip('.').upper()} file ({str(cause).strip()}); fix the file "
                        "or check its delimiter/quoting") from None
    finally:
        library_log.setLevel(level)


def _load_hub(path: str, config: str | None, split: str | None):
    import datasets  # heavy dependency: only when reading datasets

    try:
        return datasets.load_dataset(path, config, split=split)
    except ValueError as err:
        raise _NoSplit(f"Hub dataset {path}{'/' + config if config else ''}: {err}") from None
    except Exception as err:  # noqa: BLE001 - network, missing dataset or config: all say the same to a user
        raise DataError(f"cannot load Hub dataset {path!r}{f' ({config})' if config else ''}: {err}; "
                        "check the name and --dataset-config, or give local files") from None


def _read_hub(source: DatasetSpec, split: str):
    splits = _load_hub(source.path, source.config, None)
    name = _pick_split(split, splits, f"Hub dataset {source.path}")
    table = splits[name]
    feature = table.features.get(source.label_column)
    classes = tuple(feature.names) if hasattr(feature, "names") else None
    return [(f"{source.path} ({name}), row {i + 1}", row) for i, row in enumerate(table)], classes


# ---------------------------------------------------------------- local files

def _need(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"missing data file {path}")
    return path


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` per non-blank line; errors name the file and the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for lineno, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 may sit in a string
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def tokenize_document(text: str) -> list[list[str]]:
    """ERASER's document tokenisation: one sentence per line, tokens separated by spaces; empty
    tokens and empty lines dropped."""
    sentences = []
    for line in text.split("\n"):
        toks = [t for t in line.strip().split(" ") if t]
        if toks:
            sentences.append(toks)
    return sentences


def load_documents(path: str | os.PathLike, docids: Iterable[str] | None = None) -> dict[str, list[list[str]]]:
    """Tokenised documents (sentences of tokens) of an ERASER folder: ``docs/`` (one file per docid)
    or ``docs.jsonl``. ``docids`` restricts loading to those; a requested docid that does not exist
    is not an error here (callers report it with their own context)."""
    path = Path(path)
    wanted = None if docids is None else set(docids)
    docs: dict[str, list[list[str]]] = {}
    folder, jsonl = path / "docs", path / "docs.jsonl"
    if folder.is_dir():
        names = wanted if wanted is not None else [p.name for p in folder.iterdir() if p.is_file()]
        for docid in sorted(names):
            f = folder / docid
            if not f.is_file() or Path(docid).name != docid:
                continue
            try:
                text = f.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{f}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            docs[docid] = tokenize_document(text)
    elif jsonl.is_file():
        for lineno, obj in read_jsonl(jsonl):
            docid, text = obj.get("docid"), obj.get("document")
            if not isinstance(docid, str) or not isinstance(text, str):
                raise DataError(f"{jsonl}:{lineno}: a docs.jsonl line needs string 'docid' and 'document'")
            if wanted is not None and docid not in wanted:
                continue
            if docid in docs:
                raise DataError(f"{jsonl}:{lineno}: duplicate docid {docid!r}")
            docs[docid] = tokenize_document(text)
    else:
        raise DataError(f"{path}: no documents (neither a docs/ folder nor docs.jsonl)")
    return docs


def _document_texts(folder: Path, docids: list[str]) -> dict[str, str]:
    """Text of each ERASER document (its tokens joined by spaces); a missing one is an error."""
    docs = load_documents(folder, docids)
    missing = [d for d in docids if d not in docs]
    if missing:
        raise DataError(f"{folder}: no document {missing[0]!r} ({len(missing)} missing)")
    return {d: " ".join(tok for sent in sents for tok in sent) for d, sents in docs.items()}


# ---------------------------------------------------------------- tokenisation

def encode(examples: list[dict], tokenizer, max_length: int, windows: bool = False) -> list[dict]:
    """Features ``{"id", "window", "input_ids", "label"}`` (no padding; see ``collate``).

    A single text is ``[CLS] text [SEP]``; a pair (``"text_pair"``) is ``[CLS] text [SEP] text_pair
    [SEP]`` with ``token_type_ids`` 1 on the second segment, which is always kept whole. Inputs
    longer than ``max_length`` are truncated (the first text only), or with ``windows=True`` cut into
    consecutive windows of the first text (``adapler.windows``), each a feature of its own with the
    example's label, so no piece of a long document is lost. ``label`` is copied when present (a
    typed text has none).
    """
    firsts = tokenizer([ex["text"] for ex in examples], add_special_tokens=False)["input_ids"]
    has_pair = bool(examples) and "text_pair" in examples[0]
    seconds = (tokenizer([ex["text_pair"] for ex in examples], add_special_tokens=False)["input_ids"]
               if has_pair else [None] * len(examples))
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    feats = []
    for ex, a, b in zip(examples, firsts, seconds):
        room = max_length - 2 - (len(b) + 1 if b is not None else 0)  # pieces of the first text per input
        if room < 1:
            raise DataError(f"example {ex['id']}: its second text has {len(b)} word pieces, more than "
                            f"--max-length {max_length} leaves room for; raise --max-length or shorten it")
        spans = split_windows(len(a), room) if windows else [(0, min(len(a), room))]
        for w, (start, end) in enumerate(spans):
            feat = {"id": ex["id"], "window": w, "input_ids": [cls, *a[start:end], sep]}
            if b is not None:
                feat["token_type_ids"] = [0] * len(feat["input_ids"]) + [1] * (len(b) + 1)
                feat["input_ids"] += [*b, sep]
            if "label" in ex:
                feat["label"] = ex["label"]
            feats.append(feat)
    return feats


def collate(features: list[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad a list of features to the batch's longest (per-batch padding): the one collate of
    training, evaluation and the ERASER engine. ``token_type_ids`` from the features when they have
    them (segment B of query tasks), else 0; ``saliency``, ``teacher_logits`` and ``labels`` when present."""
    longest = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(features), longest), dtype=torch.long)
    types = torch.zeros((len(features), longest), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.as_tensor(f["input_ids"], dtype=torch.long)
        mask[i, :n] = 1
        if f.get("token_type_ids") is not None:
            types[i, :n] = torch.as_tensor(f["token_type_ids"], dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if "saliency" in features[0]:
        sal = torch.zeros((len(features), longest))
        for i, f in enumerate(features):
            sal[i, : len(f["saliency"])] = torch.as_tensor(f["saliency"], dtype=torch.float32)
        batch["saliency"] = sal
    if "teacher_logits" in features[0]:
        batch["teacher_logits"] = torch.stack([torch.as_tensor(f["teacher_logits"]).float() for f in features])
    if "label" in features[0]:
        batch["labels"] = torch.tensor([f["label"] for f in features])
    return batch


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int | None) -> list[list[int]]:
    """Batches of similar-length indices (less padding); batch order shuffled when a seed is given.

    Indices are shuffled, cut into mega-batches of 50 batches, sorted by length inside each, then
    split; the same seed always gives the same batches (resume depends on it).
    """
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    if seed is not None:
        rng.shuffle(order)
    mega = batch_size * 50
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if seed is not None:
        rng.shuffle(batches)
    return batches
