"""M-BEIR (UniIR's universal multimodal retrieval benchmark) read exactly as UniIR reads it.

Follows TIGER-AI-Lab/UniIR ``src/data/mbeir_dataset.py``, ``src/data/preprocessing/utils.py`` and
``src/common/mbeir_retriever.py``. Layout under the M-BEIR root::

    query/<split>/mbeir_<dataset>_task<id>_<split>.jsonl          queries
    cand_pool/local/mbeir_<dataset>_task<id>_cand_pool.jsonl      local pool (MSCOCO: ..._task<id>_<split>_cand_pool)
    cand_pool/global/mbeir_union_<split>_cand_pool.jsonl          global pool (union of all local pools)
    qrels/<split>/mbeir_<dataset>_task<id>_<split>_qrels.txt      "qid 0 did relevance task_id"
    instructions/query_instructions.tsv                           prompts per (dataset id, query, candidate modality)
    mbeir_images/...                                              images; paths in the jsonl files are root-relative

Texts are normalised with :func:`format_string` as UniIR does before embedding (queries without their
instruction; UniIR embeds ``format_string(f"{prompt} {query_txt}")`` when instructions are on, which differs from
``f"{prompt} {query.text}"`` only in the case of the query's first letter).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Literal

from lumir.collections import Corpus, RetrievalTask
from lumir.errors import DataFormatError
from lumir.io.jsonl import iter_jsonl
from lumir.io.trec import check_qrels, read_qrels
from lumir.types import ImageRef, Item, Modality, Qrels, Query

__all__ = [
    "DATASET_IDS",
    "MBEIR_TASKS",
    "format_string",
    "list_mbeir_tasks",
    "load_mbeir_instructions",
    "load_mbeir_pool",
    "load_mbeir_qrels",
    "load_mbeir_queries",
    "mbeir_pool_path",
    "mbeir_task",
    "parse_task_name",
    "task_metrics",
    "task_modalities",
]

DATASET_IDS: dict[str, int] = {
    "VisualNews": 0,
    "Fashion200K": 1,
    "WebQA": 2,
    "EDIS": 3,
    "NIGHTS": 4,
    "OVEN": 5,
    "INFOSEEK": 6,
    "FashionIQ": 7,
    "CIRR": 8,
    "MSCOCO": 9,
}
"""M-BEIR dataset name -> the dataset id that prefixes its qids and dids (``"9:123"`` is MSCOCO)."""

MBEIR_TASKS: dict[str, int] = {
    "text -> image": 0,
    "text -> text": 1,
    "text -> image,text": 2,
    "image -> text": 3,
    "image -> image": 4,
    "image,text -> text": 6,
    "image,text -> image": 7,
    "image,text -> image,text": 8,
}
"""``"<query modality> -> <candidate modality>"`` -> M-BEIR task id (task 5 is not used by M-BEIR)."""

_NAME_BY_ID = {v: k for k, v in DATASET_IDS.items()}
_NAME_BY_LOWER = {k.lower(): k for k in DATASET_IDS}
_FASHION = frozenset({"fashion200k", "fashioniq"})


def format_string(s: str | None) -> str:
    """UniIR's text normalisation: drop ``\\r``, strip spaces and surrounding double quotes, capitalise the first
    character, and end with a period unless the text ends with ``.``, ``?`` or ``!``.

    Example:
        >>> format_string(' "a dog on a beach" ')
        'A dog on a beach.'
        >>> format_string(None)
        ''
    """
    s = (s or "").replace("\r", "").strip().strip('"')
    if s:
        s = s[0].upper() + s[1:]
        s = s + "." if s[-1] not in ".?!" else s
    return s


def task_modalities(task_id: int) -> tuple[Modality, Modality]:
    """``(query modality, candidate modality)`` of an M-BEIR task id.

    Example:
        >>> task_modalities(7)
        (<Modality.IMAGE_TEXT: 'image,text'>, <Modality.IMAGE: 'image'>)
    """
    for name, tid in MBEIR_TASKS.items():
        if tid == task_id:
            q, c = name.split(" -> ")
            return Modality.parse(q), Modality.parse(c)
    raise ValueError(f"unknown M-BEIR task id {task_id!r}; known: {sorted(MBEIR_TASKS.values())}")


def task_metrics(dataset: str) -> tuple[str, ...]:
    """The recall cutoffs UniIR reports for a dataset: R@10/20/50 for Fashion200K and FashionIQ, else R@1/5/10.

    M-BEIR's "Recall@K" is 1 when *any* positive is in the top K (success@K in TREC terms).
    """
    return ("R@10", "R@20", "R@50") if dataset.lower() in _FASHION else ("R@1", "R@5", "R@10")


def _dataset_of(some_id: str, path: Path, lineno: int) -> str:
    prefix, sep, rest = some_id.partition(":")
    if not sep or not prefix.isdigit() or not rest or int(prefix) not in _NAME_BY_ID:
        raise DataFormatError(
            f"id {some_id!r} is not '<dataset id>:<n>' with a known dataset id {sorted(_NAME_BY_ID)}",
            path=path,
            line=lineno,
        )
    return _NAME_BY_ID[int(prefix)]


def _str_field(obj: dict[str, Any], key: str, path: Path, lineno: int) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise DataFormatError(f"{key!r} must be a string, got {value!r}", path=path, line=lineno)
    return value


def _required_str(obj: dict[str, Any], key: str, path: Path, lineno: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise DataFormatError(f"{key!r} must be a non-empty string, got {value!r}", path=path, line=lineno)
    return value


def _content(
    obj: dict[str, Any], keys: tuple[str, str, str], root: Path, what: str, path: Path, lineno: int
) -> tuple[str | None, ImageRef | None, Modality]:
    """Text, image and declared modality of a query or candidate; the declared modality wins over extra fields."""
    txt_key, img_key, mod_key = keys
    declared = _required_str(obj, mod_key, path, lineno)
    try:
        modality = Modality.parse(declared)
    except ValueError as err:
        raise DataFormatError(f"{what}: {err}", path=path, line=lineno) from None
    text = format_string(_str_field(obj, txt_key, path, lineno)) or None
    img_path = _str_field(obj, img_key, path, lineno) or None
    if modality is not Modality.IMAGE and text is None:
        raise DataFormatError(
            f"{what} is declared {modality.value!r} but {txt_key!r} is empty", path=path, line=lineno
        )
    if modality is not Modality.TEXT and img_path is None:
        raise DataFormatError(f"{what} is declared {modality.value!r} but has no {img_key!r}", path=path, line=lineno)
    image = ImageRef(str(root / img_path)) if img_path is not None and modality is not Modality.TEXT else None
    return (None if modality is Modality.IMAGE else text), image, modality


def load_mbeir_pool(path: str | Path, root: str | Path) -> Corpus:
    """Load an M-BEIR candidate pool (local or global) as a :class:`~lumir.collections.Corpus`.

    Each line is ``{"did", "txt", "img_path", "modality", "src_content"}``. The declared ``modality`` decides the
    item's fields (an ``"image"`` candidate keeps no text even if ``txt`` is set); text is normalised with
    :func:`format_string`; ``img_path`` is relative to ``root``. ``src_content`` is not kept.

    Raises:
        DataFormatError: a bad line: missing or duplicate ``did``, unknown modality, or a declared modality whose
            fields are missing (an ``"image,text"`` candidate without text, ...); the message names file and line.
    """
    path, root = Path(path), Path(root)
    items: list[Item] = []
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        did = _required_str(obj, "did", path, lineno)
        if did in seen:
            raise DataFormatError(f"duplicate did {did!r} (first on line {seen[did]})", path=path, line=lineno)
        seen[did] = lineno
        text, image, _ = _content(obj, ("txt", "img_path", "modality"), root, f"candidate {did!r}", path, lineno)
        items.append(Item(did, text=text, image=image))
    return Corpus(items)


def _id_list(obj: dict[str, Any], key: str, path: Path, lineno: int) -> list[str]:
    value = obj.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataFormatError(f"{key!r} must be a list of candidate ids", path=path, line=lineno)
    return value


def _cand_modality(qdataset: str, positives: list[str], task_id: int, pool: Corpus | None) -> Modality:
    """Modality of the first positive found in the pool, as UniIR's eval mode picks it (positives from the query's
    own dataset first, which matters for OVEN and INFOSEEK); else the task's candidate modality."""
    if pool is not None:
        prefix = f"{DATASET_IDS[qdataset]}:"
        same = [d for d in positives if d.startswith(prefix)]
        for did in same or positives:
            cand = pool.get(did)
            if cand is not None:
                return cand.modality
    return task_modalities(task_id)[1]


def load_mbeir_queries(path: str | Path, root: str | Path, pool: Corpus | None = None) -> list[Query]:
    """Load an M-BEIR query file as :class:`~lumir.types.Query` objects.

    Each line is ``{"qid", "query_txt", "query_img_path", "query_modality", "query_src_content", "pos_cand_list",
    "neg_cand_list", "task_id"}``. ``Query.id`` is the qid, ``Query.task`` is ``"<dataset>_task<id>"`` (e.g.
    ``"mscoco_task0"``), and ``meta`` holds ``dataset_id`` (a string, as in the instruction table's keys),
    ``task_id``, ``query_modality``, ``cand_modality``, ``pos_cand_list``, ``neg_cand_list`` and, when present,
    ``src_content``. ``Query.instruction`` is left empty: instructions come from
    :func:`load_mbeir_instructions` keyed by ``(dataset_id, query_modality, cand_modality)``.

    Args:
        path: the query jsonl file.
        root: the M-BEIR root that ``query_img_path`` is relative to.
        pool: the candidate pool; when given, ``cand_modality`` is the modality of the first positive (as UniIR
            picks the instruction), otherwise the candidate modality of the task id.

    Raises:
        DataFormatError: a bad line (file and line named): bad or duplicate qid, missing ``task_id``, a declared
            modality whose fields are missing, malformed candidate lists.
    """
    path, root = Path(path), Path(root)
    out: list[Query] = []
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        qid = _required_str(obj, "qid", path, lineno)
        if qid in seen:
            raise DataFormatError(f"duplicate qid {qid!r} (first on line {seen[qid]})", path=path, line=lineno)
        seen[qid] = lineno
        dataset = _dataset_of(qid, path, lineno)
        task_id = obj.get("task_id")
        if isinstance(task_id, str) and task_id.isdigit():
            task_id = int(task_id)
        if not isinstance(task_id, int) or task_id not in MBEIR_TASKS.values():
            raise DataFormatError(
                f"query {qid!r}: 'task_id' must be one of {sorted(MBEIR_TASKS.values())}, got {task_id!r}",
                path=path,
                line=lineno,
            )
        text, image, modality = _content(
            obj, ("query_txt", "query_img_path", "query_modality"), root, f"query {qid!r}", path, lineno
        )
        positives = _id_list(obj, "pos_cand_list", path, lineno)
        meta: dict[str, Any] = {
            "dataset_id": str(DATASET_IDS[dataset]),
            "task_id": task_id,
            "query_modality": modality.value,
            "cand_modality": _cand_modality(dataset, positives, task_id, pool).value,
            "pos_cand_list": positives,
            "neg_cand_list": _id_list(obj, "neg_cand_list", path, lineno),
        }
        if obj.get("query_src_content") is not None:
            meta["src_content"] = obj["query_src_content"]
        out.append(Query(qid, text=text, image=image, meta=meta, task=f"{dataset.lower()}_task{task_id}"))
    return out


def load_mbeir_qrels(path: str | Path) -> Qrels:
    """Load an M-BEIR qrels file (``qid 0 did relevance task_id``), keeping only relevance > 0 as UniIR does.

    Raises:
        DataFormatError: a malformed line (file and line named).
    """
    qrels = read_qrels(path)
    return {qid: kept for qid, judged in qrels.items() if (kept := {d: r for d, r in judged.items() if r > 0})}


def load_mbeir_instructions(path: str | Path) -> dict[tuple[str, str, str], list[str]]:
    """Load ``query_instructions.tsv`` as ``{(dataset_id, query_modality, cand_modality): [prompt, ...]}``.

    The file has a header and the columns ``query_modality, cand_modality, dataset, dataset_id, prompt_1..n``;
    empty prompts are dropped and prompts are returned as written (UniIR applies :func:`format_string` when it
    uses one). A later row with the same key replaces an earlier one, as in UniIR.

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: a row with fewer than 4 columns (file and line named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"M-BEIR instruction file not found: {path}")
    table: dict[tuple[str, str, str], list[str]] = {}
    lines = path.read_text(encoding="utf-8").split("\n")
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.strip().split("\t")
        if len(parts) < 4:
            raise DataFormatError(
                "expected 'query_modality<TAB>cand_modality<TAB>dataset<TAB>dataset_id<TAB>prompt...'",
                path=path,
                line=lineno,
            )
        table[parts[3], parts[0], parts[1]] = [p for p in parts[4:] if p]
    return table


def _canonical(dataset: str) -> str:
    name = _NAME_BY_LOWER.get(dataset.lower())
    if name is None:
        raise ValueError(f"unknown M-BEIR dataset {dataset!r}; known: {list(DATASET_IDS)}")
    return name


def list_mbeir_tasks(root: str | Path, split: str = "test") -> list[str]:
    """Names (``"<dataset>_task<id>"``, e.g. ``"mscoco_task0"``) of the tasks with a query file for ``split``.

    Sorted by dataset, then task id. :func:`parse_task_name` splits a name into ``mbeir_task``'s arguments.
    """
    pattern = re.compile(rf"mbeir_([a-z0-9]+)_task(\d+)_{re.escape(split)}\.jsonl")
    found = []
    for p in (Path(root) / "query" / split).glob("mbeir_*.jsonl"):
        m = pattern.fullmatch(p.name)
        if m and m.group(1) in _NAME_BY_LOWER:
            found.append((m.group(1), int(m.group(2))))
    return [f"{d}_task{t}" for d, t in sorted(found)]


def parse_task_name(name: str) -> tuple[str, int]:
    """Split ``"mscoco_task0"`` into ``("mscoco", 0)``.

    Example:
        >>> parse_task_name("fashioniq_task7")
        ('fashioniq', 7)
    """
    m = re.fullmatch(r"([a-z0-9]+)_task(\d+)", name.lower())
    if m is None:
        raise ValueError(f"M-BEIR task names look like 'mscoco_task0', got {name!r}")
    return m.group(1), int(m.group(2))


def mbeir_pool_path(root: Path, name: str, split: str, pool: str) -> Path:
    """The candidate pool file of task ``name`` (e.g. ``"mscoco_task0"``); the union pool when ``pool="global"``."""
    if pool == "global":
        return root / "cand_pool" / "global" / f"mbeir_union_{split}_cand_pool.jsonl"
    local = root / "cand_pool" / "local"
    per_split = local / f"mbeir_{name}_{split}_cand_pool.jsonl"  # MSCOCO has separate val and test pools
    return per_split if per_split.is_file() else local / f"mbeir_{name}_cand_pool.jsonl"


def mbeir_task(
    root: str | Path,
    dataset: str,
    task_id: int,
    split: str = "test",
    pool: Literal["local", "global"] = "local",
    *,
    corpus: Corpus | None = None,
) -> RetrievalTask:
    """One M-BEIR task (e.g. ``mbeir_task(root, "mscoco", 0)`` = MSCOCO text -> image) as a RetrievalTask.

    Args:
        root: the M-BEIR root folder.
        dataset: dataset name, any case (``"MSCOCO"``, ``"cirr"``).
        task_id: M-BEIR task id (see :data:`MBEIR_TASKS`).
        split: ``"test"``, ``"val"`` or ``"train"``.
        pool: ``"local"`` (the task's own pool) or ``"global"`` (the union pool of the split).
        corpus: the pool already loaded, to share one global pool between tasks (then no pool file is read).

    Returns:
        A task named ``"<dataset>_task<id>"`` whose queries are those with judgments, qrels keep relevance > 0,
        modalities come from the task id and metrics from :func:`task_metrics`. ``meta`` holds ``dataset``,
        ``dataset_id``, ``task_id``, ``split``, ``pool`` and ``instructions_path`` (when the file exists).

    Raises:
        ValueError: unknown dataset, task id or pool kind.
        FileNotFoundError: a file of the layout is missing; the message names it and lists the tasks found.
    """
    if pool not in ("local", "global"):
        raise ValueError(f"pool must be 'local' or 'global', got {pool!r}")
    root = Path(root)
    dataset_name = _canonical(dataset)
    query_modality, cand_modality = task_modalities(task_id)
    name = f"{dataset_name.lower()}_task{task_id}"
    paths = {
        "queries": root / "query" / split / f"mbeir_{name}_{split}.jsonl",
        "qrels": root / "qrels" / split / f"mbeir_{name}_{split}_qrels.txt",
    }
    if corpus is None:
        paths["pool"] = mbeir_pool_path(root, name, split, pool)
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        available = list_mbeir_tasks(root, split)
        raise FileNotFoundError(
            f"M-BEIR task {name!r} ({split}, {pool} pool) is incomplete under {root}: missing {missing}; "
            f"tasks with query files for {split!r}: {available or 'none'}"
        )
    if corpus is None:
        corpus = load_mbeir_pool(paths["pool"], root)
    queries = load_mbeir_queries(paths["queries"], root, pool=corpus)
    qrels, _ = check_qrels(load_mbeir_qrels(paths["qrels"]), [q.id for q in queries], corpus.ids)
    judged = [q for q in queries if q.id in qrels]
    if len(judged) < len(queries):
        warnings.warn(
            f"{paths['queries']}: {len(queries) - len(judged)} of {len(queries)} queries have no judgment "
            "in the pool and were left out",
            UserWarning,
            stacklevel=2,
        )
    instructions = root / "instructions" / "query_instructions.tsv"
    meta: dict[str, Any] = {
        "source": "mbeir",
        "root": str(root),
        "dataset": dataset_name,
        "dataset_id": str(DATASET_IDS[dataset_name]),
        "task_id": task_id,
        "split": split,
        "pool": pool,
    }
    if instructions.is_file():
        meta["instructions_path"] = str(instructions)
    return RetrievalTask(
        name,
        judged,
        corpus,
        qrels,
        query_modality=query_modality,
        candidate_modality=cand_modality,
        metrics=task_metrics(dataset_name),
        meta=meta,
    )
