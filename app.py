"""Hugging Face Space entry point (``app_file: app.py``): serves the explorer exactly like ``python -m app``.

On a Space, Gradio sets ``GRADIO_SERVER_NAME=0.0.0.0``; the launcher reads it. The app needs nothing from
the Hub (the models and their tokenizers are local folders), so it runs offline unless the Space's
variables say otherwise (e.g. ``HF_HUB_OFFLINE=0``). Flags of ``python -m app`` that have an environment
variable (``ADAPLER_MAX_MODELS``, ``ADAPLER_APP_THREADS``, ``ADAPLER_DATA_DIR``) are set the same way.
"""

import os
import sys

for _flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_flag, "1")

from app.__main__ import main  # noqa: E402  # the package app/ takes precedence over this file for "import app"

if __name__ == "__main__":
    sys.exit(main())
