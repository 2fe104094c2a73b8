"""Your own data and model: the README's two command sequences end to end (a CSV of single texts, a
JSONL pair task; their explorer commands up to the server's start), a classifier made here as the start
of `train`, pairs in encode/saliency, and every bad input (exit status 2, the file and row named,
nothing written)."""

import json
import re
import shlex
from types import SimpleNamespace

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, BertConfig, BertForSequenceClassification

from adapler import data as D
from adapler.__main__ import main
from adapler.saliency import gradient_x_input
from conftest import REPO

TICKETS = {"billing": ["my invoice is wrong", "I was charged twice", "refund my payment please",
                       "the bill shows an extra fee"],
           "bug": ["the app crashes on start", "login button does nothing", "error when saving a file",
                   "the page freezes after upload"],
           "praise": ["great support thank you", "love the new design", "fast and friendly help",
                      "works perfectly now"]}
NLI = [("a man plays a guitar", "a person makes music", "entailment"),
       ("a man plays a guitar", "nobody is playing anything", "contradiction"),
       ("two dogs run in a park", "animals are outside", "entailment"),
       ("two dogs run in a park", "the dogs are asleep indoors", "contradiction"),
       ("a woman reads a book", "someone is reading", "entailment"),
       ("a woman reads a book", "the woman is swimming", "contradiction")]
FAST = {"finetune": ["--epochs", "1", "--batch-size", "8"], "train": ["--epochs", "1", "--batch-size", "8"],
        "evaluate": ["--timing-examples", "4", "--no-attention-baseline"], "saliency": []}


def readme_commands() -> list[list[list[str]]]:
    """The bash blocks of README's "Your own data" section, each command as an argv list."""
    text = REPO.joinpath("README.md").read_text()
    section = text.split("## Your own data", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [[shlex.split(cmd) for cmd in block.replace("\\\n", " ").splitlines() if cmd.strip()] for block in blocks]


def readme_sequences(program: str = "adapler") -> list[list[list[str]]]:
    """The ``python -m PROGRAM`` commands of each block, as argv lists without ``python -m PROGRAM``."""
    return [[argv[3:] for argv in block if argv[:3] == ["python", "-m", program]] for block in readme_commands()]


def run_explorer(argv: list[str], monkeypatch) -> tuple[int, dict]:
    """``python -m app ARGV`` up to the server's start: its exit status and what it built the page with."""
    # the explorer (Gradio) only for the tests that start it
    from app import __main__ as app_main
    from app import ui

    built: dict = {}

    def build_demo(*args, **kwargs):
        built.update(kwargs, model=args[0])
        return SimpleNamespace(app_state=SimpleNamespace(default_choice="--model"), launch=lambda **kw: None)

    monkeypatch.setattr(ui, "build_demo", build_demo)
    return app_main.main([*argv, "--threads", "0"]), built


def write_tickets(path, rows=32):
    names = sorted(TICKETS)
    lines = ["text,label"]
    for i in range(rows):
        label = names[i % 3]
        lines.append(f'"{TICKETS[label][i // 3 % 4]} ({i})",{label}')
    path.write_text("\n".join(lines) + "\n")


def write_nli(folder, train=24, val=12):
    folder.mkdir()
    for name, n in (("train", train), ("validation", val)):
        rows = [{"premise": p, "hypothesis": f"{h} {i}", "label": y} for i in range(n)
                for p, h, y in [NLI[i % len(NLI)]]]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def tiny_classifier(path, base_tokenizer, labels=None, num_labels=3):
    """A tiny random BERT classifier with the real tokenizer; ``labels`` names its classes."""
    torch.manual_seed(0)
    names = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}} if labels else {}
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, num_labels=len(labels) if labels else num_labels, **names)
    BertForSequenceClassification(cfg).save_pretrained(path)
    base_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def readme_runs(tmp_path_factory, tiny_bert_dir):
    """Both README sequences, run in a folder holding the data they name (tiny base model, 1 epoch)."""
    work = tmp_path_factory.mktemp("own")
    write_tickets(work / "tickets.csv")
    write_nli(work / "nli")
    outputs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        for sequence in readme_sequences():
            for argv in sequence:
                extra = ["--base-model", str(tiny_bert_dir)] if argv[0] == "finetune" else []
                assert main([*argv, *extra, *FAST[argv[0]]]) == 0, argv
        outputs = [work / "runs" / "tickets", work / "runs" / "nli"]
    return outputs


def test_readme_has_both_sequences():
    seqs = readme_sequences()
    assert [[argv[0] for argv in seq] for seq in seqs] == [["finetune", "saliency", "train", "evaluate"]] * 2
    assert "--text-pair-column" in seqs[1][0] and seqs[0][0][:3] == ["finetune", "--dataset", "tickets.csv"]
    assert [len(seq) for seq in readme_sequences("app")] == [1, 1]  # then the explorer on the model
    assert all(argv[:3] in (["python", "-m", "adapler"], ["python", "-m", "app"])
               for block in readme_commands() for argv in block)


@pytest.mark.parametrize("which,labels,pair", [(0, ["billing", "bug", "praise"], None), (1, ["contradiction", "entailment"], "hypothesis")])
def test_readme_sequence_outputs(readme_runs, which, labels, pair):
    out = readme_runs[which]
    for model in ("ft", "adapler"):
        cfg = AutoConfig.from_pretrained(out / model)
        assert cfg.id2label == dict(enumerate(labels))  # sorted distinct string labels
        assert cfg.adapler_dataset["text_pair_column"] == pair and D.is_pair_model(cfg) == bool(pair)
    assert (out / "adapler" / "train_log.json").exists()
    report = json.loads((out / "eval.json").read_text())
    assert report["adapler"]["examples"] == (8 if which == 0 else 12)  # train[75%:] of 32 rows; 12 val rows
    assert 0 <= report["adapler"]["accuracy"] <= 1 and report["adapler"]["speedup_corrected"] > 0


@pytest.mark.parametrize("which,labels", [(0, ["billing", "bug", "praise"]), (1, ["contradiction", "entailment"])])
def test_readme_explorer_commands(readme_runs, monkeypatch, which, labels):
    """The explorer command of each sequence: the dataset's examples under the model's class names,
    and an analysis of one of them (a second text for the pair model) predicting one of those names."""
    from app import analysis as A  # the explorer's model handling only for this test

    (argv,) = readme_sequences("app")[which]
    monkeypatch.chdir(readme_runs[which].parent.parent)
    code, built = run_explorer(argv, monkeypatch)
    own = built["dataset_examples"]
    assert code == 0 and built["model"] == argv[argv.index("--model") + 1]
    assert len(own.examples) == (8 if which == 0 else 12) and {e.label for e in own.examples} == set(labels)
    assert all((e.text_pair is not None) == (which == 1) for e in own.examples)
    bundle = A.load_bundle(built["model"])
    ex = own.examples[0]
    analysis = A.analyze(bundle, ex.text, text_pair=ex.text_pair)
    assert analysis.labels == labels and analysis.predicted in labels and analysis.text_pair == ex.text_pair


def test_pair_saliency_covers_both_segments(readme_runs, base_tokenizer):
    out = readme_runs[1]
    table = load_file(out / "sal.safetensors")
    source = D.dataset_source(str(out.parent.parent / "nli"), text_column="premise", text_pair_column="hypothesis")
    feats = D.encode(D.load_examples(source, "train"), base_tokenizer, 128)
    assert set(table) == {f"{f['id']}#0" for f in feats}
    for f in feats[:5]:
        row, types = table[f"{f['id']}#0"], torch.tensor(f["token_type_ids"])
        assert len(row) == len(f["input_ids"]) and row[types == 1].sum() > 0 and row[types == 0].sum() > 0


def test_own_classifier_starts_train(tmp_path, base_tokenizer, capsys):
    """Skip finetune: a classifier made here (named classes) is the start of saliency and train."""
    write_tickets(tmp_path / "tickets.csv")
    model = tiny_classifier(tmp_path / "mine", base_tokenizer, ["praise", "bug", "billing"])  # not sorted
    data = ["--dataset", str(tmp_path / "tickets.csv"), "--train-split", "train[:24]", "--val-split", "train[24:]"]
    sal = str(tmp_path / "sal.safetensors")
    assert main(["saliency", *data[:2], "--split", "train[:24]", "--model", str(model), "--output", sal]) == 0
    assert main(["train", *data, "--init-model", str(model), "--saliency", sal, "--output-dir",
                 str(tmp_path / "adapler"), *FAST["train"]]) == 0
    assert AutoConfig.from_pretrained(tmp_path / "adapler").id2label == {0: "praise", 1: "bug", 2: "billing"}
    assert main(["calibrate", *data[:2], "--split", "train[24:]", "--model", str(tmp_path / "adapler"),
                 "--baseline", str(model), "--scales", "0.5,1", "--output-dir", str(tmp_path / "cal")]) == 0
    assert json.loads((tmp_path / "cal" / "calibration.json").read_text())["chosen"]["threshold_scale"] in (0.5, 1.0)
    # the model's class numbers are kept: "praise" rows are class 0 for this model
    examples = D.load_examples(D.dataset_source(str(tmp_path / "tickets.csv")), "train",
                               labels=D.label_names(AutoConfig.from_pretrained(model)))
    assert {e["label"] for e in examples if "great support" in e["text"]} == {0}
    assert "baseline_val_accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("labels,message", [(["NEG", "POS", "X"], "labels 'billing', 'bug', 'praise'.* are not classes"),
                                            (None, "the model has 2 classes, .* has 3 labels")])
def test_model_whose_labels_differ_is_refused(tmp_path, base_tokenizer, capsys, labels, message):
    write_tickets(tmp_path / "tickets.csv")
    model = tiny_classifier(tmp_path / "m", base_tokenizer, labels, num_labels=2)
    code = main(["saliency", "--dataset", str(tmp_path / "tickets.csv"), "--model", str(model),
                 "--output", str(tmp_path / "sal.safetensors")])
    assert code == 2 and re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "sal.safetensors").exists()


# ---------------------------------------------------------------- bad input

BAD = {  # name: (files, extra options, message regex)
    "missing column": ({"train.csv": "body,label\nhello,a\nbye,b\n"}, [], r"train.csv, row 1: no column 'text'"),
    "empty text": ({"train.csv": 'text,label\nhello,a\n"  ",b\n'}, [], r"train.csv, row 2: empty text"),
    "unknown label": ({"train.csv": "text,label\nhello,a\nbye,b\n", "validation.csv": "text,label\nhi,a\nyo,c\n"},
                      [], r"validation.csv, row 2: label 'c' is not in the label set"),
    "missing split": ({"train.csv": "text,label\nhello,a\nbye,b\n"}, [], r"data: no split 'val' \(available: train\)"),
    "invalid csv": ({"train.csv": 'text,label\nhello,a\n"x, y",b,c,d\n'}, [], r"train.csv: not a valid CSV.*line 3"),
    "invalid json": ({"train.jsonl": '{"text": "a", "label": "x"}\n{"text": "b", "label": \n'}, [],
                     r"train.jsonl:2: invalid JSON"),
    "long second text": ({"train.jsonl": json.dumps({"text": "a", "t2": "word " * 40, "label": "x"}) + "\n"},
                         ["--text-pair-column", "t2", "--max-length", "16"], r"example train-0-\w+: its second text has 40"),
    "task and dataset": ({"train.csv": "text,label\nhello,a\n"}, ["--task", "sst2"], r"exactly one of --task"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exit_2_nothing_written(tmp_path, tiny_bert_dir, capsys, case):
    files, extra, message = BAD[case]
    (tmp_path / "data").mkdir()
    for name, text in files.items():
        (tmp_path / "data" / name).write_text(text)
    out = tmp_path / "out"
    code = main(["finetune", "--dataset", str(tmp_path / "data"), *extra, "--base-model", str(tiny_bert_dir),
                 "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err), err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1 and "Traceback" not in err
    assert not out.exists()


# ---------------------------------------------------------------- library

def test_pair_encoding_and_windows(base_tokenizer):
    tok = base_tokenizer
    ex = {"id": "p", "text": "word " * 30, "text_pair": "short question here", "label": 1}
    b = tok("short question here", add_special_tokens=False)["input_ids"]
    (truncated,) = D.encode([ex], tok, 16)
    assert truncated["input_ids"] == tok("word " * 30, "short question here", truncation="only_first",
                                         max_length=16)["input_ids"]  # the tokenizer's own pair encoding
    assert truncated["token_type_ids"] == [0] * (16 - len(b) - 1) + [1] * (len(b) + 1)
    windows = D.encode([ex], tok, 16, windows=True)
    room = 16 - 3 - len(b)
    assert len(windows) == -(-30 // room) and all(f["input_ids"][-len(b) - 1:-1] == b for f in windows)
    assert sum(f["token_type_ids"].count(0) - 2 for f in windows) == 30  # every first-text piece once
    typed = D.encode([{"id": "typed", "text": "a", "text_pair": "b"}], tok, 16)  # the explorer's typed pair
    assert "label" not in typed[0] and typed[0]["token_type_ids"] == [0, 0, 0, 1, 1]
    with pytest.raises(D.DataError, match="second text has 40 word pieces"):
        D.encode([{**ex, "text_pair": "word " * 40}], tok, 16)


def test_ids_labels_and_slices(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label,key\nb text,10,k1\na text,2,k2\nc text,2,k3\nd text,10,k4\n")
    source = D.dataset_source(str(path))
    first = D.load_examples(source, "train")
    assert D.dataset_labels(source) == ("2", "10")  # numbers sorted as numbers
    assert [e["label"] for e in first] == [1, 0, 0, 1]
    assert first == D.load_examples(source, "train")  # ids are stable
    assert [e["id"] for e in D.load_examples(source, "train[50%:]")] == [e["id"] for e in first[2:]]
    path.write_text("text,label,key\nb text,10,k1\nA TEXT,2,k2\nc text,2,k3\nd text,10,k4\n")
    again = D.load_examples(source, "train")
    assert [a["id"] == b["id"] for a, b in zip(first, again)] == [True, False, True, True]  # hash of the text
    keyed = D.load_examples(D.dataset_source(str(path), id_column="key"), "train")
    assert [e["id"] for e in keyed] == ["k1", "k2", "k3", "k4"]


def test_classlabel_names_from_parquet(tmp_path):
    feats = datasets.Features({"sentence": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["zebra", "apple"])})
    datasets.Dataset.from_dict({"sentence": ["x y", "z"], "label": [1, 0]}, features=feats).to_parquet(
        str(tmp_path / "train.parquet"))
    source = D.dataset_source(str(tmp_path), text_column="sentence")
    assert D.dataset_labels(source) == ("zebra", "apple")  # ClassLabel order, not sorted
    assert [e["label"] for e in D.load_examples(source, "train")] == [1, 0]


def test_saliency_and_flops_take_token_types(tiny_model):
    """Segment ids change the embeddings (so saliency and CP scores), with identical lengths."""
    ids = torch.tensor([[101, 2000, 2001, 102, 2002, 2003, 102]])
    mask = torch.ones_like(ids)
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1]])
    single = gradient_x_input(tiny_model, ids, mask, torch.zeros_like(ids), targets=[0])
    pair = gradient_x_input(tiny_model, ids, mask, types, targets=[0])
    assert pair.shape == single.shape and not torch.allclose(pair, single)
    out = tiny_model(input_ids=ids, attention_mask=mask, token_type_ids=types, mode="masked")
    assert out.cp_scores.shape[-1] == 7 and out.layer_lengths.shape == (1, 3)


# ---------------------------------------------------------------- ERASER evaluation of any folder

def write_eraser_folder(path):
    """An ERASER-layout folder of its own: docs.jsonl, test.jsonl, labels 'bad'/'good', with queries."""
    path.mkdir()
    docs = {f"d{i}": f"the food was {'awful' if i % 2 else 'lovely'} today\nwe will {'never' if i % 2 else 'surely'} return"
            for i in range(6)}
    (path / "docs.jsonl").write_text("".join(json.dumps({"docid": d, "document": t}) + "\n" for d, t in docs.items()))
    anns = [{"annotation_id": d, "classification": "bad" if i % 2 else "good", "query": "was it good ?",
             "evidences": [[{"docid": d, "start_token": 3, "end_token": 4}]]} for i, d in enumerate(docs)]
    (path / "test.jsonl").write_text("".join(json.dumps(a) + "\n" for a in anns))
    return path


def test_eraser_eval_any_folder_with_label_map(tmp_path, base_tokenizer, capsys):
    from eraser_eval.__main__ import build_parser  # eraser_eval sits above adapler: only this test needs it
    from eraser_eval.__main__ import main as eraser_main
    from eraser_eval.data import dataset_spec

    folder = write_eraser_folder(tmp_path / "reviews")
    spec = dataset_spec(str(folder))
    assert spec.eraser.labels == ("bad", "good") and spec.eraser.has_query
    model = tiny_classifier(tmp_path / "m", base_tokenizer, ["neg", "pos"])
    run = ["--dataset", str(folder), "--split", "test", "--model", str(model), "--methods", "random",
           "--faithfulness", "none", "--no-fpr", "--quiet"]
    assert eraser_main([*run, "--out", str(tmp_path / "no-map")]) == 2  # neg/pos name no label of the folder
    assert "--label-map" in capsys.readouterr().err and not (tmp_path / "no-map" / "metrics.json").exists()
    (tmp_path / "map.json").write_text('{"neg": "bad", "pos": "good"}')
    assert eraser_main([*run, "--label-map", str(tmp_path / "map.json"), "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["config"]["class_labels"] == ["bad", "good"] and metrics["config"]["n_annotations"] == 6
    parsed = build_parser().parse_args([*run, "--label-map", "neg=bad, pos=good", "--out", "x"])
    assert parsed.label_map == {"neg": "bad", "pos": "good"}
    assert eraser_main([*run, "--label-map", "neg=awful", "--out", str(tmp_path / "x")]) == 2
    assert "not labels of reviews" in capsys.readouterr().err
