"""Write a folder that is a complete Hugging Face Space repository of the rationale explorer.

    python scripts/build_space.py OUT_DIR [--models sst2,hatexplain,movies]

OUT_DIR gets: ``README.md`` (the Space's front matter: sdk gradio at the installed Gradio's version,
``app_file: app.py``), ``app.py`` (the entry point), the packages ``adapler/``, ``eraser_eval/`` and
``app/`` as source (the app finds its models next to the package, in ``assets/``), the chosen shipped
models and their ERASER reports, ``requirements.txt`` (the project's pinned runtime dependencies, torch
from the CPU wheel index) and a ``.gitattributes`` whose Git LFS patterns cover every file over 10 MB and
every binary file (the Hub rejects both in a plain git push). Deploy it with the commands in README.md
("Deploy your own Space"). Reads only files of this checkout; needs no install of the project.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("adapler", "eraser_eval", "app")
LFS_LIMIT = 10 * 1024 * 1024  # the Hub's limit for a file in a plain git push
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"  # CPU wheels: a Space's CPU hardware needs no CUDA build
# binary formats of models, data and media: always through LFS (the Hub refuses binary files in plain git)
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.onnx", "*.h5", "*.msgpack", "*.pkl",
                "*.pickle", "*.npy", "*.npz", "*.parquet", "*.arrow", "*.zip", "*.gz", "*.tar", "*.tgz", "*.xz",
                "*.zst", "*.7z", "*.png", "*.jpg", "*.jpeg", "*.gif", "*.webp", "*.pdf")
LFS_ATTRS = "filter=lfs diff=lfs merge=lfs -text"


class BuildError(Exception):
    """A problem with the arguments or the checkout; the message is shown as it is."""


def shipped_models() -> list[str]:
    root = REPO / "assets" / "models"
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []


def front_matter() -> dict:
    """The Space metadata of the repository's README, at the installed Gradio's version."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise BuildError("README.md has no front matter (the Space's metadata) to start from")
    meta = yaml.safe_load(text[4:text.index("\n---", 4)])
    meta.update(sdk="gradio", sdk_version=importlib.metadata.version("gradio"), app_file="app.py")
    return meta


def requirements() -> list[str]:
    """The runtime dependencies (pyproject: core and the app extra) at the pins of requirements.txt."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = {}
    for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            pins[canonicalize_name(Requirement(line).name)] = line
    out: dict[str, str] = {}
    for spec in project["dependencies"] + project["optional-dependencies"]["app"]:
        name = canonicalize_name(Requirement(spec).name)
        out.setdefault(name, pins.get(name, spec))
    gradio = importlib.metadata.version("gradio")
    if not Requirement(out["gradio"]).specifier.contains(gradio):
        raise BuildError(f"the installed Gradio {gradio} (the Space's sdk_version) is not the project's {out['gradio']}; "
                         "install the pinned requirements first (pip install -r requirements.txt)")
    return list(out.values())


def needs_lfs(path: Path) -> bool:
    """Over the Hub's 10 MB, or binary (a NUL byte in the first 8000 bytes, git's own test)."""
    if path.stat().st_size > LFS_LIMIT:
        return True
    with open(path, "rb") as fh:
        return b"\0" in fh.read(8000)


def gitattributes(out: Path) -> str:
    """LFS patterns for the binary formats, plus the exact path of any other file that needs LFS."""
    lines = ["# Git LFS: the Hugging Face Hub refuses files over 10 MB and binary files in a plain git push",
             *(f"{p} {LFS_ATTRS}" for p in LFS_PATTERNS)]
    for f in sorted(p for p in out.rglob("*") if p.is_file() and ".git" not in p.relative_to(out).parts):
        # patterns without a slash match the file name in any folder, as in git
        if needs_lfs(f) and not any(fnmatch.fnmatchcase(f.name, p) for p in LFS_PATTERNS):
            lines.append(f"/{f.relative_to(out).as_posix()} {LFS_ATTRS}")
    return "\n".join(lines) + "\n"


def readme(meta: dict, models: list[str]) -> str:
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout, or no git
        commit = ""
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"""---
{head}---

# AdapLeR rationale explorer

Type a sentence and see, layer by layer, which word pieces an AdapLeR BERT classifier keeps and which it
drops, how that compares with gradient saliency, attention and human rationales, and what the dropping
saves in compute.

Models in this Space: {", ".join(f"`{m}`" for m in models)} (`assets/models/`, each with its model card).
Built by `scripts/build_space.py` from adapler {version}{f" (commit {commit})" if commit else ""}.

Settings (the Space's variables): `ADAPLER_MAX_MODELS` (models kept loaded at once, default 3),
`ADAPLER_APP_THREADS` (torch threads, default 1), `ADAPLER_DATA_DIR` (an ERASER data folder for dataset
examples with human rationales and the live evaluation). The app runs offline; `HF_HUB_OFFLINE=0` lets it
reach the Hub. Visitors cannot load model folders by path.

Run it locally: `pip install -r requirements.txt && python app.py`.
"""


def reports_of(models) -> list[Path]:
    """Shipped report folders made with one of ``models`` (``config.model`` of their metrics.json)."""
    wanted = {f"assets/models/{m}" for m in models}
    found = []
    for metrics in sorted((REPO / "assets" / "reports").glob("*/metrics.json")):
        model = (json.loads(metrics.read_text(encoding="utf-8")).get("config") or {}).get("model")
        if model in wanted:
            found.append(metrics.parent)
    return found


def build(out: Path, models: list[str]) -> Path:
    available = shipped_models()
    unknown = [m for m in models if m not in available]
    if unknown or not models:
        raise BuildError(f"unknown model(s) {', '.join(unknown) or '(none given)'}; shipped: {', '.join(available) or 'none'}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BuildError(f"{out} exists and is not empty (the bundle is written into a new folder)")
    out.mkdir(parents=True, exist_ok=True)
    caches = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, out / pkg, ignore=caches)
    shutil.copy2(REPO / "app.py", out / "app.py")
    assets = REPO / "assets"
    (out / "assets").mkdir()
    shutil.copy2(assets / "examples.json", out / "assets" / "examples.json")
    for m in models:
        shutil.copytree(assets / "models" / m, out / "assets" / "models" / m, ignore=caches)
    for report in reports_of(models):  # the ERASER reports of those models (the report tab)
        shutil.copytree(report, out / "assets" / "reports" / report.name, ignore=caches)
    (out / "requirements.txt").write_text(
        "# The explorer's runtime dependencies at the pins it is tested with (scripts/build_space.py)\n"
        f"--extra-index-url {TORCH_CPU_INDEX}\n" + "\n".join(requirements()) + "\n", encoding="utf-8")
    (out / "README.md").write_text(readme(front_matter(), models), encoding="utf-8")
    (out / ".gitattributes").write_text(gitattributes(out), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="new (or empty) folder to write the Space repository into")
    parser.add_argument("--models", default=",".join(shipped_models()),
                        help="comma-separated shipped models (assets/models/<name>); default: all of them")
    args = parser.parse_args(argv)
    try:
        out = build(args.out_dir, [m.strip() for m in args.models.split(",") if m.strip()])
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = [p for p in out.rglob("*") if p.is_file()]
    print(f"wrote {out}: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
