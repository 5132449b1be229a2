"""The rewriting prompts, as data: the LLMsRewrite baseline and the four MGQRe data-construction prompts (§3.1).

Every prompt is a ``str.format`` template with a version; records written with a prompt keep its version, and
``tests/rewrite/golden/`` pins the rendered text so a change to a prompt is a deliberate, visible diff. The
paper's own templates (its Appendix A.1) are not in the available text, so these are lumir's, written to the
§3.1 description: the challenge prompt shows the wrong top candidates and the ground truth and asks for a
chain-of-thought analysis of the concepts the retriever missed, then a rewrite.

In caption-proxy mode an image appears as ``Image description: <captions>`` (the rerankers' rule); with a
vision-language model it is an image part placed where ``{image}`` / ``{ground_truth}`` stand.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BLUR",
    "CHALLENGE",
    "DIRECT",
    "FEEDBACK",
    "LLMS_REWRITE",
    "PROMPTS",
    "TRAINED",
    "RewritePrompt",
    "get_prompt",
    "rewriter_messages",
]


@dataclass(frozen=True)
class RewritePrompt:
    """A versioned prompt: an optional system message and a user template with ``{field}`` slots."""

    name: str
    version: str
    system: str
    user: str

    def render(self, **fields: object) -> str:
        """The user message with every ``{field}`` filled (a missing field raises KeyError naming it)."""
        return self.user.format(**fields)


LLMS_REWRITE = RewritePrompt(
    name="llms-rewrite",
    version="llms-rewrite/1",
    system="You rewrite image search queries so that a text-to-image search engine finds the right photo.",
    user=(
        "Rewrite the search query below into one clear sentence that describes what is visible in the wanted "
        "photo: name the people, animals and objects, their colours, actions and the setting. Keep the meaning; "
        "do not invent details that the query does not imply. Answer with the rewritten query only.\n\n"
        "Query: a man on a bike\n"
        "Rewrite: A man riding a bicycle along a street.\n\n"
        "Query: kids playing in water\n"
        "Rewrite: Two young children splashing and playing in shallow water.\n\n"
        "Query: dog catching frisbee\n"
        "Rewrite: A dog jumping in the air to catch a frisbee on the grass.\n\n"
        "Query: {query}\n"
        "Rewrite:"
    ),
)

CHALLENGE = RewritePrompt(
    name="challenge",
    version="mgqre-challenge/1",
    system="You analyse the mistakes of a text-to-image search engine and improve its queries.",
    user=(
        "A search engine looked for a photo with the query below and ranked the correct photo at position "
        "{rank}.\n"
        'Query: "{query}"\n'
        "The correct photo:\n{ground_truth}\n"
        "Photos the engine wrongly ranked higher:\n{negatives}\n"
        "{feedback}"
        "First, in one or two sentences, analyse step by step which words of the query the engine "
        "misunderstood and which visible details tell the correct photo apart from the wrong ones. Then write "
        "an improved query of at most {max_words} words that keeps the query's meaning and states those details "
        "plainly. Do not copy the photo description.\n"
        "Answer exactly in this format:\n"
        "Analysis: <your analysis>\n"
        "Query: <improved query>"
    ),
)

FEEDBACK = RewritePrompt(
    name="feedback",
    version="mgqre-feedback/1",
    system="You improve the queries of a text-to-image search engine.",
    user=(
        'A search engine looked for this photo with the query "{query}" and ranked it at position {rank}.\n'
        "The photo:\n{ground_truth}\n"
        "{feedback}"
        "Write an improved query of at most {max_words} words that keeps the query's meaning and describes "
        "the photo so the engine ranks it first. Do not copy the photo description.\n"
        "Answer exactly in this format:\n"
        "Query: <improved query>"
    ),
)

DIRECT = RewritePrompt(
    name="direct",
    version="mgqre-direct/1",
    system="You write search queries for photos.",
    user=(
        'Here is a photo and a short query for it: "{query}".\n'
        "The photo:\n{ground_truth}\n"
        "Write a better search query of at most {max_words} words for this photo, keeping the query's meaning. "
        "Do not copy the photo description.\n"
        "Answer exactly in this format:\n"
        "Query: <query>"
    ),
)

BLUR = RewritePrompt(
    name="blur",
    version="mgqre-blur/1",
    system="You make image search queries vaguer.",
    user=(
        "Make an image search query vaguer: keep the same scene, but use general words instead of specific "
        "ones and drop details. Do not add anything new. Examples:\n"
        '"A boy in a red shirt kicks a soccer ball on a field ." -> "A child plays with a ball outside ."\n'
        '"Two women sit on a bench reading newspapers ." -> "Some people sit and read ."\n'
        'Now make this query vaguer, in at most {max_words} words: "{query}"\n'
        "Answer exactly in this format:\n"
        "Query: <vaguer query>"
    ),
)

TRAINED = RewritePrompt(
    name="trained",
    version="mgqre-rewriter/1",
    system="",
    user=(
        "Rewrite this image search query so that a text-to-image search engine finds the right photo.\nQuery: {query}"
    ),
)
"""The one prompt of trained rewriters: SFT, PRO and PPO train on it and :class:`TrainedRewriter` generates with it
(no system message; the rewrite is the whole assistant reply)."""

PROMPTS = {p.name: p for p in (LLMS_REWRITE, CHALLENGE, FEEDBACK, DIRECT, BLUR, TRAINED)}


def get_prompt(name: str) -> RewritePrompt:
    """The prompt called ``name`` (one of :data:`PROMPTS`), naming the known ones when it is unknown."""
    try:
        return PROMPTS[name]
    except KeyError:
        raise KeyError(f"unknown rewrite prompt {name!r}; known: {sorted(PROMPTS)}") from None


def rewriter_messages(query: str, rewrite: str | None = None) -> list[dict[str, str]]:
    """The chat messages of a trained rewriter for ``query`` (plus the assistant's ``rewrite`` for training).

    Example:
        >>> [m["role"] for m in rewriter_messages("a dog", "a brown dog")]
        ['user', 'assistant']
    """
    messages = [{"role": "user", "content": TRAINED.render(query=query)}]
    if rewrite is not None:
        messages.append({"role": "assistant", "content": rewrite})
    return messages
