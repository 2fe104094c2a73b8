"""AdapLeR rationale explorer (Gradio): ``python -m app`` or ``from app import build_demo``.

``build_demo`` is imported lazily so that ``python -m app --help`` does not pay Gradio's import time.
"""

__all__ = ["build_demo"]


def __getattr__(name):
    if name == "build_demo":
        from .ui import build_demo  # lazy: Gradio's import time only when the UI is built

        return build_demo
    raise AttributeError(f"module 'app' has no attribute {name!r}")
