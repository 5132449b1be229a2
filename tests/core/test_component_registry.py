"""lumir.registry: one spec format for every kind; every registered type round-trips ``build(spec).spec()``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from lumir.registry import REGISTRIES, Registry, build, parse_options, parse_scalar


# ------------------------------------------------------------------------------------------------- spec strings
def test_spec_strings_parse_to_spec_dicts() -> None:
    embedders, rerankers, chats = REGISTRIES["embedder"], REGISTRIES["reranker"], REGISTRIES["chat_model"]
    assert embedders.parse("st:/models/x") == {"type": "sentence-transformers", "path": "/models/x"}
    assert embedders.parse("mini:runs/heads,device=cpu") == {"type": "mini", "path": "runs/heads", "device": "cpu"}
    assert rerankers.parse("yes-no:llm=qwen-coder,k=20,alpha=0.5") == {
        "type": "yes-no",
        "llm": "qwen-coder",
        "k": 20,
        "alpha": 0.5,
    }
    assert rerankers.parse("{type: lamra, k: 3}") == {"type": "yes-no", "k": 3}  # inline YAML, alias resolved
    assert chats.parse("openai:http://127.0.0.1:8000/v1#qwen") == {
        "type": "openai",
        "base_url": "http://127.0.0.1:8000/v1",
        "model": "qwen",
    }
    assert chats.parse("smollm2@transformers") == {"type": "smollm2-135m-instruct", "backend": "transformers",
                                                    "name": "smollm2-135m-instruct"}  # fmt: skip
    assert REGISTRIES["index"].parse("faiss:IVF64,Flat") == {"type": "faiss", "factory": "IVF64,Flat"}
    assert parse_options("a=1,b=x") == {"a": 1, "b": "x"} and parse_options("IVF64,Flat") is None
    assert [parse_scalar(s) for s in ("0.5", "-3", "False", "null", "yes")] == [0.5, -3, False, None, "yes"]


def test_unknown_names_list_the_known_ones_and_missing_extras_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        KeyError, match=r"unknown reranker 'best'; known: action-aware, listwise, true-false, yes-no \(aliases:"
    ):
        REGISTRIES["reranker"].parse("best")
    with pytest.raises(KeyError, match="has no 'type'"):
        REGISTRIES["index"].normalize({"dim": 3})
    with pytest.raises(KeyError, match="unknown component kind"):
        build("widget", {"type": "x"})
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"pip install 'lumir\[faiss\]'"):
        build("index", {"type": "faiss", "dim": 4, "factory": "Flat"})


def test_register_aliases_and_validation() -> None:
    reg: Registry[Any] = Registry("widget")
    reg.register("round", dict, aliases=("circle",), defaults={"sides": 0})
    assert reg.build("circle") == {"sides": 0} and reg.build("round:sides=2") == {"sides": 2}
    with pytest.raises(ValueError, match="is taken"):
        reg.register("square", dict, aliases=("circle",))
    with pytest.raises(ValueError, match="contain no"):
        reg.register("a:b", dict)
    reg.unregister("circle")
    assert "round" not in reg and len(reg) == 0


# ------------------------------------------------------------------------------------------------- round trips
def _scripted(**options: Any) -> dict[str, Any]:
    return {"type": "scripted", "replies": {}, "default_reply": "A dog.", **options}


def _beir_dir(root: Path) -> Path:
    folder = root / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "", "text": "aspirin"}) + "\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "aspirin?"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


def _karpathy(root: Path) -> dict[str, Any]:
    (root / "kimg").mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "kimg" / "a.jpg")
    (root / "k.json").write_text(json.dumps([{"image": "a.jpg", "caption": ["a red square"]}]))
    return {"type": "karpathy", "path": str(root / "k.json"), "image_root": str(root / "kimg")}


def _jsonl(root: Path) -> Path:
    path = root / "items.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "hello"}) + "\n")
    return path


def _folder(root: Path) -> Path:
    (root / "photos").mkdir()
    Image.new("RGB", (8, 8)).save(root / "photos" / "p.png")
    return root / "photos"


def _flickr(root: Path) -> Path:
    from flickr8k_files import write_tiny_flickr8k

    return write_tiny_flickr8k(root / "data", crops_per_photo=1)


Case = Callable[[Path], Any]
"""tmp_path -> a spec (string or mapping) of one registered type."""

COMPONENT_CASES: dict[tuple[str, str], Case] = {
    ("embedder", "minilm"): lambda _: "minilm",
    ("embedder", "mini"): lambda _: "mini",
    ("embedder", "sentence-transformers"): lambda _: {"type": "sentence-transformers", "path": str(_minilm())},
    ("embedder", "clip"): lambda tmp: f"clip:{_tiny_clip(tmp)}",
    ("embedder", "hash"): lambda _: "hash:16",
    ("embedder", "color"): lambda _: "color",
    ("embedder", "mllm"): lambda tmp: f"mllm:{_tiny_lm(tmp)}",
    ("index", "flat"): lambda _: {"type": "flat", "dim": 8, "chunk_size": 64},
    ("index", "faiss"): lambda _: {"type": "faiss", "dim": 8, "factory": "HNSW8", "nprobe": 4},
    ("chat_model", "smollm2-135m-instruct"): lambda _: {"type": "smollm2", "n_ctx": 256, "n_threads": 1},
    ("chat_model", "qwen2.5-coder-0.5b-instruct"): lambda _: {"type": "qwen-coder", "n_ctx": 256, "n_threads": 1},
    ("chat_model", "llama-cpp"): lambda _: {"type": "llama-cpp", "model_path": str(_gguf()), "n_ctx": 128},
    ("chat_model", "transformers"): lambda tmp: f"hf:{_tiny_lm(tmp)}",
    ("chat_model", "transformers-gguf"): lambda _: {"type": "transformers-gguf", "gguf_path": str(_gguf())},
    ("chat_model", "openai"): lambda _: "openai:http://127.0.0.1:9/v1#m",
    ("chat_model", "cached"): lambda tmp: {"type": "cached", "model": _scripted(), "path": str(tmp / "c.sqlite")},
    ("chat_model", "scripted"): lambda _: _scripted(),
    ("reranker", "true-false"): lambda _: {"type": "true-false", "llm": _scripted(), "k": 3},
    ("reranker", "yes-no"): lambda _: {"type": "yes-no", "llm": _scripted(), "alpha": 0.2, "normalize": "minmax"},
    ("reranker", "listwise"): lambda _: {"type": "listwise", "llm": _scripted(), "window": 3},
    ("reranker", "action-aware"): lambda tmp: {"type": "lamp", "model": str(_action_model(tmp)), "k": 3},
    ("rewriter", "template"): lambda _: "template:a photo of {text}",
    ("rewriter", "llm"): lambda _: {"type": "llms-rewrite", "llm": _scripted(), "similarity": "color"},
    ("rewriter", "trained"): lambda tmp: f"trained:{_tiny_lm(tmp)},max_new_tokens=8,llm_cache={tmp / 'c.sqlite'}",
    ("augmenter", "captioner"): lambda _: {"type": "captioner", "models": {"v": _scripted()}, "max_new_tokens": 9},
    ("augmenter", "paraphraser"): lambda _: {"type": "paraphrase", "models": ["smollm2"], "max_new_tokens": 12},
    ("augmenter", "knowledge"): lambda _: {"type": "knowledge", "llm": _scripted(), "max_retries": 1},
}
"""A spec per registered component type; each builds, reports its spec, and rebuilds to the same spec."""

TASK_CASES: dict[str, Case] = {
    "beir": lambda tmp: f"beir:{_beir_dir(tmp)}",
    "scifact": lambda _: "scifact",
    "flickr8k": lambda tmp: f"flickr8k:{_flickr(tmp)}",
    "flickr8k-union": lambda tmp: f"flickr8k-union:{_flickr(tmp)}:test_1k",
    "karpathy": _karpathy,
    "mbeir": lambda tmp: f"mbeir:{_mbeir(tmp)}:mscoco_task0",
    "toy": lambda _: "toy",
}
SOURCE_CASES: dict[str, Case] = {
    "jsonl": lambda tmp: {"type": "jsonl", "path": str(_jsonl(tmp))},
    "folder": lambda tmp: {"type": "folder", "path": str(_folder(tmp))},
    "flickr8k": lambda tmp: {"type": "flickr8k", "path": str(_flickr(tmp)), "split": "test_1k"},
    "flickr8k-captions": lambda tmp: {"type": "flickr8k-captions", "path": str(_flickr(tmp)), "split": "test_1k"},
    "beir": lambda tmp: {"type": "beir", "path": str(_beir_dir(tmp))},
    "mbeir": lambda tmp: {"type": "mbeir", "path": str(_mbeir(tmp) / "cand_pool" / "local" / _POOL)},
}
_POOL = "mbeir_mscoco_task0_test_cand_pool.jsonl"
SLOW_CASES = {("chat_model", "transformers-gguf")}  # dequantises SmolLM2 twice: ~45 s on 2 cores


def _minilm() -> Path:
    from lumir.models.text import minilm_path

    return minilm_path()


def _gguf() -> Path:
    pytest.importorskip("llama_cpp")
    from lumir.models.chat.registry import gguf_path

    return gguf_path("smollm2")


def _tiny_clip(tmp: Path) -> Path:
    from lumir.testing.tiny import save_tiny_clip

    return save_tiny_clip(tmp / "clip")


def _action_model(tmp: Path) -> Path:
    from lumir.models.action_model import ActionAwareModel

    spec = {"backbone": {"kind": "clip", "path": str(_tiny_clip(tmp))}, "prompt": {"num_triplets": 2, "heads": 2}}
    return ActionAwareModel.build(spec).save(tmp / "lamp")


def _tiny_lm(tmp: Path) -> Path:
    from lumir.testing.tiny import save_tiny_lm

    return save_tiny_lm(tmp / "lm")


def _mbeir(tmp: Path) -> Path:
    from mbeir_files import write_tiny_mbeir

    return write_tiny_mbeir(tmp / "mbeir")


def test_every_registered_type_has_a_round_trip_case() -> None:
    components = {(kind, e.name) for kind, reg in REGISTRIES.items() if kind not in ("task", "source", "recipe")
                  for e in reg}  # fmt: skip
    assert components == set(COMPONENT_CASES), "add a case for each new registered type"
    assert {e.name for e in REGISTRIES["task"]} == set(TASK_CASES)
    assert {e.name for e in REGISTRIES["source"]} == set(SOURCE_CASES)


@pytest.mark.parametrize(
    ("kind", "name"),
    [pytest.param(*case, marks=pytest.mark.slow) if case in SLOW_CASES else case for case in sorted(COMPONENT_CASES)],
)
def test_component_spec_round_trip(kind: str, name: str, tmp_path: Path) -> None:
    if (kind, name) == ("chat_model", "transformers-gguf"):
        pytest.importorskip("gguf")
    spec = COMPONENT_CASES[(kind, name)](tmp_path)
    first = build(kind, spec)
    described = first.spec()
    assert described["type"] == name
    assert json.loads(json.dumps(described)) == described  # JSON-serialisable
    again = build(kind, described)
    assert again.spec() == described
    assert type(again) is type(first)


@pytest.mark.parametrize("name", sorted(TASK_CASES))
def test_task_spec_round_trip(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from lumir.eval.tasks import load_tasks

    if name == "scifact":
        request.getfixturevalue("data_root")
    tasks = load_tasks(TASK_CASES[name](tmp_path))
    for task in tasks:
        (again,) = load_tasks(task.spec())
        assert again.name == task.name
        assert [q.id for q in again.queries] == [q.id for q in task.queries]
        assert again.corpus.ids == task.corpus.ids and again.qrels == task.qrels


@pytest.mark.parametrize("name", sorted(SOURCE_CASES))
def test_source_spec_round_trip(name: str, tmp_path: Path) -> None:
    corpus = build("source", SOURCE_CASES[name](tmp_path))
    assert corpus.source is not None and corpus.source["type"] == name
    again = build("source", corpus.source)
    assert again.ids == corpus.ids and again.source == corpus.source


def test_recipe_kinds_resolve_to_runners() -> None:
    recipes = REGISTRIES["recipe"]
    assert recipes.names() == ["embedder", "mini", "prompt_tuning", "reranker", "rewriter"]
    assert all(callable(recipes.load(name)) for name in recipes.names())
