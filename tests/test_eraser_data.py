"""ERASER loaders: layouts, validation errors naming file and line, and the shipped data."""

import json
import os
from pathlib import Path

import pytest

from conftest import REPO, require
from eraser_eval.data import (
    EraserDataError,
    dataset_dir,
    load_annotations,
    load_dataset,
    load_documents,
    resolve_data_root,
)

DATA = Path(os.environ.get("ADAPLER_DATA_DIR") or REPO.parent / "shared" / "data")


def shared_data() -> Path:
    return require(DATA / "movies" / "test.jsonl", "ERASER data").parents[1]


def _ann(aid, label, spans, docid=None, **kw):
    docid = docid or aid
    evs = [{"docid": docid, "start_token": s, "end_token": e, "start_sentence": -1, "end_sentence": -1,
            "text": kw.pop("text", None)} for s, e in spans]
    return {"annotation_id": aid, "classification": label, "evidences": [evs] if evs else [[]],
            "query": "What is the sentiment of this review?", "query_type": None, **kw}


def make_movies(root: Path, anns: list, docs: dict, raw_lines: dict | None = None) -> Path:
    d = root / "movies"
    (d / "docs").mkdir(parents=True)
    for docid, text in docs.items():
        (d / "docs" / docid).write_text(text, encoding="utf-8")
    lines = [json.dumps(a) for a in anns]
    for idx, raw in (raw_lines or {}).items():
        lines.insert(idx, raw)
    (d / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


DOCS = {"d1": "a good film .\nreally good !", "d2": "bad .\n\n  terrible  plot"}


def test_loads_folder_layout_and_flattens_sentences(tmp_path):
    root = make_movies(tmp_path, [_ann("d1", "POS", [(1, 2), (4, 6)], text="good"),
                                  _ann("d2", "NEG", [(2, 4)])], DOCS)
    ds = load_dataset("movies", "test", root)
    assert len(ds) == 2
    assert ds.documents["d1"].tokens == ["a", "good", "film", ".", "really", "good", "!"]
    assert ds.documents["d1"].sentences == [["a", "good", "film", "."], ["really", "good", "!"]]
    assert ds.documents["d2"].tokens == ["bad", ".", "terrible", "plot"]  # blank line and double spaces dropped
    assert ds.gold_mask(ds.annotations[0]).tolist() == [False, True, False, False, True, True, False]
    # mean rationale length over annotations with rationales: (1 + 2 + 2) tokens -> (3 + 2) / 2
    assert ds.mean_rationale_length == pytest.approx(2.5)
    assert ds.warnings == []
    g = ds.gold_table()
    assert g["d1"] == {"label": "POS", "rationales": {"d1": [(1, 2), (4, 6)]}, "doc_lengths": {"d1": 7}}


def test_dataset_folder_itself_and_limit(tmp_path):
    root = make_movies(tmp_path, [_ann("d1", "POS", [(1, 2)]), _ann("d2", "NEG", [(0, 1)])], DOCS)
    ds = load_dataset("movies", "test", root / "movies", limit=1)
    assert [a.annotation_id for a in ds.annotations] == ["d1"]
    assert set(ds.documents) == {"d1"}
    assert ds.total_annotations == 2
    ds = load_dataset("movies", "test", root, ids=["d2"])
    assert [a.annotation_id for a in ds.annotations] == ["d2"]


def test_bad_json_line_names_file_and_line(tmp_path):
    root = make_movies(tmp_path, [_ann("d1", "POS", [(1, 2)]), _ann("d2", "NEG", [(0, 1)])], DOCS,
                       raw_lines={2: '{"annotation_id": "x", '})
    with pytest.raises(EraserDataError) as err:
        load_dataset("movies", "test", root)
    msg = str(err.value)
    assert "test.jsonl:3:" in msg and "invalid JSON" in msg


def test_missing_document(tmp_path):
    root = make_movies(tmp_path, [_ann("d1", "POS", [(1, 2)]), _ann("d9", "NEG", [(0, 1)])], DOCS)
    with pytest.raises(EraserDataError) as err:
        load_dataset("movies", "test", root)
    assert "test.jsonl:2:" in str(err.value) and "missing document 'd9'" in str(err.value)


@pytest.mark.parametrize("span", [(5, 8), (-1, 2), (3, 2)])
def test_span_out_of_range(tmp_path, span):
    root = make_movies(tmp_path, [_ann("d2", "NEG", [span])], DOCS)
    with pytest.raises(EraserDataError) as err:
        load_dataset("movies", "test", root)
    msg = str(err.value)
    assert "test.jsonl:1:" in msg and f"{span[0]}:{span[1]} out of range" in msg and "4 tokens" in msg


def test_empty_span_and_text_mismatch_are_warnings(tmp_path):
    root = make_movies(tmp_path, [_ann("d1", "POS", [(2, 2)]), _ann("d2", "NEG", [(0, 1)], text="good")], DOCS)
    ds = load_dataset("movies", "test", root)
    assert len(ds.warnings) == 2
    assert "empty span 2:2" in ds.warnings[0] and "test.jsonl:1:" in ds.warnings[0]
    assert "evidence text" in ds.warnings[1] and "test.jsonl:2:" in ds.warnings[1]


def test_unknown_label_duplicate_id_and_bad_fields(tmp_path):
    root = make_movies(tmp_path, [_ann("d1", "MAYBE", [(1, 2)])], DOCS)
    with pytest.raises(EraserDataError, match=r"test.jsonl:1:.*label 'MAYBE'"):
        load_dataset("movies", "test", root)
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps(_ann("d1", "POS", [])) + "\n" + json.dumps(_ann("d1", "POS", [])) + "\n")
    with pytest.raises(EraserDataError, match=r"x.jsonl:2: duplicate annotation_id 'd1' \(first at line 1\)"):
        load_annotations(p)
    bad = _ann("d1", "POS", [(1, 2)])
    bad["evidences"][0][0]["start_token"] = "1"
    p.write_text(json.dumps(bad) + "\n")
    with pytest.raises(EraserDataError, match=r"x.jsonl:1: .*start_token"):
        load_annotations(p)
    p.write_text("[1, 2]\n")
    with pytest.raises(EraserDataError, match="x.jsonl:1: expected a JSON object"):
        load_annotations(p)


def test_docs_jsonl_layout_and_errors(tmp_path):
    d = tmp_path / "hatexplain" / "eraser"
    d.mkdir(parents=True)
    (d / "docs.jsonl").write_text(
        json.dumps({"docid": "p1", "document": "you are all idiots"}) + "\n"
        + json.dumps({"docid": "p2", "document": "nice day 😀"}) + "\n"
    )
    (d / "test.jsonl").write_text(
        json.dumps({"annotation_id": "p1", "classification": "toxic",
                    "evidences": [[{"docid": "p1", "start_token": 3, "end_token": 4, "start_sentence": -1,
                                    "end_sentence": -1, "text": "idiots"}]], "query": "What is the class?"}) + "\n"
        + json.dumps({"annotation_id": "p2", "classification": "non-toxic", "evidences": [[]]}) + "\n"
    )
    ds = load_dataset("hatexplain", "test", tmp_path)
    assert ds.annotations[1].docid == "p2"  # no evidence, no docids: the post itself
    assert ds.gold_mask(ds.annotations[1]).tolist() == [False, False, False]
    assert ds.labels == ("non-toxic", "toxic")
    (d / "docs.jsonl").write_text(json.dumps({"docid": "p1", "document": "x"}) + "\nnot json\n")
    with pytest.raises(EraserDataError, match=r"docs.jsonl:2: invalid JSON"):
        load_documents(d)


def test_missing_split_docs_and_root(tmp_path, monkeypatch):
    root = make_movies(tmp_path, [_ann("d1", "POS", [(1, 2)])], DOCS)
    with pytest.raises(EraserDataError, match="split 'val' not found"):
        load_dataset("movies", "val", root)
    with pytest.raises(EraserDataError, match="no ERASER 'multirc' data"):
        dataset_dir(root, "multirc")
    with pytest.raises(EraserDataError, match="unknown dataset"):
        dataset_dir(root, "fever")
    empty = tmp_path / "nodocs"
    empty.mkdir()
    with pytest.raises(EraserDataError, match="no documents"):
        load_documents(empty)
    monkeypatch.delenv("ERASER_DATA_DIR", raising=False)
    monkeypatch.delenv("ADAPLER_DATA_DIR", raising=False)
    with pytest.raises(EraserDataError, match="ERASER_DATA_DIR"):
        resolve_data_root(None)
    monkeypatch.setenv("ADAPLER_DATA_DIR", "/b")
    assert resolve_data_root(None) == Path("/b")
    monkeypatch.setenv("ERASER_DATA_DIR", "/a")
    assert resolve_data_root(None) == Path("/b")  # one resolution: ADAPLER_DATA_DIR first
    monkeypatch.delenv("ADAPLER_DATA_DIR")
    assert resolve_data_root(None) == Path("/a")
    assert resolve_data_root("/c") == Path("/c")


# ---------------------------------------------------------------------------------------- shipped data


def test_shipped_movies_test():
    ds = load_dataset("movies", "test", shared_data())
    assert len(ds) == 199 and len(ds.documents) == 199
    assert sum(len(a.all_evidences()) for a in ds.annotations) == 2067
    assert len([w for w in ds.warnings if "empty span" in w]) == 20  # ERASER's own empty spans
    assert not [w for w in ds.warnings if "evidence text" in w]
    assert max(len(d) for d in ds.documents.values()) <= 2809
    doc = ds.documents.get("negR_998.txt")
    if doc is not None:
        assert " ".join(doc.tokens[70:75]) == "but something terribly wrong happened"


def test_shipped_multirc_and_hatexplain():
    root = shared_data()
    if not (root / "multirc" / "val.jsonl").is_file() or not (root / "hatexplain" / "eraser" / "test.jsonl").is_file():
        pytest.skip("multirc/hatexplain data not present")
    mr = load_dataset("multirc", "val", root, limit=50)
    assert mr.has_query and all(" || " in a.query for a in mr.annotations)
    assert mr.total_annotations == 3214
    hx = load_dataset("hatexplain", "test", root)
    assert len(hx) == 1924
    assert sum(a.classification == "toxic" for a in hx.annotations) == 1142
    assert all(not a.all_evidences() for a in hx.annotations if a.classification == "non-toxic")
    assert not hx.warnings
