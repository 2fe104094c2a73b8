"""The explorer left open to the public: a model folder typed by a visitor is loaded only when the
server allows it (``--allow-local-paths``), and the loaded models are bounded (least recently used out).

Tiny random AdapLeR models; two in-process servers (paths off, paths on) on random free ports.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch

from adapler import AdapLeRForSequenceClassification
from conftest import free_port, tiny_config

REPO = Path(__file__).resolve().parents[1]
LABELS = {0: "negative", 1: "positive"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, base_tokenizer) -> dict[str, Path]:
    """Three tiny 2-layer AdapLeR folders (a: the server's --model, b, c: typed by visitors) and an empty
    models folder (no shipped model in the picker)."""
    base = tmp_path_factory.mktemp("safety")
    out = {"empty": base / "no_models"}
    out["empty"].mkdir()
    for seed, name in enumerate("abc"):
        torch.manual_seed(seed)
        cfg = tiny_config(num_hidden_layers=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
        AdapLeRForSequenceClassification(cfg).save_pretrained(base / name)
        base_tokenizer.save_pretrained(base / name)
        out[name] = base / name
    return out


@pytest.fixture(scope="module")
def clients(folders):
    """{False: client of a server without --allow-local-paths, True: one with it}."""
    # here, not at the top: Gradio and its client load only for the tests that use the app
    from gradio_client import Client

    from app import build_demo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    demos, out = [], {}
    try:
        for allow in (False, True):
            demo = build_demo(folders["a"], models_dir=folders["empty"], allow_local_paths=allow)
            port = free_port()
            demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
            demos.append(demo)
            out[allow] = (Client(f"http://127.0.0.1:{port}/", verbose=False), demo.app_state)
        yield out
    finally:
        for demo in demos:
            demo.close()
        torch.set_num_threads(threads)


def loaded(path: Path) -> bool:
    # here, not at the top: the app (torch, transformers) loads only for the tests that use it
    from app.analysis import MODELS

    return path.resolve() in {p.resolve() for p in MODELS.loaded()}


def test_typed_path_refused_without_flag(clients, folders):
    # here, not at the top: Gradio's client loads only for the tests that use it
    from gradio_client.exceptions import AppError

    from app import ui

    client, state = clients[False]
    typed = str(folders["b"])
    # the picker offers no "Local path…": Gradio itself refuses the choice
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict(ui.LOCAL_CHOICE, typed, "hello there", 1.0, api_name="/analyze")
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict(ui.LOCAL_CHOICE, typed, "hatexplain", 2, api_name="/live_evaluation")
    raw = client.predict("hello there", 1.0, typed, "", api_name="/analyze_json")
    assert "off on this server" in raw["error"] and "--allow-local-paths" in raw["error"]
    # the handlers behind the page say the same (a folder never reaches the loader)
    status = ui.run_analysis(state, ui.LOCAL_CHOICE, typed, "hello there", 1.0, None)[0]
    assert "off on this server" in status
    assert not loaded(folders["b"])
    # the server's own --model still answers
    ok = client.predict("hello there", 1.0, "", "", api_name="/analyze_json")
    assert "error" not in ok and ok["prediction"]["label"] in LABELS.values()
    assert Path(ok["model"]).resolve() == folders["a"].resolve()


def test_typed_path_loads_with_flag(clients, folders):
    # here, not at the top: Gradio loads only for the tests that use the app
    from app import ui

    client, _ = clients[True]
    typed = str(folders["c"])
    out = client.predict(ui.LOCAL_CHOICE, typed, "hello there", 1.0, api_name="/analyze")
    assert out[0] == "", out[0]
    assert {c["label"] for c in out[1]["confidences"]} == set(LABELS.values())
    raw = client.predict("hello there", 1.0, typed, "", api_name="/analyze_json")
    assert Path(raw["model"]).resolve() == folders["c"].resolve()
    assert loaded(folders["c"])
    missing = client.predict(ui.LOCAL_CHOICE, str(folders["c"] / "nope"), "hello there", 1.0, api_name="/analyze")
    assert "No model at" in missing[0]


def test_model_cache_evicts_least_recently_used(folders):
    # here, not at the top: the app (torch, transformers) loads only for the tests that use it
    from app.analysis import ModelCache

    cache = ModelCache(max_models=2)
    a, b = cache.get(folders["a"]), cache.get(folders["b"])
    assert cache.get(folders["a"]) is a  # a is now the most recently used
    freed = weakref.ref(b.model)
    del b
    c = cache.get(folders["c"])  # one more than the bound: b, the least recently used, goes
    assert cache.loaded() == [folders["a"], folders["c"]]
    gc.collect()
    assert freed() is None, "an evicted model must not stay in memory"
    b2 = cache.get(folders["b"])  # loaded again; now a is the oldest and goes
    assert cache.loaded() == [folders["c"], folders["b"]]
    assert cache.get(folders["c"]) is c and b2.path == folders["b"]
    with pytest.raises(ValueError):
        ModelCache(max_models=0)


def test_cli_rejects_bad_max_models():
    r = subprocess.run([sys.executable, "-m", "app", "--max-models", "0"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--max-models" in r.stderr
