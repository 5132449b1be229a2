"""ConSE open-vocabulary math (lumir.models.conse): hand-computed vectors, fusion, settings, class names."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lumir.errors import DataFormatError
from lumir.models.conse import (
    GATED_OPEN_VOCAB,
    GateConfig,
    OpenVocabConfig,
    center_vectors,
    class_prompts,
    class_vectors,
    confidence,
    conse_vectors,
    fuse,
    fuse_gated,
    gate_values,
    imagenet_class_names,
    mean_probabilities,
    read_class_names,
    top_probabilities,
)

# three classes embedded in 2-d: "cat" = x, "dog" = y, "car" = (x + y) / sqrt 2
CLASSES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]])


def test_conse_vector_by_hand() -> None:
    probs = torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]])
    # top 2 of row 0: cat 0.5, car 0.3 -> 0.5*[1,0] + 0.3*[.7071,.7071] = [0.71213, 0.21213], normalised
    # top 2 of row 1: car 0.8, then cat/dog tie at 0.1 (topk keeps one of them)
    out = conse_vectors(probs, CLASSES, top=2)
    x, y = 0.5 + 0.3 / math.sqrt(2), 0.3 / math.sqrt(2)
    n = math.hypot(x, y)
    torch.testing.assert_close(out[0], torch.tensor([x / n, y / n]))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    # top 1 is the best class's own embedding; top = all classes is the full convex combination
    torch.testing.assert_close(conse_vectors(probs, CLASSES, top=1), torch.stack([CLASSES[0], CLASSES[2]]))
    full = probs[0] @ CLASSES
    torch.testing.assert_close(conse_vectors(probs, CLASSES, top=3)[0], full / full.norm())
    torch.testing.assert_close(conse_vectors(probs, CLASSES, top=1000)[0], full / full.norm())


def test_top_probabilities_and_mean_probabilities() -> None:
    p = torch.tensor([[0.1, 0.6, 0.3]])
    assert top_probabilities(p, 1).tolist() == [[0.0, 0.6000000238418579, 0.0]]
    assert torch.equal(top_probabilities(p, 5), p)
    with pytest.raises(ValueError, match="top must be >= 1"):
        top_probabilities(p, 0)
    a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    # softmax([2, 0]) = [e^2, 1] / (e^2 + 1); the mean with its mirror is [0.5, 0.5]
    torch.testing.assert_close(mean_probabilities(a, b), torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(mean_probabilities(a), a.softmax(dim=-1))
    with pytest.raises(ValueError, match="at least one"):
        mean_probabilities()
    with pytest.raises(ValueError, match="3 class probabilities but 2 class embeddings"):
        conse_vectors(torch.ones(1, 3), CLASSES[:2], top=1)


def test_class_vectors_average_normalised_templates() -> None:
    seen: list[list[str]] = []

    def encode(texts: list[str]) -> torch.Tensor:  # "a ..." -> [3, 4]; anything else -> [0, 2]
        seen.append(list(texts))
        return torch.tensor([[3.0, 4.0] if t.startswith("a ") else [0.0, 2.0] for t in texts])

    out = class_vectors(encode, ["cat", "dog"], ["{}", "a {}"], batch_size=3)
    # mean of [0, 1] and [0.6, 0.8] = [0.3, 0.9], normalised
    expected = torch.tensor([0.3, 0.9]) / math.hypot(0.3, 0.9)
    torch.testing.assert_close(out, torch.stack([expected, expected]))
    assert seen == [["cat", "dog", "a cat"], ["a dog"]]  # template-major, in batches of 3
    assert class_prompts(["cat"], ["a photo of a {}."]) == ["a photo of a cat."]
    with pytest.raises(ValueError, match=r"exactly one '\{\}'"):
        class_prompts(["cat"], ["a photo"])


def test_fuse_weights_the_two_similarities() -> None:
    h = torch.nn.functional.normalize(torch.randn(4, 6, generator=torch.Generator().manual_seed(0)), dim=-1)
    o = torch.nn.functional.normalize(torch.randn(4, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    for w in (0.0, 0.3, 1.0):
        v = fuse(h * 2.0, o * 5.0, w)  # parts are normalised first
        torch.testing.assert_close(v.norm(dim=1), torch.ones(4))
        torch.testing.assert_close(v @ v.T, w * (h @ h.T) + (1 - w) * (o @ o.T))
    with pytest.raises(ValueError, match=r"weight must be in \[0, 1\]"):
        fuse(h, o, 1.5)
    with pytest.raises(ValueError, match="4 heads rows but 3"):
        fuse(h, o[:3], 0.5)


def test_open_vocab_settings_parse_and_round_trip() -> None:
    default = OpenVocabConfig()
    assert OpenVocabConfig.parse(True) == OpenVocabConfig.parse(1) == default
    assert OpenVocabConfig.parse(False) is None and OpenVocabConfig.parse(0) is None
    assert OpenVocabConfig.parse(None) is None
    custom = OpenVocabConfig.parse({"weight": 0.25, "top": 3, "templates": "{}", "center": False, "mirror": True})
    assert custom == OpenVocabConfig(0.25, 3, ("{}",), center=False, mirror=True)
    expected = {"weight": 0.25, "top": 3, "templates": ["{}"], "center": False, "mirror": True}
    assert custom.to_dict() == expected
    assert custom is not None and OpenVocabConfig.parse(custom.to_dict()) == custom
    assert OpenVocabConfig.parse({"top": 7}) == OpenVocabConfig(
        default.weight, 7, default.templates, default.center, default.mirror
    )
    # the settings chosen on the Flickr8k training holdout (benchmarks/mini_open_vocab.py sweep, rule 2)
    assert default.to_dict() == {
        "weight": 0.8,
        "top": 10,
        "templates": ["a photo of a {}."],
        "center": True,
        "mirror": False,
    }
    with pytest.raises(ValueError, match="unknown open_vocab key"):
        OpenVocabConfig.parse({"wieght": 0.5})
    with pytest.raises(ValueError, match=r"weight must be in \[0, 1\]"):
        OpenVocabConfig.parse({"weight": 2})
    with pytest.raises(ValueError, match="true/false"):
        OpenVocabConfig.parse("yes")  # type: ignore[arg-type]


def test_shipped_imagenet_class_names() -> None:
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[0] == "tench" and names[281:286] == (
        "tabby cat",
        "tiger cat",
        "Persian cat",
        "Siamese cat",
        "Egyptian Mau",
    )
    assert names[967] == "espresso" and names[670] == "vespa" and names[999] == "toilet paper"
    assert all(n and n == n.strip() and "\t" not in n for n in names)


def test_class_name_table_errors(tmp_path: Path) -> None:
    table = tmp_path / "c.tsv"
    table.write_text("# comment\nindex\tname\n0\tcat\n2\tdog\n")
    with pytest.raises(DataFormatError, match=r"c\.tsv, line 4: expected '1<TAB>name'"):
        read_class_names(table)
    table.write_text("idx\tname\n0\tcat\n")
    with pytest.raises(DataFormatError, match="header"):
        read_class_names(table)
    table.write_text("index\tname\n0\tcat\n1\tdog\n")
    assert read_class_names(table) == ["cat", "dog"]


def test_centring_removes_the_shared_direction() -> None:
    # two vectors sharing a common component [0, 0, 1]: cosine 0.5 before centring, 0 after
    a, b = torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([[0.0, 1.0, 1.0]])
    mean = torch.tensor([0.0, 0.0, 1.0])
    assert round(float(center_vectors(a, None) @ center_vectors(b, None).T), 4) == 0.5
    assert float(center_vectors(a, mean) @ center_vectors(b, mean).T) == 0.0
    torch.testing.assert_close(center_vectors(a, mean), torch.tensor([[1.0, 0.0, 0.0]]))


def test_confidence_measures_by_hand() -> None:
    p = torch.tensor([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(confidence(p, "top1"), torch.tensor([0.7, 1 / 3, 1.0]))
    torch.testing.assert_close(confidence(p, "topk", top=2), torch.tensor([0.9, 2 / 3, 1.0]))
    torch.testing.assert_close(confidence(p, "topk", top=99), torch.ones(3))  # more than the classes: all of them
    h0 = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    # 1 - entropy / log(3): one class -> 1 (0 * log 0 counts as 0), uniform -> 0
    torch.testing.assert_close(confidence(p, "entropy"), torch.tensor([1 - h0 / math.log(3), 0.0, 1.0]))
    with pytest.raises(ValueError, match="unknown confidence measure 'max'"):
        confidence(p, "max")


def test_gate_values_ramp_and_power() -> None:
    c = torch.tensor([0.0, 0.2, 0.3, 0.45, 0.6, 0.9])
    torch.testing.assert_close(gate_values(c, 0.3, 0.6), torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0, 1.0]))
    torch.testing.assert_close(gate_values(c, 0.3, 0.6, power=2.0), torch.tensor([0.0, 0.0, 0.0, 0.25, 1.0, 1.0]))
    torch.testing.assert_close(gate_values(c, 0.0, 1.0, power=0.5), c.sqrt())
    with pytest.raises(ValueError, match="0 <= low < high <= 1"):
        gate_values(c, 0.6, 0.6)
    with pytest.raises(ValueError, match="power must be > 0"):
        gate_values(c, 0.0, 1.0, power=0.0)


def test_fuse_gated_scales_the_photo_part_then_normalises() -> None:
    gen = torch.Generator().manual_seed(2)
    h, o = (torch.nn.functional.normalize(torch.randn(3, d, generator=gen), dim=-1) for d in (6, 4))
    th, to = (torch.nn.functional.normalize(torch.randn(5, d, generator=gen), dim=-1) for d in (6, 4))
    w, g = 0.6, torch.tensor([1.0, 0.5, 0.0])
    v = fuse_gated(h * 3.0, o * 2.0, w, g)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(v[0], fuse(h, o, w)[0])  # g = 1: the ungated vector
    torch.testing.assert_close(v[2], torch.cat([h[2], torch.zeros(4)]))  # g = 0: the heads vector alone
    # against ungated (text) vectors: (w <h, h'> + (1 - w) g <o, o'>) / sqrt(w + (1 - w) g^2)
    text = fuse(th, to, w)
    expected = (w * th @ h.T + (1 - w) * (to @ o.T) * g) / torch.sqrt(w + (1 - w) * g**2)
    torch.testing.assert_close(text @ v.T, expected)
    with pytest.raises(ValueError, match=r"gate must have shape \(3,\)"):
        fuse_gated(h, o, w, torch.ones(2))


def test_gate_settings_parse_and_round_trip() -> None:
    gate = {"measure": "entropy", "low": 0.2, "high": 0.7, "power": 2.0}
    cfg = OpenVocabConfig.parse({"weight": 0.5, "gate": gate})
    assert cfg is not None and cfg.gate == GateConfig("entropy", 0.2, 0.7, 2.0)
    assert cfg.to_dict()["gate"] == gate and OpenVocabConfig.parse(cfg.to_dict()) == cfg
    # no gate: the spec has no "gate" key (specs of ungated open-vocabulary indexes are unchanged)
    assert "gate" not in OpenVocabConfig().to_dict() and OpenVocabConfig.parse({"gate": None}) == OpenVocabConfig()
    assert GateConfig.parse({"low": 0.3}) == GateConfig("top1", 0.3, 1.0, 1.0)
    p = torch.tensor([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])
    torch.testing.assert_close(GateConfig("topk", 0.8, 0.9)(p, top=2), torch.tensor([0.0, 1.0]))
    # "gated": the rule-3 pick of benchmarks/mini_open_vocab_gate.py sweep
    assert OpenVocabConfig.parse("gated") is GATED_OPEN_VOCAB
    assert GATED_OPEN_VOCAB.to_dict() == {
        "weight": 0.8,
        "top": 3,
        "templates": ["a photo of a {}."],
        "center": False,
        "mirror": True,
        "gate": {"measure": "top1", "low": 0.0, "high": 1.0, "power": 0.5},
    }
    with pytest.raises(ValueError, match="unknown open_vocab gate key"):
        OpenVocabConfig.parse({"gate": {"lo": 0.1}})
    with pytest.raises(ValueError, match="unknown gate measure"):
        GateConfig("max")
    with pytest.raises(ValueError, match="0 <= low < high <= 1"):
        GateConfig(low=0.5, high=0.4)
    with pytest.raises(ValueError, match="mapping of settings or null"):
        OpenVocabConfig.parse({"gate": 1})
