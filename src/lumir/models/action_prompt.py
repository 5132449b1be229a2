"""Action-aware multi-modal prompt tuning (LAMP; action-aware prompt tuning paper, §3.3, eq. 4-9).

Knowledge about a caption (action triplets and action-state descriptions, :mod:`lumir.augment.knowledge`) becomes
prompt tokens that steer an image encoder, so the same photo gets a different embedding for different texts:

- **triplet prompts** ``p_t`` (eq. 4-5): each triplet's subject, action and object are embedded with the text
  model's word embeddings (mean over an element's tokens), concatenated (``3 * d_w``), projected to ``d`` and encoded
  over the ``K`` triplets by a small transformer (:class:`TripletEncoder`);
- **state prompts** ``p_s``: "Fine-grained state description of action triplet <s, a, o> is [description]" through
  the frozen text encoder (precomputed, see :mod:`lumir.models.action_backbones`), projected to ``d`` when the text
  width differs (the paper has ``d`` for both; a projection is our addition for towers of different widths);
- the shared **prompt adapter** (eq. 6, :class:`PromptAdapter`): ``ReLU(LN(p) W_down) W_up``, ``d -> t -> d``;
- the **action-aware adaptive interaction module** (AIM, eq. 7-8, :class:`AdaptiveInteraction`): cross-attention of
  the adapted prompts (queries) to the patch embeddings ``E_0``, self-attention over each prompt set giving values
  ``V^t, V^s`` and attention matrices ``A^t, A^s``, ``V = MLP([V^t, V^s])`` and ``Ṽ = (λ A^t + (1 - λ) A^s) V`` with
  λ = 0.7; ``interaction="cat"`` is Table 3's "replace AIM with CAT" (the adapted prompts concatenated instead);
- **visual prompts** (eq. 9): ``N`` learnable tokens appended after the action-enhanced tokens. The layers before
  ``early_layers`` see these adapter prompts; from ``early_layers`` on each layer has its own independent prompt
  tokens (deep VPT), which replace the prompt slots. The paper's values of the split and of ``N`` are in its
  supplement, which is not available; ours are configuration (:class:`ActionPromptConfig`).

Ablations (Tables 2-3) are configuration: ``use_triplets``, ``use_states``, ``triplet_source="handcrafted"`` (the
triplet prompt is the frozen text encoder's embedding of "A photo capturing a [subject] performing [action] in
relation to [object]."), ``num_visual_prompts=0`` (no "Vis"), and ``use_triplets=use_states=False`` (w/o action
knowledge: plain visual prompt tuning).

The backbone (:mod:`lumir.models.action_backbones`) stays frozen; only this module's parameters train.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "HANDCRAFTED_TEMPLATE",
    "STATE_TEMPLATE",
    "ActionPromptConfig",
    "ActionPrompter",
    "AdaptiveInteraction",
    "KnowledgeBatch",
    "PromptAdapter",
    "PromptableBackbone",
    "TripletEncoder",
    "handcrafted_text",
    "state_text",
]

STATE_TEMPLATE = "Fine-grained state description of action triplet <{subject}, {action}, {object}> is {description}"
"""The state prompt template of §3.3 ("Action State Prompts")."""
HANDCRAFTED_TEMPLATE = "A photo capturing a {subject} performing {action} in relation to {object}."
"""Table 2's hand-crafted triplet template."""


def state_text(triplet: tuple[str, str, str] | list[str], description: str) -> str:
    """The state prompt of one triplet.

    Example:
        >>> state_text(("girl", "study", "laptop"), "She focuses on the screen.")
        'Fine-grained state description of action triplet <girl, study, laptop> is She focuses on the screen.'
    """
    s, a, o = triplet
    return STATE_TEMPLATE.format(subject=s, action=a, object=o, description=description)


def handcrafted_text(triplet: tuple[str, str, str] | list[str]) -> str:
    """Table 2's hand-crafted prompt of one triplet.

    Example:
        >>> handcrafted_text(("dog", "chasing", "ball"))
        'A photo capturing a dog performing chasing in relation to ball.'
    """
    s, a, o = triplet
    return HANDCRAFTED_TEMPLATE.format(subject=s, action=a, object=o)


@dataclass
class ActionPromptConfig:
    """Hyperparameters of :class:`ActionPrompter` (saved with the model).

    Attributes:
        dim: backbone token width ``d``. word_dim: width of the text model's word embeddings (``d_w``).
        text_dim: width of the frozen text encoder's sentence embeddings (state / hand-crafted prompts).
        num_layers: backbone layers that prompts pass through. num_triplets: ``K`` (padded / truncated).
        adapter_dim: ``t`` of eq. 6 (``t << d``). triplet_layers, heads: the triplet encoder and attention sizes.
        num_visual_prompts: ``N`` learnable visual prompt tokens (0 = no "Vis").
        early_layers: layers fed by the adapter prompts; later layers get independent per-layer prompts.
        interaction: ``"aim"`` (eq. 7-8) or ``"cat"`` (Table 3's concatenation).
        lam: λ of eq. 8 (0.7 in the paper, §3.3).
        use_triplets, use_states: which knowledge prompts are used (Tables 2-3).
        triplet_source: ``"words"`` (eq. 4-5) or ``"handcrafted"`` (Table 2's template through the text encoder).
    """

    dim: int
    word_dim: int
    text_dim: int
    num_layers: int
    num_triplets: int = 4
    adapter_dim: int = 64
    triplet_layers: int = 1
    heads: int = 4
    num_visual_prompts: int = 4
    early_layers: int = 1
    interaction: Literal["aim", "cat"] = "aim"
    lam: float = 0.7
    use_triplets: bool = True
    use_states: bool = True
    triplet_source: Literal["words", "handcrafted"] = "words"

    def __post_init__(self) -> None:
        if self.interaction not in ("aim", "cat"):
            raise ValueError(f"interaction must be 'aim' or 'cat', got {self.interaction!r}")
        if self.triplet_source not in ("words", "handcrafted"):
            raise ValueError(f"triplet_source must be 'words' or 'handcrafted', got {self.triplet_source!r}")
        if not 0 <= self.early_layers <= self.num_layers:
            raise ValueError(f"early_layers must be in [0, num_layers={self.num_layers}], got {self.early_layers}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {self.lam}")
        if self.num_triplets < 1 or self.dim % self.heads:
            raise ValueError(f"num_triplets must be >= 1 and dim ({self.dim}) divisible by heads ({self.heads})")

    @property
    def uses_knowledge(self) -> bool:
        return self.use_triplets or self.use_states

    @property
    def num_prompt_tokens(self) -> int:
        """Prompt tokens appended to the image tokens: action tokens, then visual prompts."""
        action = 0
        if self.uses_knowledge:
            both = self.use_triplets and self.use_states
            action = 2 * self.num_triplets if self.interaction == "cat" and both else self.num_triplets
        return action + self.num_visual_prompts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionPromptConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ActionPromptConfig keys: {sorted(unknown)}")
        return cls(**data)


@dataclass
class KnowledgeBatch:
    """Precomputed, frozen-encoder knowledge of a batch of texts (:mod:`lumir.models.action_backbones`).

    Attributes:
        words: ``(B, K, 3, d_w)`` mean word embeddings of each triplet's subject, action and object.
        states: ``(B, K, d_text)`` text-encoder embeddings of the state prompts.
        handcrafted: ``(B, K, d_text)`` text-encoder embeddings of the hand-crafted triplet prompts.
        mask: ``(B, K)`` True where a triplet exists. A text without knowledge keeps slot 0 on (zero inputs), so
            attention never runs over an empty set.
    """

    words: torch.Tensor
    states: torch.Tensor
    handcrafted: torch.Tensor
    mask: torch.Tensor

    def index(self, rows: torch.Tensor | list[int]) -> KnowledgeBatch:
        return KnowledgeBatch(self.words[rows], self.states[rows], self.handcrafted[rows], self.mask[rows])

    def to(self, device: torch.device | str) -> KnowledgeBatch:
        return KnowledgeBatch(
            self.words.to(device), self.states.to(device), self.handcrafted.to(device), self.mask.to(device)
        )

    def __len__(self) -> int:
        return int(self.mask.shape[0])


class PromptableBackbone(Protocol):
    """A frozen image tower split into steps prompts can be inserted between (see action_backbones)."""

    hidden: int
    num_layers: int

    def embed(self, images: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token sequence ``E_0`` ``(B, M, d)`` (class token first) fed to layer 0."""
        ...

    def layer(self, i: int, hidden: torch.Tensor) -> torch.Tensor: ...

    def pool(self, hidden: torch.Tensor, images: dict[str, torch.Tensor]) -> torch.Tensor:
        """The image embedding ``(B, D)`` (L2-normalised) from the last layer's tokens."""
        ...


class TripletEncoder(nn.Module):
    """Eq. 4-5: ``p_t = Multi-Transformer([e_Δ1, ..., e_ΔK])`` with ``e_Δi`` the concatenated word embeddings of
    triplet ``i``'s subject, action and object, projected ``3 d_w -> d``."""

    def __init__(self, word_dim: int, dim: int, *, layers: int = 1, heads: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * word_dim, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``words`` ``(B, K, 3, d_w)``, ``mask`` ``(B, K)`` -> ``p_t`` ``(B, K, d)``."""
        x = self.proj(words.flatten(2))
        return self.encoder(x, src_key_padding_mask=~mask)


class PromptAdapter(nn.Module):
    """Eq. 6: ``ReLU(LN(p) W_down) W_up`` (``d -> t -> d``), shared by the triplet and state prompts."""

    def __init__(self, dim: int, adapter_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, adapter_dim, bias=False)
        self.up = nn.Linear(adapter_dim, dim, bias=False)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return self.up(F.relu(self.down(self.norm(p))))


class AdaptiveInteraction(nn.Module):
    """Eq. 7-8, the action-aware adaptive interaction module (AIM).

    ``p̃ = CrossAttn(p_0, E_0)`` (prompts attend to the patch embeddings), ``V^x, A^x = SelfAttn(p̃^x)`` (``A^x`` the
    head-averaged attention matrix), ``V = MLP([V^t, V^s])`` (concatenated along features), ``Ṽ = (λ A^t +
    (1 - λ) A^s) V``. The cross- and self-attention modules are shared by both prompt sets, as eq. 7 writes one
    operator for each. With one prompt set only (an ablation), it stands in for the missing one.
    """

    def __init__(self, dim: int, heads: int, lam: float = 0.7) -> None:
        super().__init__()
        self.lam = lam
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def attend(self, p: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross- then self-attention of one prompt set: ``(V^x (B, K, d), A^x (B, K, K))``."""
        crossed, _ = self.cross(p, patches, patches, need_weights=False)
        values, attn = self.self_attn(
            crossed, crossed, crossed, key_padding_mask=~mask, need_weights=True, average_attn_weights=True
        )
        return values, attn

    def forward(
        self, p_t: torch.Tensor | None, p_s: torch.Tensor | None, patches: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        if p_t is None and p_s is None:
            raise ValueError("AIM needs at least one prompt set")
        v_t, a_t = self.attend(p_t, patches, mask) if p_t is not None else (None, None)
        v_s, a_s = self.attend(p_s, patches, mask) if p_s is not None else (None, None)
        if v_t is None or a_t is None:
            v_t, a_t = v_s, a_s
        if v_s is None or a_s is None:
            v_s, a_s = v_t, a_t
        assert v_t is not None and v_s is not None and a_t is not None and a_s is not None
        values = self.mlp(torch.cat([v_t, v_s], dim=-1))
        return mix_attention(a_t, a_s, values, self.lam)


def mix_attention(a_t: torch.Tensor, a_s: torch.Tensor, values: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. 8's re-weighting ``(λ A^t + (1 - λ) A^s) V`` (batched).

    Example:
        >>> a_t, a_s = torch.eye(2)[None], torch.ones(1, 2, 2) / 2
        >>> out = mix_attention(a_t, a_s, torch.tensor([[[1.0], [3.0]]]), 0.7)  # rows (.85, .15) and (.15, .85)
        >>> [round(x, 4) for x in out.flatten().tolist()]
        [1.3, 2.7]
    """
    return (lam * a_t + (1.0 - lam) * a_s) @ values


class ActionPrompter(nn.Module):
    """All trainable parts of LAMP around a frozen :class:`PromptableBackbone`.

    :meth:`encode` runs the backbone with the prompts of each row's knowledge and returns ``z^img``.
    """

    def __init__(self, config: ActionPromptConfig) -> None:
        super().__init__()
        c = self.config = config
        self.triplet_encoder = (
            TripletEncoder(c.word_dim, c.dim, layers=c.triplet_layers, heads=c.heads)
            if c.use_triplets and c.triplet_source == "words"
            else None
        )
        self.text_proj = nn.Linear(c.text_dim, c.dim) if c.uses_knowledge else None
        self.adapter = PromptAdapter(c.dim, c.adapter_dim) if c.uses_knowledge else None
        self.interaction = (
            AdaptiveInteraction(c.dim, c.heads, c.lam) if c.uses_knowledge and c.interaction == "aim" else None
        )
        n_prompts = c.num_prompt_tokens
        self.visual_prompts = nn.Parameter(torch.randn(c.num_visual_prompts, c.dim) * 0.02)
        later = c.num_layers - c.early_layers
        self.layer_prompts = nn.Parameter(torch.randn(later, n_prompts, c.dim) * 0.02)

    def stage_modules(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups by role: ``interaction`` (AIM), ``prompts`` (everything else of this module)."""
        aim = list(self.interaction.parameters()) if self.interaction is not None else []
        ids = {id(p) for p in aim}
        return {"interaction": aim, "prompts": [p for p in self.parameters() if id(p) not in ids]}

    def knowledge_prompts(self, knowledge: KnowledgeBatch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Adapted prompts ``(p_0^t, p_0^s)`` of eq. 6 (None where that prompt is off)."""
        c = self.config
        p_t = p_s = None
        if c.use_triplets:
            if self.triplet_encoder is not None:
                p_t = self.triplet_encoder(knowledge.words, knowledge.mask)
            else:
                assert self.text_proj is not None
                p_t = self.text_proj(knowledge.handcrafted)
        if c.use_states:
            assert self.text_proj is not None
            p_s = self.text_proj(knowledge.states)
        assert self.adapter is not None or (p_t is None and p_s is None)
        if self.adapter is not None:
            p_t = self.adapter(p_t) if p_t is not None else None
            p_s = self.adapter(p_s) if p_s is not None else None
        return p_t, p_s

    def prompt_tokens(self, e0: torch.Tensor, knowledge: KnowledgeBatch | None) -> torch.Tensor:
        """The prompt tokens ``(B, P, d)`` appended before the first layer: action tokens, then visual prompts."""
        batch = e0.shape[0]
        parts = []
        if self.config.uses_knowledge:
            if knowledge is None:
                raise ValueError("this model uses knowledge prompts; pass the texts' knowledge")
            p_t, p_s = self.knowledge_prompts(knowledge)
            mask = knowledge.mask
            if self.interaction is not None:
                parts.append(self.interaction(p_t, p_s, e0, mask))
            else:  # CAT: the adapted prompts themselves, padded slots zeroed
                parts.extend(p * mask[..., None].to(p.dtype) for p in (p_t, p_s) if p is not None)
        parts.append(self.visual_prompts.expand(batch, -1, -1))
        return torch.cat(parts, dim=1)

    def encode(
        self,
        backbone: PromptableBackbone,
        images: dict[str, torch.Tensor],
        knowledge: KnowledgeBatch | None,
    ) -> torch.Tensor:
        """``z^img`` ``(B, D)``: row ``b`` of ``images`` prompted with row ``b`` of ``knowledge`` (eq. 9)."""
        e0 = backbone.embed(images)
        n_tokens = e0.shape[1]
        hidden = torch.cat([e0, self.prompt_tokens(e0, knowledge)], dim=1)
        for i in range(backbone.num_layers):
            later = i - self.config.early_layers
            if later >= 0 and self.layer_prompts.shape[1]:
                own = self.layer_prompts[later].expand(hidden.shape[0], -1, -1)
                hidden = torch.cat([hidden[:, :n_tokens], own], dim=1)
            hidden = backbone.layer(i, hidden)
        return backbone.pool(hidden[:, :n_tokens], images)
