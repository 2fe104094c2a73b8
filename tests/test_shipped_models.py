"""The shipped checkpoints load in one call and reproduce their recorded accuracy on a fixed slice."""

import json

import pytest
import torch

from adapler import AdapLeRForSequenceClassification
from adapler.evaluation import evaluate_model_dir
from conftest import REPO, require

TASKS = ("sst2", "hatexplain", "movies")


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_shipped_model_reproduces_its_card(task, data_dir):
    model_dir = require(REPO / "assets" / "models" / task / "config.json", f"shipped {task} model").parent
    check = json.loads((model_dir / "slice_check.json").read_text())
    size = sum(f.stat().st_size for f in model_dir.iterdir())
    assert size <= 50e6, f"{task} model is {size / 1e6:.1f} MB"
    model = AdapLeRForSequenceClassification.from_pretrained(model_dir)
    assert model.dtype == torch.float32 and model.config.model_type == "adapler"
    report = evaluate_model_dir(model_dir, task, check["split"], data_dir, check["limit"])
    assert report["accuracy"] == pytest.approx(check["accuracy"], abs=1e-9)
    assert report["speedup_corrected"] == pytest.approx(check["speedup_corrected"], rel=1e-3)
    assert report["speedup_corrected"] > 1.0  # it really prunes
    card = (model_dir / "README.md").read_text()
    assert "python -m adapler" in card and "accuracy" in card
