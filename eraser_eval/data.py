"""ERASER dataset loaders and validation.

The ERASER layout (DeYoung et al., 2020) is a folder with ``{train,val,test}.jsonl`` annotation files
and the documents, either as a ``docs/`` folder (one file per document) or as ``docs.jsonl``
(``{"docid", "document"}`` per line). Documents are tokenised exactly as ERASER does: one sentence per
line, tokens separated by spaces; empty tokens and empty lines are dropped. Evidence spans index the
document flattened over sentences, ``end_token`` exclusive.

Every structural problem raises :class:`EraserDataError` with the file and the 1-based line number.
Problems that ERASER's own data has and its scorer accepts (empty spans such as ``356:356`` in the
Movies test split, evidence ``text`` that does not match the tokens) are collected as warnings.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from adapler import data as D
from adapler.data import TASKS, DataError, EraserSpec, TaskSpec, eraser_tasks, read_jsonl

__all__ = [
    "DATASETS",
    "Annotation",
    "Document",
    "EraserDataError",
    "EraserDataset",
    "Evidence",
    "dataset_dir",
    "dataset_spec",
    "load_annotations",
    "load_dataset",
    "load_documents",
    "resolve_data_root",
    "validate_annotations",
]


EraserDataError = DataError  # a malformed ERASER file; the message names the file and, where there is one, the line

#: datasets with ERASER rationales: the tasks of ``adapler.data.TASKS`` that have an ``eraser`` entry
DATASETS: dict[str, TaskSpec] = {name: TASKS[name] for name in eraser_tasks()}


@dataclass(frozen=True)
class Evidence:
    docid: str
    start_token: int
    end_token: int  # exclusive
    start_sentence: int = -1
    end_sentence: int = -1
    text: str | None = None


@dataclass
class Annotation:
    annotation_id: str
    classification: str
    evidences: list[list[Evidence]]
    query: str | None = None
    query_type: str | None = None
    docids: list[str] | None = None
    source: str = ""  # "file:line" for messages

    def all_evidences(self) -> list[Evidence]:
        return [ev for group in self.evidences for ev in group]

    @property
    def docid(self) -> str:
        """The document this annotation is scored on.

        ``docids`` when given, else the docid of the evidences, else the annotation id (HateXplain's
        non-toxic posts have ``"evidences": [[]]`` and no ``docids``; their document is the post).
        """
        if self.docids:
            return self.docids[0]
        evs = self.all_evidences()
        if evs:
            return evs[0].docid
        return self.annotation_id

    def spans(self, docid: str | None = None) -> list[tuple[int, int]]:
        """Gold token spans ``(start, end)`` on ``docid`` (default: :attr:`docid`), in file order."""
        docid = self.docid if docid is None else docid
        return [(ev.start_token, ev.end_token) for ev in self.all_evidences() if ev.docid == docid]


@dataclass
class Document:
    docid: str
    sentences: list[list[str]]

    @property
    def tokens(self) -> list[str]:
        return [tok for sent in self.sentences for tok in sent]

    def __len__(self) -> int:
        return sum(len(s) for s in self.sentences)


@dataclass
class EraserDataset:
    """Annotations of one split plus the documents they need."""

    name: str
    split: str
    path: Path
    annotations: list[Annotation]
    documents: dict[str, Document]
    labels: tuple[str, ...]
    has_query: bool = False
    warnings: list[str] = field(default_factory=list)
    # mean human rationale length (tokens) over the whole split, computed before any limit
    mean_rationale_length: float = 0.0
    total_annotations: int = 0

    def __len__(self) -> int:
        return len(self.annotations)

    def gold_mask(self, ann: Annotation, docid: str | None = None) -> np.ndarray:
        """Boolean mask over the document tokens: True where any gold evidence span covers it."""
        docid = ann.docid if docid is None else docid
        mask = np.zeros(len(self.documents[docid]), dtype=bool)
        for s, e in ann.spans(docid):
            mask[s:e] = True
        return mask

    def label_id(self, label: str) -> int:
        return self.labels.index(label)

    def gold_table(self) -> dict[str, dict]:
        """Plain-data gold for :func:`eraser_eval.metrics.score_records`."""
        out: dict[str, dict] = {}
        for ann in self.annotations:
            docids = {ann.docid} | {ev.docid for ev in ann.all_evidences()}
            out[ann.annotation_id] = {
                "label": ann.classification,
                "rationales": {d: ann.spans(d) for d in sorted(docids)},
                "doc_lengths": {d: len(self.documents[d]) for d in sorted(docids)},
            }
        return out


# --------------------------------------------------------------------------------------------------
# locating data


def resolve_data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root of :func:`adapler.data.data_root` (``data_dir``, ``$ADAPLER_DATA_DIR``,
    ``$ERASER_DATA_DIR``); an error when none is set."""
    root = D.data_root(data_dir)
    if root is None:
        raise EraserDataError(
            f"no data directory: pass --data-dir / data_dir=, or set {D.DATA_DIR_ENV} (or {D.LEGACY_DATA_DIR_ENV}) "
            "to a folder containing movies/, multirc/, hatexplain/ (see docs/data.md)"
        )
    return root


def dataset_dir(data_root: str | os.PathLike, dataset: str) -> Path:
    """The ERASER folder of ``dataset`` under ``data_root``.

    ``data_root`` may also be the dataset folder itself (it then holds the split files).
    """
    spec = _spec(dataset)
    root = Path(data_root)
    for cand in (root / spec.eraser.subdir, root / spec.name, root):
        if cand.is_dir() and any((cand / f"{s}.jsonl").is_file() for s in ("train", "val", "test")):
            return cand
    raise EraserDataError(
        f"{root}: no ERASER '{dataset}' data (looked for {root / spec.eraser.subdir}/{{train,val,test}}.jsonl)"
    )


SPLITS = ("train", "val", "test")


def dataset_spec(dataset: str | os.PathLike, label_map: Mapping[str, str] | None = None) -> TaskSpec:
    """A built-in ERASER dataset by name, or any ERASER-layout folder by path (``docs/`` or
    ``docs.jsonl`` and ``{train,val,test}.jsonl``; its labels: the sorted ``classification`` values of
    its split files; a query task when annotations have a ``query``). ``label_map`` maps model class
    names (case-insensitive) to the dataset's labels, for names the defaults do not know."""
    name = str(dataset)
    if name in DATASETS:
        spec = DATASETS[name]
    elif Path(name).is_dir():
        spec = _folder_spec(Path(name).resolve())
    else:
        raise EraserDataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}, or an ERASER-layout folder")
    if label_map:
        wrong = {k: v for k, v in label_map.items() if v not in spec.eraser.labels}
        if wrong:
            raise EraserDataError(f"label map {wrong}: not labels of {spec.name} ({', '.join(spec.eraser.labels)})")
        extra = {str(k).strip().lower(): v for k, v in label_map.items()}
        spec = replace(spec, eraser=replace(spec.eraser, label_map={**spec.eraser.label_map, **extra}))
    return spec


def _folder_spec(path: Path) -> TaskSpec:
    files = [path / f"{s}.jsonl" for s in SPLITS if (path / f"{s}.jsonl").is_file()]
    if not files:
        raise EraserDataError(f"{path}: not an ERASER folder (no {{train,val,test}}.jsonl)")
    if not ((path / "docs").is_dir() or (path / "docs.jsonl").is_file()):
        raise EraserDataError(f"{path}: not an ERASER folder (neither a docs/ folder nor docs.jsonl)")
    labels, query = set(), False
    for f in files:
        for lineno, obj in read_jsonl(f):
            if not isinstance(obj.get("classification"), str):
                raise EraserDataError(f"{f}:{lineno}: 'classification' must be a string")
            labels.add(obj["classification"])
            query = query or bool(obj.get("query"))
    names = tuple(sorted(labels))
    return TaskSpec(path.name, names, 512, gamma=D.DEFAULT_GAMMA, phi=D.DEFAULT_PHI, long_inputs=True,
                    eraser=EraserSpec(str(path), names, has_query=query, position_fallback=False))


def _spec(dataset: str) -> TaskSpec:
    return dataset_spec(dataset)


# --------------------------------------------------------------------------------------------------
# low-level readers


def load_documents(path: str | os.PathLike, docids: Iterable[str] | None = None) -> dict[str, Document]:
    """Documents of an ERASER folder (:func:`adapler.data.load_documents`) as :class:`Document`."""
    return {d: Document(d, sents) for d, sents in D.load_documents(path, docids).items()}


def _int_field(obj: dict, key: str, where: str, default: int | None = None) -> int:
    val = obj.get(key, default)
    if isinstance(val, bool) or not isinstance(val, int):
        raise EraserDataError(f"{where}: evidence field {key!r} must be an integer, got {val!r}")
    return val


def _parse_annotation(obj: dict, where: str) -> Annotation:
    ann_id = obj.get("annotation_id")
    if not isinstance(ann_id, str) or not ann_id:
        raise EraserDataError(f"{where}: missing or non-string 'annotation_id'")
    label = obj.get("classification")
    if not isinstance(label, str):
        raise EraserDataError(f"{where}: annotation {ann_id!r}: missing or non-string 'classification'")
    raw = obj.get("evidences", [])
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise EraserDataError(f"{where}: annotation {ann_id!r}: 'evidences' must be a list of lists")
    groups: list[list[Evidence]] = []
    for group in raw:
        if isinstance(group, dict):  # tolerate a flat list of evidences
            group = [group]
        if not isinstance(group, list):
            raise EraserDataError(f"{where}: annotation {ann_id!r}: 'evidences' must be a list of lists")
        evs = []
        for ev in group:
            if not isinstance(ev, dict) or not isinstance(ev.get("docid"), str):
                raise EraserDataError(f"{where}: annotation {ann_id!r}: evidence without a string 'docid'")
            evs.append(
                Evidence(
                    docid=ev["docid"],
                    start_token=_int_field(ev, "start_token", where),
                    end_token=_int_field(ev, "end_token", where),
                    start_sentence=_int_field(ev, "start_sentence", where, -1),
                    end_sentence=_int_field(ev, "end_sentence", where, -1),
                    text=ev.get("text"),
                )
            )
        groups.append(evs)
    docids = obj.get("docids")
    if docids is not None and (not isinstance(docids, list) or not all(isinstance(d, str) for d in docids)):
        raise EraserDataError(f"{where}: annotation {ann_id!r}: 'docids' must be null or a list of strings")
    query = obj.get("query")
    return Annotation(
        annotation_id=ann_id,
        classification=label,
        evidences=groups,
        query=query if isinstance(query, str) else None,
        query_type=obj.get("query_type"),
        docids=docids or None,
        source=where,
    )


def load_annotations(path: str | os.PathLike) -> list[Annotation]:
    """Parse an ERASER annotation file (structure only; see :func:`validate_annotations`)."""
    path = Path(path)
    anns, seen = [], {}
    for lineno, obj in read_jsonl(path):
        where = f"{path}:{lineno}"
        ann = _parse_annotation(obj, where)
        if ann.annotation_id in seen:
            raise EraserDataError(
                f"{where}: duplicate annotation_id {ann.annotation_id!r} (first at line {seen[ann.annotation_id]})"
            )
        seen[ann.annotation_id] = lineno
        anns.append(ann)
    return anns


def validate_annotations(
    anns: Sequence[Annotation], docs: dict[str, Document], labels: Sequence[str] | None = None
) -> list[str]:
    """Check docids, span ranges and labels; raise on errors, return warnings.

    Errors: unknown label, missing document, span with ``start < 0``, ``end > len(doc)`` or
    ``start > end``, more than one scored document per annotation. Warnings: empty spans
    (``start == end``; ERASER's Movies test split has 20) and evidence text that differs from the
    document tokens.
    """
    warnings: list[str] = []
    for ann in anns:
        where = ann.source or ann.annotation_id
        if labels is not None and ann.classification not in labels:
            raise EraserDataError(
                f"{where}: annotation {ann.annotation_id!r}: label {ann.classification!r} not one of {list(labels)}"
            )
        needed = [ann.docid] + [ev.docid for ev in ann.all_evidences()]
        for d in needed:
            if d not in docs:
                raise EraserDataError(f"{where}: annotation {ann.annotation_id!r}: missing document {d!r}")
        if len(set(needed)) > 1:
            raise EraserDataError(
                f"{where}: annotation {ann.annotation_id!r}: evidence in {len(set(needed))} documents; "
                "only single-document annotations are supported"
            )
        for ev in ann.all_evidences():
            doc = docs[ev.docid]
            n = len(doc)
            if not (0 <= ev.start_token <= ev.end_token <= n):
                raise EraserDataError(
                    f"{where}: annotation {ann.annotation_id!r}: span {ev.start_token}:{ev.end_token} out of "
                    f"range for document {ev.docid!r} with {n} tokens"
                )
            if ev.start_token == ev.end_token:
                warnings.append(f"{where}: annotation {ann.annotation_id!r}: empty span {ev.start_token}:{ev.end_token}")
            elif ev.text is not None:
                got = " ".join(doc.tokens[ev.start_token : ev.end_token])
                if got != ev.text:
                    warnings.append(
                        f"{where}: annotation {ann.annotation_id!r}: evidence text {ev.text[:40]!r} != document "
                        f"tokens {got[:40]!r}"
                    )
    return warnings


def _rationale_length(ann: Annotation) -> int:
    toks: set[tuple[str, int]] = set()
    for ev in ann.all_evidences():
        toks.update((ev.docid, t) for t in range(ev.start_token, ev.end_token))
    return len(toks)


def load_dataset(
    dataset: str,
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    ids: Iterable[str] | None = None,
) -> EraserDataset:
    """Load and validate one split of an ERASER dataset (``movies``, ``multirc``, ``hatexplain``, or
    the path of any ERASER-layout folder, see :func:`dataset_spec`).

    ``data_dir`` is the data root (see :func:`resolve_data_root`) or the dataset folder itself.
    ``limit`` keeps the first N annotations in file order; ``ids`` keeps only those annotation ids.
    :attr:`EraserDataset.mean_rationale_length` is computed over the whole split before either
    restriction, over annotations that have at least one rationale token.
    """
    spec = _spec(dataset)
    path = dataset_dir(resolve_data_root(data_dir), dataset) if str(dataset) in DATASETS else Path(spec.eraser.subdir)
    ann_file = path / f"{split}.jsonl"
    if not ann_file.is_file():
        have = sorted(p.stem for p in path.glob("*.jsonl") if p.stem in ("train", "val", "test"))
        raise EraserDataError(f"{ann_file}: split {split!r} not found (available: {', '.join(have) or 'none'})")
    anns = load_annotations(ann_file)
    total = len(anns)
    lengths = [n for n in (_rationale_length(a) for a in anns) if n > 0]
    mean_len = float(np.mean(lengths)) if lengths else 0.0
    if ids is not None:
        wanted = set(ids)
        anns = [a for a in anns if a.annotation_id in wanted]
    if limit is not None:
        anns = anns[: max(0, int(limit))]
    needed = {a.docid for a in anns} | {ev.docid for a in anns for ev in a.all_evidences()}
    docs = load_documents(path, needed)
    warnings = validate_annotations(anns, docs, spec.eraser.labels)
    return EraserDataset(
        name=spec.name,
        split=split,
        path=path,
        annotations=anns,
        documents=docs,
        labels=spec.eraser.labels,
        has_query=spec.eraser.has_query,
        warnings=warnings,
        mean_rationale_length=mean_len,
        total_annotations=total,
    )
