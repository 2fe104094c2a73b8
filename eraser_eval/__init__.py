"""ERASER-benchmark evaluation of AdapLeR, saliency and attention rationales, with false positive rate.

Python API::

    from eraser_eval import EvalConfig, evaluate
    res = evaluate(EvalConfig(dataset="movies", split="test", model="assets/models/movies",
                              methods=["adapler", "saliency", "attention", "random"], out_dir="reports/movies"))
    res.summary      # pandas DataFrame, one row per method
    res.fpr          # FPR per (method, layer), macro and micro
    res.metrics      # nested dict (ERASER metric names)

Command line: ``python -m eraser_eval --help``.
"""

from .align import Alignment, align, align_batch, align_text, make_windows
from .analysis import Analysis, analyze_text
from .data import DATASETS, EraserDataError, EraserDataset, load_dataset
from .engine import Engine
from .methods import METHODS, RationaleMethod, get_method
from .metrics import score_records
from .report import read_results_jsonl, write_report, write_results_jsonl
from .runner import EvalConfig, EvaluationResult, evaluate, load_model
from .types import DocInput, MethodOutput

__all__ = [
    "DATASETS",
    "METHODS",
    "Alignment",
    "Analysis",
    "DocInput",
    "Engine",
    "EraserDataError",
    "EvalConfig",
    "EraserDataset",
    "EvaluationResult",
    "MethodOutput",
    "RationaleMethod",
    "align",
    "align_batch",
    "align_text",
    "analyze_text",
    "evaluate",
    "get_method",
    "load_dataset",
    "load_model",
    "make_windows",
    "read_results_jsonl",
    "score_records",
    "write_report",
    "write_results_jsonl",
]
