"""Task registry, data-folder resolution, local and Hub loaders, tokenisation and batching.

The one registry of tasks/datasets (``TASKS``) and the one data-folder resolution (:func:`data_root`)
used by training, evaluation, the ERASER evaluation and the explorer. A task's ``eraser`` entry says
where its ERASER rationales live and how its classes map to the ERASER labels (HateXplain's three
classes -> toxic / non-toxic).

Every task yields examples ``{"id": str, "text": str, "label": int}``. Local files come from a data
folder (``--data-dir`` or ``ADAPLER_DATA_DIR``, see docs/data.md); with no folder the same datasets
are loaded from the Hugging Face Hub by name. Examples are keyed by id everywhere (saliency files,
reports), never by order. ERASER-format files (annotation JSONL, ``docs/`` or ``docs.jsonl``) are
read by :func:`read_jsonl` and :func:`load_documents`, here and in ``eraser_eval.data``.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
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

    def eraser_label(self, name: str) -> str | None:
        """The ERASER label meaning class ``name`` (case-insensitive), or None."""
        if self.eraser is None:
            return None
        key = str(name).strip().lower()
        lookup = {lab.lower(): lab for lab in self.eraser.labels} | self.eraser.label_map
        return lookup.get(key)


_HATEXPLAIN_TOXIC = {"hatespeech": "toxic", "hate speech": "toxic", "hate": "toxic", "offensive": "toxic",
                     "normal": "non-toxic", "nontoxic": "non-toxic", "non_toxic": "non-toxic", "not toxic": "non-toxic"}

TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec("sst2", ("negative", "positive"), 64, gamma=0.05, phi=0.01),
    "hatexplain": TaskSpec(
        "hatexplain", ("hatespeech", "offensive", "normal"), 128, gamma=0.05, phi=0.01,
        eraser=EraserSpec("hatexplain/eraser", ("non-toxic", "toxic"), label_map=_HATEXPLAIN_TOXIC)),
    "movies": TaskSpec(
        "movies", ("NEG", "POS"), 512, gamma=0.05, phi=0.001, long_inputs=True,
        eraser=EraserSpec("movies", ("NEG", "POS"),
                          label_map={"neg": "NEG", "negative": "NEG", "pos": "POS", "positive": "POS"})),
    # evaluated on its ERASER rationales only (no training loader)
    "multirc": TaskSpec(
        "multirc", ("False", "True"), 512, gamma=0.05, phi=0.001, long_inputs=True,
        eraser=EraserSpec("multirc", ("False", "True"), has_query=True,
                          label_map={"false": "False", "no": "False", "incorrect": "False",
                                     "true": "True", "yes": "True", "correct": "True"})),
}
SPLIT_ALIASES = {"validation": "val", "dev": "val", "val": "val", "train": "train", "test": "test"}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def training_tasks() -> list[str]:
    """Tasks with example loaders (``finetune``, ``train``, ``evaluate``)."""
    return [name for name in TASKS if name in _LOCAL]


def eraser_tasks() -> list[str]:
    """Tasks with ERASER rationales (``python -m eraser_eval --dataset``)."""
    return [name for name, spec in TASKS.items() if spec.eraser is not None]


def class_label_map(config, task: str | TaskSpec) -> list[str]:
    """ERASER label of every model class of ``config`` for ``task``.

    Read from ``config.id2label`` when the names are meaningful (``NEG``/``negative``,
    ``hatespeech``/``offensive`` -> ``toxic``, ``normal`` -> ``non-toxic``, ...); generic names
    (``LABEL_0``) fall back to the ERASER label order (as many classes as ERASER labels) or to the
    task's own classes mapped to ERASER labels (HateXplain's three classes).
    """
    spec = get_task(task) if isinstance(task, str) else task
    if spec.eraser is None:
        raise DataError(f"task {spec.name!r} has no ERASER rationales")
    num = int(getattr(config, "num_labels", 0) or len(getattr(config, "id2label", {}) or {}))
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    mapped = [spec.eraser_label(id2label.get(i, "")) for i in range(num)]
    if num and all(m is not None for m in mapped):
        return mapped  # type: ignore[return-value]
    if num == len(spec.eraser.labels):
        return list(spec.eraser.labels)
    if num == len(spec.labels):
        return [spec.eraser_label(lab) for lab in spec.labels]  # type: ignore[misc]
    raise ValueError(
        f"cannot map the model's {num} classes {[id2label.get(i) for i in range(num)]} to dataset labels "
        f"{list(spec.eraser.labels)}; set config.id2label"
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


def load_examples(task: str, split: str, data_dir=None, limit: int | None = None) -> list[dict]:
    """Examples of one split, from the data folder when there is one, else from the Hub."""
    spec = get_task(task)
    if spec.name not in _LOCAL:
        raise DataError(f"task {spec.name!r} has no example loader (it is evaluated on its ERASER rationales: "
                        "python -m eraser_eval)")
    split, rows = parse_split(split)
    root = resolve_data_dir(data_dir)
    loader = _LOCAL[spec.name] if root is not None else _HUB[spec.name]
    examples = (loader(root, split) if root is not None else loader(split))[rows]
    return examples[:limit] if limit else examples


def parse_split(split: str) -> tuple[str, slice]:
    """``"train"`` -> ("train", all rows); ``"train[36000:]"`` -> ("train", rows 36000 on), as the
    ``datasets`` split syntax: e.g. calibrate on training examples that AdapLeR training never saw."""
    m = re.fullmatch(r"(\w+)(?:\[(-?\d*):(-?\d*)\])?", split.strip())
    if not m or m.group(1) not in SPLIT_ALIASES:
        raise DataError(f"unknown split {split!r}; use train, val (validation) or test, "
                        "optionally sliced like train[36000:]")
    start, stop = (int(x) if x else None for x in m.group(2, 3))
    return SPLIT_ALIASES[m.group(1)], slice(start, stop)


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


def _local_sst2(root: Path, split: str) -> list[dict]:
    if split == "test":
        raise DataError("SST-2 test labels are not public; use split 'val' (GLUE validation)")
    path = _need(root / "sst2" / ("train.tsv" if split == "train" else "dev.tsv"))
    out = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header != ["sentence", "label"]:
            raise DataError(f"{path}, line 1: expected header 'sentence<TAB>label', got {header}")
        for lineno, row in enumerate(reader, 2):
            if len(row) != 2 or row[1] not in ("0", "1"):
                raise DataError(f"{path}, line {lineno}: expected 'sentence<TAB>0|1'")
            out.append({"id": f"sst2-{split}-{lineno - 2}", "text": row[0].strip(), "label": int(row[1])})
    return out


def _local_hatexplain(root: Path, split: str) -> list[dict]:
    base = root / "hatexplain"
    labels = {r["post_id"]: r for _, r in read_jsonl(_need(base / "labels.jsonl"))}
    divisions = json.loads(_need(base / "post_id_divisions.json").read_text())
    post_ids = divisions[split]
    for post_id in post_ids:
        if post_id not in labels:
            raise DataError(f"{base}: post {post_id} of split {split} has no label")
    texts = _document_texts(base / "eraser", post_ids)
    names = TASKS["hatexplain"].labels
    return [{"id": p, "text": texts[p], "label": names.index(labels[p]["label"])} for p in post_ids]


def _local_movies(root: Path, split: str) -> list[dict]:
    """Reviews interleaved by class (negR_000, posR_000, negR_001, ...): the ERASER files list all
    negative reviews first, so a plain ``--limit N`` would otherwise take one class only."""
    base = root / "movies"
    rows = [r for _, r in read_jsonl(_need(base / f"{split}.jsonl"))]
    rows.sort(key=lambda r: (int("".join(c for c in r["annotation_id"] if c.isdigit()) or 0), r["annotation_id"]))
    texts = _document_texts(base, [r["annotation_id"] for r in rows])
    names = TASKS["movies"].labels
    return [{"id": r["annotation_id"], "text": texts[r["annotation_id"]], "label": names.index(r["classification"])}
            for r in rows]


_LOCAL = {"sst2": _local_sst2, "hatexplain": _local_hatexplain, "movies": _local_movies}


# ---------------------------------------------------------------- Hugging Face Hub (when online)

def _hub_sst2(split: str) -> list[dict]:
    import datasets  # optional heavy dependency: only when loading from the Hub

    ds = datasets.load_dataset("glue", "sst2", split={"val": "validation"}.get(split, split))
    return [{"id": f"sst2-{split}-{r['idx']}", "text": r["sentence"].strip(), "label": r["label"]} for r in ds]


def _hub_hatexplain(split: str) -> list[dict]:
    import datasets  # optional heavy dependency: only when loading from the Hub

    ds = datasets.load_dataset("hatexplain", split={"val": "validation"}.get(split, split))
    out = []
    for r in ds:  # majority of the three annotators; posts without one are "undecided" and skipped
        label, count = Counter(r["annotators"]["label"]).most_common(1)[0]
        if count >= 2:  # hub label ids: 0 hatespeech, 1 normal, 2 offensive
            name = {0: "hatespeech", 1: "normal", 2: "offensive"}[label]
            out.append({"id": r["id"], "text": " ".join(r["post_tokens"]),
                        "label": TASKS["hatexplain"].labels.index(name)})
    return out


def _hub_movies(split: str) -> list[dict]:
    import datasets  # optional heavy dependency: only when loading from the Hub

    ds = datasets.load_dataset("movie_rationales", split={"val": "validation"}.get(split, split))
    return [{"id": f"movies-{split}-{i}", "text": " ".join(r["review"].split()), "label": r["label"]}
            for i, r in enumerate(ds)]


_HUB = {"sst2": _hub_sst2, "hatexplain": _hub_hatexplain, "movies": _hub_movies}


# ---------------------------------------------------------------- tokenisation

def encode(examples: list[dict], tokenizer, max_length: int, windows: bool = False) -> list[dict]:
    """Features ``{"id", "window", "input_ids", "label"}`` (no padding; see ``collate``).

    Short tasks are truncated at ``max_length``. With ``windows=True`` every example is cut into
    consecutive windows of ``max_length - 2`` pieces (``adapler.windows``), each a feature of its own
    with the example's label, so no piece of a long document is lost.
    """
    texts = [ex["text"] for ex in examples]
    if not windows:
        enc = tokenizer(texts, truncation=True, max_length=max_length)
        return [{"id": ex["id"], "window": 0, "input_ids": ids, "label": ex["label"]}
                for ex, ids in zip(examples, enc["input_ids"])]
    pieces = tokenizer(texts, add_special_tokens=False)["input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    feats = []
    for ex, ids in zip(examples, pieces):
        for w, (start, end) in enumerate(split_windows(len(ids), max_length - 2)):
            feats.append({"id": ex["id"], "window": w, "input_ids": [cls, *ids[start:end], sep],
                          "label": ex["label"]})
    return feats


def collate(features: list[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad a list of features to the batch's longest (per-batch padding): the one collate of
    training, evaluation and the ERASER engine. ``token_type_ids`` from the features when they have
    them (segment B of query tasks), else 0; ``saliency`` and ``labels`` when present."""
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
