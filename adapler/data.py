"""Task registry, local and Hub loaders, tokenisation and length-grouped batching.

Every task yields examples ``{"id": str, "text": str, "label": int}`` (``text_pair`` too for pair
tasks). Local files come from a data folder (``--data-dir`` or ``ADAPLER_DATA_DIR``) laid out like
``../shared/data`` (see its README); with no folder the same datasets are loaded from the Hugging
Face Hub by name. Examples are keyed by id everywhere (saliency files, reports), never by order.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from .windows import split_windows

DATA_DIR_ENV = "ADAPLER_DATA_DIR"


class DataError(ValueError):
    """A data folder or file is missing or malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    labels: tuple[str, ...]
    max_length: int
    # Per-task AdapLeR defaults (method doc 4.4; tuned here where the reference has none).
    gamma: float
    phi: float
    long_inputs: bool = False  # documents longer than max_length: split into windows


TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec("sst2", ("negative", "positive"), 64, gamma=0.05, phi=0.01),
    "hatexplain": TaskSpec("hatexplain", ("hatespeech", "offensive", "normal"), 128, gamma=0.05, phi=0.01),
    "movies": TaskSpec("movies", ("NEG", "POS"), 512, gamma=0.05, phi=0.001, long_inputs=True),
}
SPLIT_ALIASES = {"validation": "val", "dev": "val", "val": "val", "train": "train", "test": "test"}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The explicit folder, else ``$ADAPLER_DATA_DIR``, else None (= load from the Hub)."""
    value = data_dir or os.environ.get(DATA_DIR_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(f"data folder {path} does not exist (set --data-dir or {DATA_DIR_ENV})")
    return path


def load_examples(task: str, split: str, data_dir=None, limit: int | None = None) -> list[dict]:
    """Examples of one split, from the data folder when there is one, else from the Hub."""
    spec = get_task(task)
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


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(_need(path), encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from None
    return rows


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
    labels = {r["post_id"]: r for r in _read_jsonl(base / "labels.jsonl")}
    docs = {r["docid"]: r["document"] for r in _read_jsonl(base / "eraser" / "docs.jsonl")}
    divisions = json.loads(_need(base / "post_id_divisions.json").read_text())
    names = TASKS["hatexplain"].labels
    out = []
    for post_id in divisions[split]:
        if post_id not in labels or post_id not in docs:
            raise DataError(f"{base}: post {post_id} of split {split} has no label or no text")
        out.append({"id": post_id, "text": docs[post_id], "label": names.index(labels[post_id]["label"])})
    return out


def _local_movies(root: Path, split: str) -> list[dict]:
    """Reviews interleaved by class (negR_000, posR_000, negR_001, ...): the ERASER files list all
    negative reviews first, so a plain ``--limit N`` would otherwise take one class only."""
    base = root / "movies"
    out = []
    rows = _read_jsonl(base / f"{split}.jsonl")
    rows.sort(key=lambda r: (int("".join(c for c in r["annotation_id"] if c.isdigit()) or 0), r["annotation_id"]))
    for row in rows:
        docid = row["annotation_id"]
        lines = _need(base / "docs" / docid).read_text(encoding="utf-8").splitlines()
        text = " ".join(line.strip() for line in lines if line.strip())
        out.append({"id": docid, "text": text, "label": TASKS["movies"].labels.index(row["classification"])})
    return out


_LOCAL = {"sst2": _local_sst2, "hatexplain": _local_hatexplain, "movies": _local_movies}


# ---------------------------------------------------------------- Hugging Face Hub (when online)

def _hub_sst2(split: str) -> list[dict]:
    import datasets

    ds = datasets.load_dataset("glue", "sst2", split={"val": "validation"}.get(split, split))
    return [{"id": f"sst2-{split}-{r['idx']}", "text": r["sentence"].strip(), "label": r["label"]} for r in ds]


def _hub_hatexplain(split: str) -> list[dict]:
    import datasets

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
    import datasets

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
    """Right-pad a list of features to the batch's longest (per-batch padding)."""
    longest = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(features), longest), dtype=torch.long)
    for i, f in enumerate(features):
        ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
        mask[i, : len(f["input_ids"])] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
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
