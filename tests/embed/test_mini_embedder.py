"""The shipped lumir-mini embedder: registry and spec round trip, embedding rules (heads part and open-vocabulary
ConSE part), the off switch, real-photo sanity, CLI use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import skimage.data as skimage_data
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from lumir.embed import load_embedder
from lumir.embed.mini import MiniEmbedder, imagenet_class_vectors, shipped_mini_path
from lumir.models.conse import GATED_OPEN_VOCAB, OpenVocabConfig, center_vectors, conse_vectors, mean_probabilities
from lumir.models.pooling import l2_normalize
from lumir.types import ImageRef, Item

PHOTOS = {"cat": "chelsea", "coffee": "coffee", "astronaut": "astronaut", "rocket": "rocket"}
HEADS_DIM, MINILM_DIM = 256, 384


@pytest.fixture(scope="module")
def mini() -> MiniEmbedder:
    embedder = load_embedder("mini")
    assert isinstance(embedder, MiniEmbedder)
    return embedder


@pytest.fixture(scope="module")
def mini_ov() -> MiniEmbedder:
    embedder = load_embedder("mini:open_vocab=1")
    assert isinstance(embedder, MiniEmbedder)
    return embedder


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name, func in PHOTOS.items():
        Image.fromarray(getattr(skimage_data, func)()).convert("RGB").save(folder / f"{name}.jpg")
    return folder


def _photos(folder: Path) -> list[Item]:
    return [Item(name, image=ImageRef(str(folder / f"{name}.jpg"))) for name in PHOTOS]


def test_shipped_model_is_registered_and_its_spec_round_trips(mini: MiniEmbedder, mini_ov: MiniEmbedder) -> None:
    assert (shipped_mini_path() / "config.json").is_file() and (shipped_mini_path() / "heads.safetensors").is_file()
    # the default: heads only, the spec of lumir-mini before the open-vocabulary option (old indexes still match)
    assert mini.spec() == {"type": "mini", "dtype": "float32"}
    assert mini.dim == mini.heads.dim == HEADS_DIM and mini.open_vocab is None
    assert load_embedder(mini.spec()).spec() == mini.spec()
    assert load_embedder("mini:open_vocab=0").spec() == mini.spec()
    assert mini.heads.meta["data"]["split"] == "train_4k"  # trained on the training photos only
    # open vocabulary: the settings chosen on the training holdout, recorded in the spec
    assert mini_ov.spec() == {"type": "mini", "open_vocab": OpenVocabConfig().to_dict(), "dtype": "float32"}
    assert mini_ov.open_vocab == OpenVocabConfig() and mini_ov.dim == HEADS_DIM + MINILM_DIM == 640
    assert load_embedder(mini_ov.spec()).spec() == mini_ov.spec()
    with pytest.raises(ValueError, match="float32 only"):
        MiniEmbedder(dtype="bfloat16")
    with pytest.raises(RuntimeError, match="open-vocabulary part is off"):
        mini.class_vectors()


def test_open_vocab_settings_and_heads_from_a_folder(mini_ov: MiniEmbedder) -> None:
    folder = load_embedder(f"mini:{shipped_mini_path()}")
    assert folder.spec() == {"type": "mini", "path": str(shipped_mini_path()), "dtype": "float32"}
    custom = {"weight": 0.3, "top": 3, "templates": ["{}"], "center": False, "mirror": True}
    on = load_embedder({"type": "mini", "path": str(shipped_mini_path()), "open_vocab": custom})
    assert on.spec()["open_vocab"] == custom and on.dim == 640
    assert load_embedder(on.spec()).spec() == on.spec()
    assert (
        load_embedder(f"mini:{shipped_mini_path()},open_vocab=1").spec()["open_vocab"] == mini_ov.spec()["open_vocab"]
    )
    with pytest.raises(ValueError, match="unknown open_vocab key"):
        load_embedder({"type": "mini", "open_vocab": {"wieght": 0.5}})


def _heads_only(emb: MiniEmbedder, photos: list[Item]) -> torch.Tensor:
    """What lumir-mini computed before the open-vocabulary option, step by step."""
    with torch.no_grad():
        pixels = emb.images.pixels([p.image.load() for p in photos])  # type: ignore[union-attr]
        a = F.normalize(emb.heads.image_head(emb.images.from_pixels(pixels)), dim=-1)
        b = F.normalize(emb.heads.image_head(emb.images.from_pixels(pixels, mirror=True)), dim=-1)
    return l2_normalize(F.normalize(a + b, dim=-1))


def test_the_off_switch_gives_todays_vectors_exactly(mini: MiniEmbedder, photo_dir: Path) -> None:
    photos = _photos(photo_dir)
    img = mini.embed(photos, role="candidate")
    assert img.shape == (4, HEADS_DIM)
    assert torch.equal(img, _heads_only(mini, photos))
    txt = mini.embed([Item("t", text="a cat")], role="query")
    from lumir.models.mini import text_tower_features

    expected = l2_normalize(F.normalize(mini.heads.text_head(text_tower_features(mini.text_model, ["a cat"])), dim=-1))
    assert torch.equal(txt, expected)
    composed = mini.embed([Item("c", text="a cat", image=photos[0].image)], role="query")
    torch.testing.assert_close(composed, F.normalize(img[:1] + txt, dim=-1), rtol=1e-4, atol=1e-5)


def test_open_vocab_vectors_follow_the_documented_rules(
    mini_ov: MiniEmbedder, mini: MiniEmbedder, photo_dir: Path
) -> None:
    photos = _photos(photo_dir)
    cfg = mini_ov.open_vocab
    assert cfg is not None
    hw, ow = cfg.weight**0.5, (1 - cfg.weight) ** 0.5
    img = mini_ov.embed(photos, role="candidate")
    off = mini.embed(photos, role="candidate")
    torch.testing.assert_close(img.norm(dim=1), torch.ones(4))
    # heads part: today's vector scaled by sqrt(w)
    torch.testing.assert_close(img[:, :HEADS_DIM], hw * off, rtol=1e-5, atol=1e-6)
    # ConSE part: top-T of the photo's ImageNet probabilities over the class-name embeddings
    with torch.no_grad():
        pixels = mini_ov.images.pixels([p.image.load() for p in photos])  # type: ignore[union-attr]
        views = (False, True) if cfg.mirror else (False,)  # the photo (and its mirror image, when asked)
        logits = [mini_ov.images.class_logits(mini_ov.images.from_pixels(pixels, mirror=m)) for m in views]
    mean = mini_ov.class_vectors().mean(dim=0) if cfg.center else None  # centring on the mean class-name embedding
    conse = center_vectors(conse_vectors(mean_probabilities(*logits), mini_ov.class_vectors(), cfg.top), mean)
    sentence = center_vectors(mini_ov.text_model.encode(["a cat"]), mean)
    torch.testing.assert_close(img[:, HEADS_DIM:], ow * conse, rtol=1e-5, atol=1e-6)
    # text: heads part as before, open-vocabulary part = MiniLM's own sentence embedding (centred when asked)
    txt = mini_ov.embed([Item("t", text="a cat")], role="query")
    txt_off = mini.embed([Item("t", text="a cat")], role="query")
    torch.testing.assert_close(txt[:, :HEADS_DIM], hw * txt_off, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(txt[:, HEADS_DIM:], ow * sentence, rtol=1e-5, atol=1e-6)
    # scores are w * heads cosine + (1 - w) * ConSE cosine
    torch.testing.assert_close(txt @ img.T, cfg.weight * (txt_off @ off.T) + (1 - cfg.weight) * (sentence @ conse.T))
    # composed: each part is the normalised sum of the photo's and the text's parts
    composed = mini_ov.embed([Item("c", text="a cat", image=photos[0].image)], role="query")
    heads = F.normalize(off[:1] + txt_off, dim=-1)
    ov = F.normalize(conse[:1] + sentence, dim=-1)
    torch.testing.assert_close(composed, torch.cat([hw * heads, ow * ov], dim=1), rtol=1e-4, atol=1e-5)
    # class-name embeddings are computed once per process and shared
    assert imagenet_class_vectors(cfg.templates) is mini_ov.class_vectors()
    assert mini_ov.class_vectors().shape == (1000, MINILM_DIM)


def test_gated_open_vocab_vectors_follow_the_documented_rules(mini: MiniEmbedder, photo_dir: Path) -> None:
    gated = load_embedder("mini:open_vocab=gated")
    assert isinstance(gated, MiniEmbedder) and gated.open_vocab == GATED_OPEN_VOCAB
    gate = {"measure": "top1", "low": 0.0, "high": 1.0, "power": 0.5}  # the rule-3 pick of the gate sweep
    assert gated.spec()["open_vocab"]["gate"] == gate and load_embedder(gated.spec()).spec() == gated.spec()
    assert gated.dim == HEADS_DIM + MINILM_DIM
    ungated_cfg = {k: v for k, v in gated.spec()["open_vocab"].items() if k != "gate"}  # same settings, no gate
    ungated = load_embedder({"type": "mini", "open_vocab": ungated_cfg})
    photos = _photos(photo_dir)
    cfg = GATED_OPEN_VOCAB
    with torch.no_grad():
        pixels = gated.images.pixels([p.image.load() for p in photos])  # type: ignore[union-attr]
        logits = [gated.images.class_logits(gated.images.from_pixels(pixels, mirror=m)) for m in (False, True)]
    g = mean_probabilities(*logits).max(dim=1).values.sqrt()  # sqrt of the top-1 ImageNet probability
    assert bool(((g > 0.1) & (g < 0.99)).all())  # partly on for every sample photo
    plain = ungated.embed(photos, role="candidate")
    hw, ow = cfg.weight**0.5, (1 - cfg.weight) ** 0.5
    expected = F.normalize(torch.cat([plain[:, :HEADS_DIM], plain[:, HEADS_DIM:] * g[:, None]], dim=1), dim=-1)
    img = gated.embed(photos, role="candidate")
    torch.testing.assert_close(img, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(img, plain, atol=1e-3)
    torch.testing.assert_close(F.normalize(img[:, :HEADS_DIM], dim=-1), mini.embed(photos, role="candidate"))
    # texts keep their ConSE part: the same vectors as without the gate
    cat = [Item("t", text="a cat")]
    txt = gated.embed(cat, role="query")
    torch.testing.assert_close(txt, ungated.embed(cat, role="query"))
    # composed: heads part as before; ConSE part = normalize(g * photo's part + text's part), then w as for texts
    composed = gated.embed([Item("c", text="a cat", image=photos[1].image)], role="query")
    heads = F.normalize(mini.embed(photos[1:2], role="candidate") + mini.embed(cat, role="query"), dim=-1)
    ov = F.normalize(g[1] * plain[1:2, HEADS_DIM:] + txt[:, HEADS_DIM:], dim=-1)
    torch.testing.assert_close(composed, torch.cat([hw * heads, ow * ov], dim=1), rtol=1e-4, atol=1e-5)


def test_real_photos_match_their_descriptions(mini_ov: MiniEmbedder, mini: MiniEmbedder, photo_dir: Path) -> None:
    texts = {
        "a close up of a cat": 0,
        "a cup of coffee": 1,
        "a woman in an orange suit in front of a flag": 2,
        "a rocket launch": 3,
    }
    queries = [Item(str(i), text=t) for i, t in enumerate(texts)]
    sim = mini_ov.embed(queries, role="query") @ mini_ov.embed(_photos(photo_dir), role="candidate").T
    assert sim.argmax(dim=1).tolist() == list(texts.values())
    # heads only (Flickr8k-trained: people, animals and scenes), the coffee cup is missed (documented)
    off = mini.embed(queries, role="query") @ mini.embed(_photos(photo_dir), role="candidate").T
    assert off.argmax(dim=1).tolist()[1] != 1


@pytest.mark.parametrize(
    ("embedder", "text", "top"), [("mini", "a cat", "cat"), ("mini:open_vocab=1", "espresso", "coffee")]
)
def test_index_and_search_from_the_cli(photo_dir: Path, tmp_path: Path, embedder: str, text: str, top: str) -> None:
    from lumir.cli.main import app

    runner = CliRunner()
    built = runner.invoke(app, ["index", str(photo_dir), str(tmp_path / "idx"), "--embedder", embedder])
    assert built.exit_code == 0, built.output
    found = runner.invoke(app, ["search", str(tmp_path / "idx"), "--text", text, "-k", "2", "--json"])
    assert found.exit_code == 0, found.output
    lines = [json.loads(x[x.index('{"query"') :]) for x in found.output.splitlines() if '{"query"' in x]
    assert len(lines) == 1 and len(lines[0]["hits"]) == 2
    assert Path(lines[0]["hits"][0]["id"]).stem == top


@pytest.mark.gpu
def test_cuda_embeddings_match_cpu(mini: MiniEmbedder, mini_ov: MiniEmbedder, photo_dir: Path) -> None:
    items = [
        *_photos(photo_dir),
        Item("t", text="a cat"),
        Item("c", text="at night", image=_photos(photo_dir)[3].image),
    ]
    for cpu, open_vocab in ((mini, None), (mini_ov, True)):
        gpu = MiniEmbedder(device="cuda", open_vocab=open_vocab)
        assert gpu.spec() == cpu.spec()
        for role in ("candidate", "query"):
            torch.testing.assert_close(gpu.embed(items, role=role), cpu.embed(items, role=role), rtol=1e-3, atol=1e-3)
