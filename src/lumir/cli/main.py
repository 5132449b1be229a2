"""The ``lumir`` command line: index, search, eval, info. Every command calls one library function."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from lumir.errors import LumirError

app = typer.Typer(
    name="lumir",
    help="LLM-enhanced universal multimodal retrieval: index, search, rerank and evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EmbedderOpt = Annotated[
    str,
    typer.Option("--embedder", "-e", help="Embedder: minilm, st:PATH, clip:PATH, a model folder, or hash."),
]
InstructionsOpt = Annotated[
    str | None,
    typer.Option(help="Query instructions: an M-BEIR query_instructions.tsv, 'auto' (the tasks' own), or 'none'."),
]


RerankOpt = Annotated[
    str | None,
    typer.Option("--rerank", help="LLM reranker: true-false (MM-Embed), yes-no (LamRA pointwise), listwise (LamRA)."),
]
LlmOpt = Annotated[
    str,
    typer.Option(
        "--llm", help="Chat model: smollm2, qwen-coder, NAME@transformers, gguf:PATH, hf:PATH, openai:URL#MODEL."
    ),
]
RerankKOpt = Annotated[int | None, typer.Option("--rerank-k", help="Candidates reranked per query (papers: 50/10/5).")]
AlphaOpt = Annotated[
    float | None, typer.Option("--alpha", help="Fusion weight of the first-stage score: S = a*S_ret + (1-a)*S_rank.")
]
FusionNormOpt = Annotated[str, typer.Option("--fusion-norm", help="Score normalisation before fusing: none|minmax.")]
WindowOpt = Annotated[int, typer.Option("--window", help="Listwise: candidates per prompt (2-9).")]
ListwiseModeOpt = Annotated[
    str, typer.Option("--listwise-mode", help="Listwise: logits (position softmax) or generate.")
]
ImageModeOpt = Annotated[
    str, typer.Option("--image-mode", help="native (images to a vision-language model) or caption (caption-proxy).")
]
LlmCacheOpt = Annotated[
    Path | None, typer.Option("--llm-cache", help="SQLite cache of LLM calls (default $LUMIR_HOME/llm-cache.sqlite).")
]
NoLlmCacheOpt = Annotated[bool, typer.Option("--no-llm-cache", help="Do not read or write the LLM cache.")]


def _reranker(
    rerank: str | None,
    llm: str,
    rerank_k: int | None,
    alpha: float | None,
    fusion_norm: str,
    window: int,
    listwise_mode: str,
    image_mode: str,
    llm_cache: Path | None,
    no_llm_cache: bool,
) -> Any:
    """The reranker the common CLI options describe (None without --rerank)."""
    if rerank is None:
        return None
    from lumir.rerank.registry import _ALIASES, build_reranker

    options: dict[str, Any] = {"image_mode": image_mode}
    if _ALIASES.get(rerank.lower()) == "listwise":
        options.update(window=window, mode=listwise_mode)
    return build_reranker(
        rerank,
        llm=llm,
        cache=llm_cache,
        use_cache=not no_llm_cache,
        k=rerank_k,
        alpha=alpha,
        normalize=fusion_norm,
        **options,
    )


def _embedder_options(device: str | None, instructions: str | None) -> dict[str, Any]:
    """Keyword overrides for ``load_embedder`` from the common CLI options."""
    out: dict[str, Any] = {}
    if device:
        out["device"] = device
    if instructions not in (None, "none", "auto"):
        out["instructions"] = instructions
    return out


def _fail(err: BaseException) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@app.command()
def index(
    source: Annotated[
        Path, typer.Argument(help="jsonl file, image folder, Flickr8k folder, BEIR folder or M-BEIR pool.")
    ],
    out: Annotated[Path, typer.Argument(help="Index directory to write.")],
    embedder: EmbedderOpt = "minilm",
    fmt: Annotated[
        str, typer.Option("--format", help="auto|jsonl|folder|flickr8k|flickr8k-captions|beir|mbeir")
    ] = "auto",
    split: Annotated[str, typer.Option(help="Flickr8k split (test_1k or train_4k).")] = "test_1k",
    backend: Annotated[str, typer.Option(help="flat (exact) or faiss.")] = "flat",
    factory: Annotated[str | None, typer.Option(help="FAISS factory string, e.g. IVF1024,Flat or HNSW32.")] = None,
    batch_size: Annotated[int, typer.Option(help="Embedding batch size.")] = 64,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index (atomically).")] = False,
    add: Annotated[bool, typer.Option("--add", help="Add the source's items to an existing index.")] = False,
    instructions: InstructionsOpt = None,
) -> None:
    """Embed a corpus and write a self-describing index directory (resumable if interrupted)."""
    from lumir.data.sources import load_corpus
    from lumir.embed import load_embedder
    from lumir.index import build_index, open_index

    try:
        corpus = load_corpus(source, fmt, split=split)
        if add:
            store = open_index(out)
            store.add(list(corpus), batch_size=batch_size)
        else:
            emb = load_embedder(embedder, **_embedder_options(device, instructions))
            store = build_index(
                corpus, emb, out, backend=backend, factory=factory, batch_size=batch_size, overwrite=overwrite
            )
    except (LumirError, OSError, ValueError, ImportError) as err:
        _fail(err)
    typer.echo(f"indexed {len(store.corpus)} items -> {out}")


@app.command()
def search(
    index_dir: Annotated[Path, typer.Argument(help="Index directory written by `lumir index`.")],
    text: Annotated[list[str] | None, typer.Option("--text", "-t", help="Text query (repeatable).")] = None,
    image: Annotated[
        Path | None, typer.Option("--image", "-i", help="Image query; with --text: composed query.")
    ] = None,
    queries: Annotated[Path | None, typer.Option(help="A jsonl file of queries.")] = None,
    k: Annotated[int, typer.Option("-k", help="How many results per query.")] = 10,
    modality: Annotated[str | None, typer.Option(help="Only return candidates of this modality.")] = None,
    instruction: Annotated[str | None, typer.Option(help="Task instruction prepended to the query.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write an HTML gallery of the results.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON lines.")] = False,
    rerank: RerankOpt = None,
    llm: LlmOpt = "smollm2",
    rerank_k: RerankKOpt = None,
    alpha: AlphaOpt = None,
    fusion_norm: FusionNormOpt = "none",
    window: WindowOpt = 5,
    listwise_mode: ListwiseModeOpt = "logits",
    image_mode: ImageModeOpt = "native",
    llm_cache: LlmCacheOpt = None,
    no_llm_cache: NoLlmCacheOpt = False,
) -> None:
    """Search an index with text, image, or composed image+text queries; optionally rerank with an LLM."""
    from lumir.cli.run import build_queries, print_rankings
    from lumir.index import open_index
    from lumir.pipeline import Pipeline
    from lumir.retrieve import DenseRetriever

    try:
        store = open_index(index_dir)
        qs = build_queries(text or [], image, queries, instruction)
        retriever = DenseRetriever.from_store(store, candidate_modality=modality)
        reranker = _reranker(
            rerank, llm, rerank_k, alpha, fusion_norm, window, listwise_mode, image_mode, llm_cache, no_llm_cache
        )
        out = Pipeline(retriever, reranker=reranker, corpus=store.corpus, k=k, rerank_k=rerank_k).run(qs, k)
        rankings = out.final
        if reranker is not None:
            timing = ", ".join(f"{name} {1000 * sec:.0f} ms" for name, sec in out.seconds.items())
            typer.echo(f"stages: {timing}", err=True)
        if html is not None:
            from lumir.eval.gallery import write_gallery

            write_gallery(html, qs, rankings, store.corpus, title=f"lumir search · {index_dir}")
    except (LumirError, OSError, ValueError, ImportError, KeyError) as err:
        _fail(err)
    print_rankings(qs, rankings, store.corpus, as_json=as_json)
    if html is not None:
        typer.echo(f"gallery written to {html}", err=True)


@app.command("eval")
def eval_(
    tasks: Annotated[list[str], typer.Argument(help="Task specs: scifact, beir:PATH, flickr8k, mbeir:ROOT[:T], toy.")],
    embedder: EmbedderOpt = "minilm",
    data: Annotated[Path | None, typer.Option(help="Data root (default $LUMIR_DATA or ../shared/data).")] = None,
    k: Annotated[int, typer.Option("-k", help="First-stage depth.")] = 100,
    metrics: Annotated[str | None, typer.Option(help="Comma-separated metrics, e.g. nDCG@10,R@5.")] = None,
    batch_size: Annotated[int, typer.Option(help="Embedding batch size.")] = 64,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto.")] = None,
    candidate_modality: Annotated[str | None, typer.Option(help="text|image|image,text|auto")] = None,
    backend: Annotated[str, typer.Option(help="flat or faiss.")] = "flat",
    index_cache: Annotated[Path | None, typer.Option(help="Keep resumable index directories here.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the EvalResult JSON here.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write a markdown report here.")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Write TREC run files here.")] = None,
    check: Annotated[Path | None, typer.Option(help="Benchmark YAML to check the result against.")] = None,
    instructions: InstructionsOpt = "auto",
    rerank: RerankOpt = None,
    llm: LlmOpt = "smollm2",
    rerank_k: RerankKOpt = None,
    alpha: AlphaOpt = None,
    fusion_norm: FusionNormOpt = "none",
    window: WindowOpt = 5,
    listwise_mode: ListwiseModeOpt = "logits",
    image_mode: ImageModeOpt = "native",
    llm_cache: LlmCacheOpt = None,
    no_llm_cache: NoLlmCacheOpt = False,
) -> None:
    """Evaluate an embedder (and an optional LLM reranker) on retrieval tasks; print first-stage vs reranked."""
    from lumir.embed import load_embedder
    from lumir.eval.evaluator import evaluate
    from lumir.eval.report import check_result, format_check, load_benchmark, markdown_table, stage_summary
    from lumir.eval.tasks import load_tasks

    try:
        loaded = [t for spec in tasks for t in load_tasks(spec, data=data)]
        if instructions == "auto":  # M-BEIR tasks carry their instruction table
            instructions = next((t.meta["instructions_path"] for t in loaded if "instructions_path" in t.meta), None)
        emb = load_embedder(embedder, **_embedder_options(device, instructions))
        reranker = _reranker(
            rerank, llm, rerank_k, alpha, fusion_norm, window, listwise_mode, image_mode, llm_cache, no_llm_cache
        )
        config: dict[str, Any] = {"tasks": tasks, "command": " ".join(["lumir", *sys.argv[1:]])}
        if reranker is not None:
            config["reranker"] = reranker.spec() if hasattr(reranker, "spec") else rerank
        result = evaluate(
            loaded,
            embedder=emb,
            reranker=reranker,
            rerank_k=rerank_k,
            k=k,
            metrics=metrics.split(",") if metrics else None,
            batch_size=batch_size,
            candidate_modality=candidate_modality,
            backend=backend,
            index_cache=index_cache,
            output=output,
            run_dir=run_dir,
            config=config,
        )
        table = markdown_table(result) + "\n\n" + stage_summary(result)
        outcomes = check_result(result, load_benchmark(check)) if check is not None else None
    except (LumirError, OSError, ValueError, ImportError, KeyError) as err:
        _fail(err)
    for name, stages in result.get("summary", {}).items():
        typer.echo("  ".join(f"Rsum {name} {stage}: {100 * value:.1f}" for stage, value in stages.items()))
    typer.echo(table)
    if report is not None:
        from lumir.config import atomic_write_text

        atomic_write_text(report, table)
    if outcomes is not None:
        typer.echo(format_check(outcomes))
        if not all(o.ok for o in outcomes):
            raise typer.Exit(1)


@app.command()
def info(index_dir: Annotated[Path, typer.Argument(help="Index directory.")]) -> None:
    """Describe an index directory: embedder, backend, size, modalities, versions."""
    from lumir.index import open_index

    try:
        desc = open_index(index_dir).describe()
    except (LumirError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(json.dumps(desc, indent=2, default=str))


def _add_subcommands() -> None:
    from lumir.cli.augment import augment_app
    from lumir.cli.demo import demo
    from lumir.cli.train import train_app

    app.add_typer(train_app, name="train")
    app.add_typer(augment_app, name="augment")
    app.command("demo")(demo)


_add_subcommands()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
