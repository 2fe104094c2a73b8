"""The explorer's model and data handling: loaded models (one engine and baseline each, a lock per
model), dataset examples with human rationales, examples of your own dataset (``--dataset``), shipped
reports, downloads and the live evaluation.

The per-text analysis itself is :func:`eraser_eval.analysis.analyze_text` (the same engine and
rationale methods as the ERASER runner); this module only keeps the loaded models and serialises
their passes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import AutoConfig

from adapler import data as D
from adapler.evaluation import plain_bert_copy
from eraser_eval.analysis import Analysis, InputError, analyze_text
from eraser_eval.cache import LRUTable
from eraser_eval.data import EraserDataError, load_dataset, resolve_data_root
from eraser_eval.engine import Engine
from eraser_eval.metrics import spans_to_mask
from eraser_eval.report import EXAMPLES_JSONL, read_examples_jsonl
from eraser_eval.runner import EvalConfig, evaluate, load_model

log = logging.getLogger("app")

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = REPO_ROOT / "assets"
MODELS_DIR = ASSETS / "models"
REPORTS_DIR = ASSETS / "reports"
EXAMPLES_FILE = ASSETS / "examples.json"

# (task folder under assets/models, label in the picker)
SHIPPED_MODELS: tuple[tuple[str, str], ...] = (
    ("sst2", "SST-2 (sentiment)"),
    ("hatexplain", "HateXplain (toxicity)"),
    ("movies", "Movie Reviews (sentiment)"),
)
DATASET_TITLES = {"hatexplain": "HateXplain", "movies": "Movie Reviews", "multirc": "MultiRC"}

DEFAULT_MAX_MODELS = 3  # models kept loaded at once (least recently used out; --max-models)
ENGINE_CACHE_SIZE = 256  # entries per engine cache table kept in a long-running server (least recently used out)
METHOD_TITLES = {
    "human": "Human rationale",
    "adapler": "AdapLeR (tokens kept to the last layer)",
    "saliency": "Gradient x input (saliency)",
    "attention": "[CLS] attention (last layer)",
    "attention_rollout": "Attention rollout",
    "integrated_gradients": "Integrated Gradients (20 steps)",
    "occlusion": "Occlusion (each word [MASK]ed)",
}


class UserError(ValueError):
    """A problem with the user's input or choice; the message is shown as it is."""


# --------------------------------------------------------------------------------------------------
# models


def shipped_models(models_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Picker label -> folder of every shipped model present (a folder with a config.json)."""
    root = Path(models_dir) if models_dir else MODELS_DIR
    out = {}
    for task, label in SHIPPED_MODELS:
        p = root / task
        if (p / "config.json").is_file():
            out[label] = p
    return out


def task_of(path: str | os.PathLike | None) -> str | None:
    """Shipped task name of a model folder (``assets/models/<task>``), else None."""
    if path is None:
        return None
    name = Path(path).name
    return name if name in {t for t, _ in SHIPPED_MODELS} else None


@dataclass
class ModelBundle:
    """A loaded model with everything the analysis needs, and the lock that serialises its passes."""

    path: Path
    model: Any
    tokenizer: Any
    engine: Any  # eraser_eval.Engine
    baseline: Any  # plain BERT with the same weights (adapler.evaluation.plain_bert_copy)
    labels: list[str]
    trained_adapler: bool  # False: a plain BERT folder, CPs are untrained
    max_length: int
    load_seconds: float
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def task(self) -> str | None:
        return task_of(self.path)

    @property
    def pair(self) -> bool:
        """The model reads a pair of texts (trained here with a second-text column)."""
        return D.is_pair_model(self.model.config)

    def describe(self) -> str:
        c = self.model.config
        kind = "AdapLeR" if self.trained_adapler else "plain BERT (untrained Contribution Predictors)"
        return (f"{kind} · {c.num_hidden_layers} layers · hidden {c.hidden_size} · "
                f"classes: {', '.join(self.labels)} · window {self.max_length} pieces"
                + (" · reads a pair of texts" if self.pair else ""))


class ModelCache:
    """Loaded models by resolved folder, at most ``max_models`` of them: loading one more drops the least
    recently used (a long-running public server's memory stays bounded). A dropped model is freed once
    the requests still using it end."""

    def __init__(self, max_models: int = DEFAULT_MAX_MODELS):
        if max_models < 1:
            raise ValueError(f"max_models must be at least 1, got {max_models}")
        self.max_models = max_models
        self.bundles = LRUTable()  # resolved folder -> ModelBundle, least recently used first
        self.lock = threading.Lock()  # one load at a time (each one is seconds of torch work)

    def loaded(self) -> list[Path]:
        """Folders of the loaded models, least recently used first."""
        with self.lock:
            return [b.path for b in self.bundles.values()]

    def get(self, path: str | os.PathLike) -> ModelBundle:
        """The loaded model of folder ``path``, loading it on first use; raises :class:`UserError` with a reason."""
        path = Path(path).expanduser()
        key = str(path.resolve())
        with self.lock:
            if key in self.bundles:
                return self.bundles[key]  # marks it recently used
            bundle = _load(path)
            self.bundles[key] = bundle
            self.bundles.trim(self.max_models)
            return bundle


def _load(path: Path) -> ModelBundle:
    if not (path / "config.json").is_file():
        raise UserError(f"No model at {path}: the folder needs a config.json (an AdapLeR or BERT classifier).")
    t0 = time.perf_counter()
    try:
        model, tokenizer = load_model(str(path))
    except Exception as e:  # a broken folder: say which and why, no traceback
        raise UserError(f"Could not load the model at {path}: {e}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"The tokenizer at {path} is not a fast tokenizer; word alignment needs one.")
    raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    id2label = getattr(model.config, "id2label", None) or {}
    labels = [str(id2label.get(i, id2label.get(str(i), f"class {i}"))) for i in range(model.config.num_labels)]
    engine = Engine(model, tokenizer, batch_size=4, cache_dir=None, cache_size=ENGINE_CACHE_SIZE)
    baseline = plain_bert_copy(model).eval()
    bundle = ModelBundle(path, model, tokenizer, engine, baseline, labels,
                         raw.get("model_type") == "adapler", engine.max_length, 0.0)
    try:  # every code path once (drop, masked, eager attention, backward): first answers are fast
        words = "A short warm-up sentence for the explorer.".split()
        analyze(bundle, " ".join(words), 1.0, HumanExample("warm-up", "warm-up", "warm-up", " ".join(words),
                                                           words, [i % 2 == 0 for i in range(len(words))], ""),
                text_pair="And a second one." if bundle.pair else None)
    except Exception:  # a warm-up failure surfaces again, readably, on the first real request
        log.exception("warm-up analysis failed for %s", path)
    bundle.load_seconds = time.perf_counter() - t0
    log.info("loaded %s in %.1f s", path, bundle.load_seconds)
    return bundle


MODELS = ModelCache()  # the process's models; `python -m app --max-models N` sets its bound


def load_bundle(path: str | os.PathLike) -> ModelBundle:
    """Load (once while it stays in :data:`MODELS`) the model folder ``path``; raises :class:`UserError`."""
    return MODELS.get(path)


# --------------------------------------------------------------------------------------------------
# examples


def load_examples(path: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Sentences written for the app, per task (``assets/examples.json``)."""
    p = Path(path) if path else EXAMPLES_FILE
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: [str(s) for s in v] for k, v in data.items() if not k.startswith("_") and isinstance(v, list)}


@dataclass
class HumanExample:
    """A dataset example with a human rationale over its whitespace tokens."""

    key: str  # "dataset:annotation_id"
    dataset: str
    annotation_id: str
    text: str  # tokens joined by spaces, sentences by newlines
    tokens: list[str]
    gold: list[bool]
    label: str

    @property
    def source(self) -> str:
        """Where the human rationale comes from (``eraser_eval.analysis.HumanRationale.source``)."""
        return f"{self.dataset} test, annotation {self.annotation_id}"

    @property
    def title(self) -> str:
        head = " ".join(self.tokens[:9])
        return f"{DATASET_TITLES.get(self.dataset, self.dataset)} · {self.label} · {head}{' …' if len(self.tokens) > 9 else ''}"


def human_from_record(dataset: str, record: dict) -> HumanExample:
    """A report's per-example record (``examples.jsonl``) as a dataset example: its stored tokens and
    human rationale, so it opens in the Explore tab without the data folder."""
    tokens = [str(t) for t in record["tokens"]]
    gold = spans_to_mask(record.get("human", []), len(tokens))
    return HumanExample(f"{dataset}:{record['annotation_id']}", dataset, str(record["annotation_id"]),
                        " ".join(tokens), tokens, [bool(x) for x in gold], str(record.get("label", "")))


def load_human_examples(data_dir: str | os.PathLike | None, per_dataset: int = 6) -> list[HumanExample]:
    """Test-split examples with human rationales from the local data folder (hidden if absent).

    Picks, per dataset, examples with a non-empty rationale (and for HateXplain one without),
    short enough to read. Never raises: missing or malformed data just gives no examples.
    """
    try:
        root = resolve_data_root(data_dir)
    except EraserDataError:
        return []
    out: list[HumanExample] = []
    for dataset, limit, max_tokens in (("hatexplain", 120, 60), ("movies", 30, 900)):
        try:
            ds = load_dataset(dataset, "test", root, limit=limit)
        except Exception as e:  # no such folder, malformed files: hide this dataset
            log.info("no %s examples: %s", dataset, e)
            continue
        picked, empty_taken = [], False
        for ann in ds.annotations:
            doc = ds.documents[ann.docid]
            if len(doc) > max_tokens:
                continue
            gold = ds.gold_mask(ann)
            if not gold.any():
                if dataset != "hatexplain" or empty_taken:
                    continue
                empty_taken = True
            text = "\n".join(" ".join(s) for s in doc.sentences)
            picked.append(HumanExample(f"{dataset}:{ann.annotation_id}", dataset, ann.annotation_id, text,
                                       doc.tokens, [bool(x) for x in gold], ann.classification))
            if len(picked) >= per_dataset:
                break
        out += picked
    return out


@dataclass
class DatasetExample:
    """An example of your own dataset (``python -m app --dataset``): its text(s) and gold label."""

    id: str
    text: str
    text_pair: str | None
    label: str  # class name

    @property
    def title(self) -> str:
        head = f"{self.text} ‖ {self.text_pair}" if self.text_pair is not None else self.text
        return f"{self.label} · {head[:90]}{' …' if len(head) > 90 else ''} ({self.id})"


@dataclass
class DatasetExamples:
    """The examples of one split of your own dataset, as listed in the Explore tab."""

    name: str
    split: str
    examples: list[DatasetExample]

    @property
    def title(self) -> str:
        return f"Examples of {self.name} ({self.split} split)"


def dataset_examples(source: D.DatasetSpec, split: str, model_path: str | os.PathLike,
                     limit: int | None = None) -> DatasetExamples:
    """The (first ``limit``) examples of ``split`` of ``source`` for the model at ``model_path``: gold labels
    by its class names, a second text exactly when it is a pair model. Raises ``adapler.data.DataError``
    (the message names the file, row or column) or ``OSError`` (no model config)."""
    config = AutoConfig.from_pretrained(str(model_path))
    trained = getattr(config, "adapler_dataset", None) or {}
    if D.is_pair_model(config) and not source.text_pair_column:
        raise D.DataError(f"the model at {model_path} reads a pair of texts (trained with --text-column "
                          f"{trained.get('text_column')} --text-pair-column {trained.get('text_pair_column')}): "
                          f"name the second text of {source.title} with --text-pair-column")
    if source.text_pair_column and not D.is_pair_model(config):
        raise D.DataError(f"--text-pair-column {source.text_pair_column}: the model at {model_path} reads a "
                          "single text, not a pair")
    names = D.model_labels(config, source)
    rows = D.load_examples(source, split, labels=names, limit=limit)
    return DatasetExamples(source.title, split, [DatasetExample(r["id"], r["text"], r.get("text_pair"),
                                                                names[r["label"]]) for r in rows])


# --------------------------------------------------------------------------------------------------
# analysis


def _check_pair(bundle: ModelBundle, text: str, text_pair: str | None) -> None:
    """A pair model needs its second text; a single-text model takes none."""
    if text is None or not str(text).strip():
        return  # no text at all: analyze_text says so
    if bundle.pair and text_pair is None:
        trained = getattr(bundle.model.config, "adapler_dataset", None) or {}
        raise UserError(f"This model reads a pair of texts (it was trained on {trained.get('text_column')!r} and "
                        f"{trained.get('text_pair_column')!r}): type the second text too (the box 'Second text "
                        "(pair model)', the API's text_pair).")
    if not bundle.pair and text_pair is not None:
        raise UserError("This model reads a single text, not a pair: leave the second text empty (pair models are "
                        "trained with --text-pair-column).")


def analyze(bundle: ModelBundle, text: str, threshold_scale: float = 1.0,
            human: HumanExample | None = None, slow_methods: bool = False, text_pair: str | None = None) -> Analysis:
    """:func:`eraser_eval.analysis.analyze_text` on the bundle's model, engine and baseline, one
    analysis per model at a time; input problems become :class:`UserError`. ``slow_methods``: also
    Integrated Gradients and occlusion. ``text_pair``: the second text, required by a pair model and
    refused by a single-text one (a blank one counts as none: the hidden box of a single-text model)."""
    text_pair = text_pair if text_pair is not None and str(text_pair).strip() else None
    _check_pair(bundle, text, text_pair)
    try:
        analysis = analyze_text(bundle.model, bundle.tokenizer, text, threshold_scale, human, text_pair=text_pair,
                                engine=bundle.engine, baseline=bundle.baseline, labels=bundle.labels,
                                model_path=str(bundle.path), lock=bundle.lock, slow_methods=bool(slow_methods))
    except InputError as e:
        raise UserError(str(e)) from None
    if not bundle.trained_adapler:
        analysis.notices.append("This model folder is a plain BERT classifier: its Contribution Predictors and "
                                "thresholds are untrained, so the pruning shown is not meaningful.")
    return analysis


def write_downloads(analysis: Analysis, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``analysis.json`` and ``analysis_words.csv`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pj, pc = folder / "adapler_analysis.json", folder / "adapler_analysis_words.csv"
    pj.write_text(json.dumps(analysis.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    pc.write_text(analysis.to_csv(), encoding="utf-8")
    return pj, pc


# --------------------------------------------------------------------------------------------------
# ERASER reports


def report_tasks(reports_dir: str | os.PathLike | None = None) -> list[str]:
    root = Path(reports_dir) if reports_dir else REPORTS_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.iterdir()))


def read_report(task: str, reports_dir: str | os.PathLike | None = None) -> dict:
    """The shipped report files of one task: markdown, summary table, FPR table, images, HTML, and the
    per-example records (``examples`` is None for a report made before they were written)."""
    root = Path(reports_dir) if reports_dir else REPORTS_DIR
    folder = (root / task).resolve()
    if root.resolve() not in folder.parents or not folder.is_dir():
        raise UserError(f"No shipped report for {task!r}.")
    out: dict[str, Any] = {"folder": folder, "markdown": None, "summary": None, "fpr": None, "examples": None,
                           "dataset": task, "model": None, "images": [], "files": []}
    if (folder / "report.md").is_file():
        out["markdown"] = (folder / "report.md").read_text(encoding="utf-8")
    if (folder / "metrics.csv").is_file():
        out["summary"] = pd.read_csv(folder / "metrics.csv")
    if (folder / "metrics.json").is_file():
        data = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        out["metrics_json"] = data
        out["dataset"] = data.get("dataset") or task
        out["model"] = (data.get("config") or {}).get("model")
    if (folder / EXAMPLES_JSONL).is_file():
        out["examples"] = read_examples_jsonl(folder / EXAMPLES_JSONL)
    if (folder / "fpr.csv").is_file():
        out["fpr"] = pd.read_csv(folder / "fpr.csv")
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in (".png", ".svg", ".jpg", ".jpeg", ".webp"):
            out["images"].append(p)
        elif p.is_file() and p.name in ("metrics.json", "metrics.csv", "fpr.csv", "report.md", "report.html",
                                        EXAMPLES_JSONL):
            out["files"].append(p)
    return out


def live_evaluation(bundle: ModelBundle, dataset: str, n: int, data_dir: str | os.PathLike | None,
                    progress=None):
    """``eraser_eval.evaluate`` on the first ``n`` test annotations (no files written)."""
    with bundle.lock:
        return evaluate(EvalConfig(dataset=dataset, split="test", model=bundle.model, tokenizer=bundle.tokenizer,
                                   data_dir=data_dir, methods=["adapler", "saliency", "attention", "random"],
                                   limit=int(n), batch_size=8, faithfulness="basic", show_progress=False),
                        progress=progress)
