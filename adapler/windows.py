"""Windows over inputs longer than the model's maximum length.

One place for the policy, shared by training data (``adapler.data``), the ERASER evaluation and the
app: a long word-piece sequence is cut into consecutive, non-overlapping windows of at most
``max_pieces`` pieces (``max_length - 2`` for [CLS] and [SEP]), so every piece is seen exactly once
and nothing is silently truncated. A document's class probabilities are the mean over its windows.
"""


def split_windows(num_pieces: int, max_pieces: int) -> list[tuple[int, int]]:
    """Half-open ``(start, end)`` piece ranges covering ``range(num_pieces)`` in order.

    An empty input still gets one (empty) window so that every document yields a prediction.
    """
    if max_pieces < 1:
        raise ValueError(f"max_pieces must be >= 1, got {max_pieces}")
    if num_pieces <= 0:
        return [(0, 0)]
    return [(s, min(s + max_pieces, num_pieces)) for s in range(0, num_pieces, max_pieces)]
