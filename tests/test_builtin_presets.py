"""The built-in tasks read through the one DatasetSpec mechanism give exactly the examples of the
hand-written loaders they replaced (ids, texts and labels, hashed per split at that commit)."""

import hashlib
import json

import pytest

from adapler import data as D
from conftest import REPO

FIXTURE = json.loads((REPO / "tests" / "data" / "builtin_examples.json").read_text())


@pytest.mark.parametrize("key", list(FIXTURE["splits"]))
def test_same_examples_as_before(data_dir, key):
    task, split = key.split("/")
    expected = FIXTURE["splits"][key]
    if "error" in expected:
        with pytest.raises(D.DataError):
            D.load_examples(task, split, data_dir)
        return
    examples = D.load_examples(task, split, data_dir)
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e["id"], e["text"], e["label"]], ensure_ascii=False).encode() + b"\n")
    assert (len(examples), digest.hexdigest()) == (expected["examples"], expected["sha256"])
