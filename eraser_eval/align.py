"""ERASER document tokens <-> word pieces, and windows over long documents.

One alignment function for everything that maps word pieces to words (ERASER scoring, the
faithfulness re-tokenisation, the app's word highlighting):

* :func:`align` tokenises a list of words with the fast tokenizer (``is_split_into_words=True``, no
  special tokens) and records, via the encoding's ``word_ids``, the document token of every piece.
  Each word is tokenised on its own, so the pieces of a word never depend on its neighbours.
* **Aggregation rule** (:meth:`Alignment.to_words`): a document token's score is the **maximum** over
  its pieces (``reduce="max"``, default; ``"mean"``, ``"sum"`` and ``"first"`` exist for
  experiments), and a token is selected by a hard mask (:meth:`Alignment.mask_to_words`) if **any**
  of its pieces is. Pieces of one word that fall into different windows are aggregated the same way.
* **Lost tokens**: document tokens that produce no piece at all (e.g. a lone zero-width space or a
  control character, removed by the normaliser). They get score 0 and are never selected; they are
  counted (:attr:`Alignment.lost`) and excluded from FPR units. **Unknown tokens**: document tokens
  with at least one ``[UNK]`` piece (e.g. most emoji for BERT-uncased); they are scored normally and
  counted (:attr:`Alignment.unknown`).
* **Windows** (:func:`make_windows`): the document's pieces are cut with
  :func:`adapler.windows.split_windows` into consecutive, non-overlapping windows of
  ``max_length - 2`` pieces (``max_length - 3 - len(query)`` when a query takes segment B), each
  encoded ``[CLS] window [SEP]`` (``[CLS] window [SEP] query [SEP]``). Every piece is seen exactly
  once; nothing is truncated. Only document pieces are scored; the query is context.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from adapler.windows import split_windows

__all__ = [
    "Alignment",
    "Window",
    "align",
    "align_batch",
    "align_text",
    "make_windows",
    "pieces_to_words",
    "scatter_window_scores",
]


@dataclass
class Alignment:
    """Word pieces of a sequence of document tokens and the piece -> token map."""

    tokens: list[str]
    input_ids: np.ndarray  # (P,) piece ids, no special tokens
    piece_word: np.ndarray  # (P,) index of the document token of each piece
    word_start: np.ndarray  # (T+1,) pieces of token t are input_ids[word_start[t]:word_start[t+1]]
    unk_id: int | None = None
    pieces: list[str] | None = field(default=None, repr=False)  # piece strings, when asked for

    @property
    def num_pieces(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def pieces_per_word(self) -> np.ndarray:
        return np.diff(self.word_start)

    @property
    def lost(self) -> np.ndarray:
        """Indices of document tokens without any piece."""
        return np.flatnonzero(self.pieces_per_word == 0)

    @property
    def unknown(self) -> np.ndarray:
        """Indices of document tokens with at least one unknown ([UNK]) piece."""
        if self.unk_id is None or self.num_pieces == 0:
            return np.zeros(0, dtype=np.int64)
        return np.unique(self.piece_word[self.input_ids == self.unk_id])

    @property
    def scored(self) -> np.ndarray:
        """Boolean mask over tokens: True where the token has at least one piece."""
        return self.pieces_per_word > 0

    def to_words(self, piece_scores: np.ndarray, reduce: str = "max") -> np.ndarray:
        """Aggregate per-piece scores (last axis = pieces) to per-token scores; see module doc."""
        return pieces_to_words(piece_scores, self.piece_word, self.num_tokens, reduce)

    def mask_to_words(self, piece_mask: np.ndarray) -> np.ndarray:
        """A token is selected if any of its pieces is (last axis = pieces)."""
        return pieces_to_words(np.asarray(piece_mask, dtype=bool), self.piece_word, self.num_tokens, "any")

    def subset(self, keep: Sequence[int] | np.ndarray) -> Alignment:
        """Alignment of the tokens ``keep`` (indices, in the given order).

        Identical to ``align(tokenizer, [tokens[i] for i in keep])`` because every token is
        tokenised on its own, but without running the tokenizer again.
        """
        keep = np.asarray(keep, dtype=np.int64)
        if keep.size == 0:
            return Alignment([], np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(1, np.int64), self.unk_id,
                             [] if self.pieces is not None else None)
        counts = self.pieces_per_word[keep]
        starts = self.word_start[keep]
        total = int(counts.sum())
        # piece index list: for each kept token, range(start, start+count)
        offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        idx = np.arange(total, dtype=np.int64) + offsets
        new_word = np.repeat(np.arange(keep.size, dtype=np.int64), counts)
        word_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        pieces = [self.pieces[i] for i in idx] if self.pieces is not None else None
        return Alignment([self.tokens[i] for i in keep], self.input_ids[idx], new_word, word_start, self.unk_id, pieces)


def pieces_to_words(values: np.ndarray, piece_word: np.ndarray, num_words: int, reduce: str = "max") -> np.ndarray:
    """Aggregate the last axis (pieces) of ``values`` to words with ``reduce``.

    ``reduce``: ``max`` (default), ``mean``, ``sum``, ``first`` or ``any`` (boolean). Words without
    pieces get 0 (False).
    """
    values = np.asarray(values)
    piece_word = np.asarray(piece_word, dtype=np.int64)
    if values.shape[-1] != piece_word.shape[0]:
        raise ValueError(f"{values.shape[-1]} piece values for {piece_word.shape[0]} pieces")
    lead = values.shape[:-1]
    if reduce == "any":
        out = np.zeros(lead + (num_words,), dtype=bool)
        if piece_word.size:
            np.logical_or.at(out, (..., piece_word), values.astype(bool))
        return out
    vals = values.astype(np.float64)
    if reduce == "max":
        out = np.full(lead + (num_words,), -np.inf)
        if piece_word.size:
            np.maximum.at(out, (..., piece_word), vals)
        out[np.isneginf(out)] = 0.0
        return out
    if reduce in ("sum", "mean"):
        out = np.zeros(lead + (num_words,))
        if piece_word.size:
            np.add.at(out, (..., piece_word), vals)
        if reduce == "mean":
            counts = np.bincount(piece_word, minlength=num_words)
            out = out / np.maximum(counts, 1)
        return out
    if reduce == "first":
        out = np.zeros(lead + (num_words,))
        if piece_word.size:
            first = np.flatnonzero(np.concatenate([[True], piece_word[1:] != piece_word[:-1]]))
            out[..., piece_word[first]] = vals[..., first]
        return out
    raise ValueError(f"unknown reduce {reduce!r}")


def _check_fast(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("eraser_eval needs a fast (Rust) tokenizer for word alignment; got " + type(tokenizer).__name__)


def _from_encoding(tokens: list[str], ids: list[int], word_ids: list[int | None], unk_id, piece_strs=None) -> Alignment:
    input_ids = np.asarray(ids, dtype=np.int64)
    piece_word = np.asarray([-1 if w is None else w for w in word_ids], dtype=np.int64)
    if (piece_word < 0).any():  # a tokenizer that adds its own specials despite add_special_tokens=False
        keep = piece_word >= 0
        input_ids, piece_word = input_ids[keep], piece_word[keep]
        if piece_strs is not None:
            piece_strs = [p for p, k in zip(piece_strs, keep) if k]
    if piece_word.size and (np.diff(piece_word) < 0).any():
        raise ValueError("tokenizer returned pieces out of word order")
    counts = np.bincount(piece_word, minlength=len(tokens)) if piece_word.size else np.zeros(len(tokens), np.int64)
    word_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Alignment(list(tokens), input_ids, piece_word, word_start, unk_id, piece_strs)


def align(tokenizer, tokens: Sequence[str], with_pieces: bool = False) -> Alignment:
    """Align ERASER document tokens (whitespace tokens, no spaces inside) to word pieces."""
    return align_batch(tokenizer, [tokens], with_pieces=with_pieces)[0]


def align_batch(tokenizer, docs: Sequence[Sequence[str]], with_pieces: bool = False) -> list[Alignment]:
    """:func:`align` for many documents with one tokenizer call."""
    _check_fast(tokenizer)
    docs = [list(d) for d in docs]
    out: list[Alignment | None] = [None] * len(docs)
    nonempty = [i for i, d in enumerate(docs) if d]
    unk_id = getattr(tokenizer, "unk_token_id", None)
    for i, d in enumerate(docs):
        if not d:
            out[i] = _from_encoding([], [], [], unk_id, [] if with_pieces else None)
    if nonempty:
        enc = tokenizer(
            [docs[i] for i in nonempty],
            is_split_into_words=True,
            add_special_tokens=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        for j, i in enumerate(nonempty):
            strs = enc.tokens(j) if with_pieces else None
            out[i] = _from_encoding(docs[i], enc["input_ids"][j], enc.word_ids(j), unk_id, strs)
    return out  # type: ignore[return-value]


_WORD = re.compile(r"\S+")


def align_text(tokenizer, text: str, with_pieces: bool = True) -> tuple[Alignment, list[tuple[int, int]]]:
    """Split raw text on whitespace (ERASER's token convention), align, and return character spans
    ``(start, end)`` of every token in ``text`` (for highlighting in the app)."""
    matches = list(_WORD.finditer(text))
    return align(tokenizer, [m.group() for m in matches], with_pieces=with_pieces), [m.span() for m in matches]


# --------------------------------------------------------------------------------------------------
# windows


@dataclass
class Window:
    """One model input covering pieces ``[start, end)`` of a document.

    Document pieces sit at positions ``1 .. 1 + (end - start)`` of ``input_ids``.
    """

    doc: int
    start: int
    end: int
    input_ids: list[int]
    token_type_ids: list[int]

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def num_doc_pieces(self) -> int:
        return self.end - self.start


def _special_ids(tokenizer) -> tuple[int, int]:
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if cls_id is None or sep_id is None:
        raise ValueError("tokenizer has no [CLS]/[SEP] (or BOS/EOS) tokens")
    return int(cls_id), int(sep_id)


def make_windows(
    alignment: Alignment,
    tokenizer,
    max_length: int,
    query_ids: Sequence[int] | None = None,
    doc: int = 0,
    max_query_fraction: float = 0.5,
) -> list[Window]:
    """Windows over ``alignment``'s pieces (see module doc); ``doc`` is copied into each window.

    A query longer than ``max_query_fraction * max_length`` pieces is cut to that length (the only
    truncation anywhere, and only of the query, never of the scored document).
    """
    cls_id, sep_id = _special_ids(tokenizer)
    ids = alignment.input_ids.tolist()
    if query_ids:
        q = list(query_ids)[: max(1, int(max_query_fraction * max_length))]
        size = max_length - 3 - len(q)
    else:
        q = []
        size = max_length - 2
    if size < 1:
        raise ValueError(f"max_length {max_length} leaves no room for document pieces")
    windows = []
    for s, e in split_windows(len(ids), size):
        body = [cls_id] + ids[s:e] + [sep_id]
        types = [0] * len(body)
        if q:
            body += q + [sep_id]
            types += [1] * (len(q) + 1)
        windows.append(Window(doc, s, e, body, types))
    return windows


def scatter_window_scores(windows: Sequence[Window], values: Sequence[np.ndarray], num_pieces: int) -> np.ndarray:
    """Put per-position window values (last axis = window positions) back into document piece order.

    ``values[i]`` holds window ``i``'s values over its positions (``[CLS]`` at 0); leading axes (e.g.
    layers) are kept. Returns ``(..., num_pieces)``.
    """
    if not windows:
        raise ValueError("no windows")
    lead = np.asarray(values[0]).shape[:-1]
    out = np.zeros(lead + (num_pieces,), dtype=np.asarray(values[0]).dtype)
    for w, v in zip(windows, values):
        n = w.end - w.start
        out[..., w.start : w.end] = np.asarray(v)[..., 1 : 1 + n]
    return out
