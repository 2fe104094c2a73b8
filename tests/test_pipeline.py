"""The four commands end to end on a few dozen real examples with a tiny model, and resume."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, BertForSequenceClassification

from adapler import AdapLeRForSequenceClassification, training
from adapler import data as D
from adapler.__main__ import main
from adapler.losses import HARD_SHARPNESS


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_bert_dir, data_dir):
    out = tmp_path_factory.mktemp("pipeline")
    common = ["--task", "sst2", "--data-dir", str(data_dir)]
    assert main(["finetune", *common, "--base-model", str(tiny_bert_dir), "--output-dir", str(out / "ft"),
                 "--limit", "48", "--eval-limit", "24", "--epochs", "2", "--batch-size", "16"]) == 0
    assert main(["saliency", *common, "--model", str(out / "ft"), "--output", str(out / "sal.safetensors"),
                 "--limit", "48"]) == 0
    train = ["train", *common, "--init-model", str(out / "ft"), "--saliency", str(out / "sal.safetensors"),
             "--limit", "48", "--eval-limit", "24", "--epochs", "2", "--batch-size", "16", "--seed", "7"]
    assert main([*train, "--output-dir", str(out / "adapler")]) == 0
    assert main(["evaluate", *common, "--model", str(out / "adapler"), "--split", "val", "--limit", "24",
                 "--timing-examples", "8", "--sweep", "0.5,2", "--json", str(out / "eval.json")]) == 0
    return out, train


def test_finetune_writes_model_and_log(pipeline):
    out, _ = pipeline
    log = json.loads((out / "ft" / "finetune_log.json").read_text())
    assert [r["epoch"] for r in log["history"]] == [1, 2]
    assert (out / "ft" / "model.safetensors").exists() and (out / "ft" / "tokenizer.json").exists()


def test_saliency_keyed_by_id(pipeline, data_dir):
    out, _ = pipeline
    table = load_file(out / "sal.safetensors")
    examples = D.load_examples("sst2", "train", data_dir, limit=48)
    assert set(table) == {f"{ex['id']}#0" for ex in examples}
    assert all((row >= 0).all() and row.sum() > 0 for row in table.values())


def test_saliency_bf16_ranks_tokens_like_fp32(pipeline, data_dir, tmp_path):
    """``--bf16`` really autocasts (the scores differ) and keeps the token ranking of the fp32 scores."""
    out, _ = pipeline
    files = {}
    for flag in ("--bf16", "--no-bf16"):
        files[flag] = tmp_path / f"{flag}.safetensors"
        assert main(["saliency", "--task", "sst2", "--data-dir", str(data_dir), "--model", str(out / "ft"),
                     "--output", str(files[flag]), "--limit", "16", flag]) == 0
    half, full = load_file(files["--bf16"]), load_file(files["--no-bf16"])
    assert half.keys() == full.keys() and all(row.dtype == torch.float32 for row in half.values())
    assert any(not torch.equal(half[k], full[k]) for k in full)
    for key in full:
        ranks = [row.argsort().argsort().float() for row in (half[key], full[key])]
        assert torch.corrcoef(torch.stack(ranks))[0, 1] > 0.9, key  # Spearman's rho of the two rows


def test_train_log_and_selection(pipeline):
    out, _ = pipeline
    log = json.loads((out / "adapler" / "train_log.json").read_text())
    assert len(log["history"]) == 2 and log["selected_epoch"] in (1, 2)
    for record in log["history"]:
        assert {"val_accuracy", "val_speedup", "val_speedup_parity", "eta"} <= set(record)
        assert all(0.01 <= e <= 1.0 for e in record["eta"])
    model = AdapLeRForSequenceClassification.from_pretrained(out / "adapler")
    assert model.config.model_type == "adapler"


def test_every_epoch_folder_is_a_model_folder(pipeline, data_dir):
    """Per-epoch folders hold the tokenizer too: a user can evaluate or calibrate any epoch as it is."""
    out, _ = pipeline
    for folder in (out / "ft" / "run" / "epoch-1", out / "adapler" / "run" / "epoch-1"):
        assert AutoTokenizer.from_pretrained(folder)("a fine film")["input_ids"][0] == 101  # [CLS]
    assert main(["evaluate", "--task", "sst2", "--data-dir", str(data_dir), "--split", "val", "--limit", "8",
                 "--model", str(out / "adapler" / "run" / "epoch-1"), "--timing-examples", "0",
                 "--no-attention-baseline"]) == 0


def test_evaluate_report(pipeline):
    out, _ = pipeline
    report = json.loads((out / "eval.json").read_text())
    a = report["adapler"]
    assert a["examples"] == 24 and 0 <= a["accuracy"] <= 1
    assert len(a["mean_tokens_per_layer"]) == 2 and a["speedup_corrected"] > 0 and a["speedup_parity"] > 0
    assert [w["batch_size"] for w in a["wall_clock"]] == [1, 32]
    assert "accuracy" in report["baseline"] and "speedup_corrected" in report["attention_topk"]
    low, high = report["threshold_sweep"]
    assert low["threshold_scale"] == 0.5 and high["speedup_corrected"] >= low["speedup_corrected"]


def test_calibrate_scales_thresholds(pipeline, data_dir, tmp_path):
    out, _ = pipeline
    assert main(["calibrate", "--task", "sst2", "--data-dir", str(data_dir), "--model", str(out / "adapler"),
                 "--baseline", str(out / "ft"), "--limit", "24", "--scales", "0.5,1,3",
                 "--output-dir", str(tmp_path / "cal")]) == 0
    cal = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    scale = cal["chosen"]["threshold_scale"]
    assert [p["threshold_scale"] for p in cal["sweep"]] == [0.5, 1.0, 3.0]
    if cal["constraint_met"]:
        ok = [p for p in cal["sweep"] if p["accuracy"] >= cal["baseline_accuracy"] - 0.01]
        assert cal["chosen"]["speedup_corrected"] == max(p["speedup_corrected"] for p in ok)
    before = AdapLeRForSequenceClassification.from_pretrained(out / "adapler").eta
    after = AdapLeRForSequenceClassification.from_pretrained(tmp_path / "cal").eta
    assert torch.allclose(after, before * scale)


def test_continued_run_selects_against_the_given_baseline(pipeline, data_dir, tmp_path):
    """Continuing from an AdapLeR run, ``--baseline`` sets the selection reference. A baseline that always
    answers class 0 must score exactly the share of class 0 among the validation examples."""
    out, _ = pipeline
    constant = BertForSequenceClassification.from_pretrained(out / "ft")
    with torch.no_grad():
        constant.classifier.weight.zero_()
        constant.classifier.bias.copy_(torch.tensor([5.0, -5.0]))
    constant.save_pretrained(tmp_path / "always0")
    AutoTokenizer.from_pretrained(out / "ft").save_pretrained(tmp_path / "always0")
    assert main(["train", "--task", "sst2", "--data-dir", str(data_dir), "--init-model", str(out / "adapler"),
                 "--saliency", str(out / "sal.safetensors"), "--baseline", str(tmp_path / "always0"),
                 "--limit", "16", "--eval-limit", "24", "--epochs", "1", "--batch-size", "16",
                 "--output-dir", str(tmp_path / "more")]) == 0
    log = json.loads((tmp_path / "more" / "train_log.json").read_text())
    labels = [ex["label"] for ex in D.load_examples("sst2", "val", data_dir, limit=24)]
    assert log["baseline_val_accuracy"] == pytest.approx(labels.count(0) / 24, abs=1e-5)  # logged to 5 digits


def test_hard_continuation_keeps_frozen_thresholds(pipeline, data_dir, tmp_path, monkeypatch):
    """``--anneal hard --eta-lr 0`` continues an AdapLeR model at the end of the schedule: every step runs
    at the hard sharpness, the thresholds stay where they were and the encoder still learns."""
    out, _ = pipeline
    seen, real = [], training.adapler_backward
    monkeypatch.setattr(training, "adapler_backward",
                        lambda *a, **k: seen.append(a[3]) or real(*a, **k))
    assert main(["train", "--task", "sst2", "--data-dir", str(data_dir), "--init-model", str(out / "adapler"),
                 "--saliency", str(out / "sal.safetensors"), "--limit", "32", "--eval-limit", "8",
                 "--epochs", "1", "--batch-size", "16", "--anneal", "hard", "--eta-lr", "0",
                 "--output-dir", str(tmp_path / "hard")]) == 0
    assert seen == [HARD_SHARPNESS, HARD_SHARPNESS]  # 32 examples / batch 16
    before, after = load_file(out / "adapler" / "model.safetensors"), load_file(tmp_path / "hard" / "model.safetensors")
    assert torch.equal(before["eta"], after["eta"])
    assert not torch.allclose(before["cps.0.dense.weight"].float(), after["cps.0.dense.weight"].float())


def test_distillation_follows_the_teachers_logits_computed_once(pipeline, data_dir, tmp_path, monkeypatch):
    """``--distill`` with ``--eta-grad local``: the unpruned teacher's logits are computed once, kept in the
    run folder (a resumed run reads them back) and reach every training step with their example."""
    out, _ = pipeline
    seen, real = [], training.adapler_backward
    monkeypatch.setattr(training, "adapler_backward",
                        lambda *a, **k: seen.append((a[2]["teacher_logits"].clone(), k)) or real(*a, **k))
    run = ["train", "--task", "sst2", "--data-dir", str(data_dir), "--init-model", str(out / "adapler"),
           "--saliency", str(out / "sal.safetensors"), "--teacher", str(out / "ft"), "--distill", "0.5",
           "--eta-grad", "local", "--limit", "32", "--eval-limit", "8", "--epochs", "1", "--batch-size", "16",
           "--output-dir", str(tmp_path / "kd")]
    assert main(run) == 0
    assert len(seen) == 2 and all(k["distill"] == 0.5 and k["eta_grad"] == "local" for _, k in seen)
    cached = load_file(tmp_path / "kd" / "run" / "teacher_logits.safetensors")
    features = D.load_examples("sst2", "train", data_dir, limit=32)
    assert len(cached) == 32
    teacher = BertForSequenceClassification.from_pretrained(out / "ft").eval()
    tok = AutoTokenizer.from_pretrained(out / "ft")
    with torch.no_grad():
        first = teacher(**tok(features[0]["text"], return_tensors="pt")).logits[0]
    assert any(torch.allclose(row, first, atol=1e-4) for row in cached.values())
    assert any(torch.allclose(row, first, atol=1e-4) for logits, _ in seen for row in logits)
    bad = dict(cached, **{k: v + 100.0 for k, v in cached.items()})  # a resumed run must read the cache
    save_file(bad, str(tmp_path / "kd" / "run" / "teacher_logits.safetensors"), metadata={"teacher": str(out / "ft")})
    seen.clear()
    assert main([*run[:-1], str(tmp_path / "kd2"), "--run-dir", str(tmp_path / "kd" / "run"), "--epochs", "2"]) == 0
    assert seen and all(logits.abs().min() > 50 for logits, _ in seen)
    other = [a if a != str(out / "ft") else str(out / "adapler") for a in run]  # another teacher, same run folder
    assert main([*other[:-1], str(tmp_path / "kd3"), "--run-dir", str(tmp_path / "kd" / "run"), "--epochs", "3"]) == 2


def test_resume_gives_the_same_weights(pipeline, tmp_path):
    out, train = pipeline
    interrupted = [*train, "--output-dir", str(tmp_path / "b"), "--run-dir", str(tmp_path / "b-run")]
    assert main([*interrupted, "--stop-after-steps", "3"]) == 0  # 3 of 6 steps, then "killed"
    assert not (tmp_path / "b" / "train_log.json").exists()
    assert main(interrupted) == 0  # same command again resumes from the checkpoint
    straight = load_file(out / "adapler" / "model.safetensors")
    resumed = load_file(tmp_path / "b" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.allclose(straight[key], resumed[key], atol=1e-6), key


def test_missing_data_folder_is_a_clear_error(tmp_path, capsys):
    code = main(["finetune", "--task", "sst2", "--data-dir", str(tmp_path / "nope"), "--output-dir", str(tmp_path)])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_malformed_file_names_file_and_line(tmp_path):
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.tsv").write_text("sentence\tlabel\ngood film\t1\nbroken line\n")
    with pytest.raises(D.DataError, match=r"train.tsv, row 2: no label"):
        D.load_examples("sst2", "train", tmp_path)


def test_local_loaders_read_real_data(data_dir):
    assert len(D.load_examples("sst2", "val", data_dir)) == 872
    hx = D.load_examples("hatexplain", "test", data_dir)
    assert len(hx) == 1924 and {e["label"] for e in hx} == {0, 1, 2}
    mv = D.load_examples("movies", "test", data_dir)
    assert len(mv) == 199 and mv[0]["id"].endswith(".txt")
    first = D.load_examples("movies", "val", data_dir, limit=10)
    assert {e["label"] for e in first} == {0, 1}  # classes interleaved, so a --limit keeps both


def test_split_slices_pick_rows_like_datasets(data_dir):
    full = D.load_examples("sst2", "train", data_dir)
    tail = D.load_examples("sst2", "train[67000:]", data_dir)
    assert [e["id"] for e in tail] == [e["id"] for e in full[67000:]] and len(tail) == len(full) - 67000
    assert [e["id"] for e in D.load_examples("sst2", "validation[10:20]", data_dir, limit=3)] == \
        [e["id"] for e in D.load_examples("sst2", "val", data_dir)[10:13]]
    with pytest.raises(D.DataError, match="unknown split"):
        D.load_examples("sst2", "train[a:b]", data_dir)


def test_windows_cover_long_documents(base_tokenizer):
    ex = [{"id": "d", "text": "word " * 1200, "label": 1}]
    feats = D.encode(ex, base_tokenizer, 512, windows=True)
    assert [len(f["input_ids"]) for f in feats] == [512, 512, 1200 - 2 * 510 + 2]
    assert sum(len(f["input_ids"]) - 2 for f in feats) == 1200
