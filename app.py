"""Hugging Face Space entry point (``app_file: app.py``): serves the explorer exactly like ``python -m app``.

On a Space, Gradio sets ``GRADIO_SERVER_NAME=0.0.0.0``; the launcher reads it.
"""

import sys

from app.__main__ import main  # the package app/ takes precedence over this file for "import app"

if __name__ == "__main__":
    sys.exit(main())
