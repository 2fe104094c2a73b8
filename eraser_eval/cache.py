"""The engine's cache of model outputs: one table per pass, least-recently-used entries evicted
beyond ``max_entries`` per table, optionally pickled per (model fingerprint, pass) on disk."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["Cache", "LRUTable", "content_key", "window_key"]

DEFAULT_MAX_ENTRIES = 100_000


class LRUTable(OrderedDict):
    """A dict whose ``table[key]`` reads mark the entry as recently used."""

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def trim(self, max_entries: int | None) -> None:
        while max_entries is not None and len(self) > max_entries:
            self.popitem(last=False)


class Cache:
    """Tables of model outputs keyed by input content.

    ``root``: folder of the pickled tables (None = memory only). ``max_entries``: per table, the
    least recently used entries beyond it are dropped when a pass ends (:meth:`flush`); None =
    unbounded. Entries added during one engine call stay until that call has read them back.
    """

    def __init__(self, root: Path | None = None, max_entries: int | None = DEFAULT_MAX_ENTRIES):
        self.root = root
        self.max_entries = max_entries
        self.tables: dict[str, LRUTable] = {}
        self.dirty: set[str] = set()

    @property
    def mem(self) -> dict[str, LRUTable]:
        """The tables in memory (name -> table); ``cache.mem.clear()`` forgets them (see :meth:`clear`)."""
        return self.tables

    def __len__(self) -> int:
        """Entries over all tables."""
        return sum(len(t) for t in self.tables.values())

    def table(self, name: str) -> LRUTable:
        if name not in self.tables:
            data = {}
            if self.root is not None and (self.root / f"{name}.pkl").is_file():
                try:
                    with open(self.root / f"{name}.pkl", "rb") as fh:
                        data = pickle.load(fh)
                except (pickle.UnpicklingError, EOFError, OSError, AttributeError, ImportError, ValueError):
                    # a truncated or foreign cache file: recompute
                    data = {}
            self.tables[name] = LRUTable(data)
        return self.tables[name]

    def mark(self, name: str) -> None:
        self.dirty.add(name)

    def clear(self) -> None:
        """Forget every table in memory (files on disk stay)."""
        self.tables.clear()
        self.dirty.clear()

    def flush(self) -> None:
        """Apply the size bound, then write the changed tables (when there is a folder)."""
        for table in self.tables.values():
            table.trim(self.max_entries)
        if self.root is None:
            self.dirty.clear()
            return
        self.root.mkdir(parents=True, exist_ok=True)
        for name in sorted(self.dirty & set(self.tables)):
            tmp = self.root / f"{name}.pkl.tmp"
            with open(tmp, "wb") as fh:
                pickle.dump(dict(self.tables[name]), fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.root / f"{name}.pkl")
        self.dirty.clear()


def content_key(ids: np.ndarray | Sequence[int], query: Sequence[int] | None) -> str:
    """Key of one document input (its piece ids and query ids)."""
    h = hashlib.sha1(np.asarray(ids, dtype=np.int64).tobytes())
    h.update(b"|")
    h.update(np.asarray(query or [], dtype=np.int64).tobytes())
    return h.hexdigest()


def window_key(w) -> str:
    """Content key of one model input window (piece ids and segment ids)."""
    h = hashlib.sha1(np.asarray(w.input_ids, dtype=np.int64).tobytes())
    h.update(b"|")
    h.update(np.asarray(w.token_type_ids, dtype=np.int8).tobytes())
    return h.hexdigest()
