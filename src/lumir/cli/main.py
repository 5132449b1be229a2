"""The ``lumir`` command line. Every command validates its options, then calls library functions.

Components are given as specs (:mod:`lumir.registry`): ``--embedder mini``, ``--rerank yes-no:llm=qwen-coder,k=20``,
``--rewrite "template:a photo of {text}"``, or a whole ``--pipeline FILE`` (:class:`lumir.pipeline.PipelineSpec`)
whose entries the other options override. ``lumir list`` shows every registered name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from lumir.cli.run import cli_errors, configure_output, fail
from lumir.collections import Corpus

app = typer.Typer(
    name="lumir",
    help="LLM-enhanced universal multimodal retrieval: index, search, rerank and evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EmbedderOpt = Annotated[
    str | None,
    typer.Option(
        "--embedder",
        "-e",
        help="Embedder spec: minilm (default), mini (lumir-mini, images and text), mini:DIR, st:PATH, clip:PATH, "
        "a model folder, hash, color (`lumir list embedder`).",
    ),
]
PipelineOpt = Annotated[
    Path | None,
    typer.Option("--pipeline", "-p", help="A pipeline YAML/JSON file (index/embedder, k, rewriter, reranker, ...)."),
]
RerankOpt = Annotated[
    str | None,
    typer.Option(
        "--rerank",
        help="Reranker spec, e.g. true-false, yes-no:llm=qwen-coder,k=20,alpha=0.5, "
        "listwise:llm=smollm2,window=5,image_mode=caption (`lumir list reranker`).",
    ),
]
RewriteOpt = Annotated[
    str | None,
    typer.Option(
        "--rewrite",
        help="Query rewriter spec, e.g. 'template:a photo of {text}', llm:smollm2, trained:RUN_DIR "
        "(`lumir list rewriter`).",
    ),
]
LlmCacheOpt = Annotated[
    Path | None, typer.Option("--llm-cache", help="SQLite cache of LLM calls (default $LUMIR_HOME/llm-cache.sqlite).")
]
NoLlmCacheOpt = Annotated[bool, typer.Option("--no-llm-cache", help="Do not read or write the LLM cache.")]
InstructionsOpt = Annotated[
    str | None,
    typer.Option(help="Query instructions: an M-BEIR query_instructions.tsv, 'auto' (the tasks' own), or 'none'."),
]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto.")]
BatchOpt = Annotated[int | None, typer.Option(help="Embedding batch size (default 64).", min=1)]


def _llm_cache(llm_cache: Path | None, no_llm_cache: bool) -> str | None:
    if llm_cache is not None and no_llm_cache:
        raise ValueError("give --llm-cache PATH or --no-llm-cache, not both")
    if no_llm_cache:
        return "none"
    return None if llm_cache is None else str(llm_cache)


def _stage_specs(rerank: str | None, rewrite: str | None) -> dict[str, Any]:
    """``--rerank`` / ``--rewrite`` parsed now, so a typo fails before any model loads."""
    from lumir.registry import RERANKERS, REWRITERS

    out: dict[str, Any] = {}
    if rerank is not None:
        out["reranker"] = RERANKERS.normalize(rerank)
    if rewrite is not None:
        out["rewriter"] = REWRITERS.normalize(rewrite)
    return out


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or progress lines.")] = False,
) -> None:
    configure_output(verbose=verbose, quiet=quiet)


@app.command()
def index(
    source: Annotated[
        Path, typer.Argument(help="jsonl file, image folder, Flickr8k folder, BEIR folder or M-BEIR pool.")
    ],
    out: Annotated[Path, typer.Argument(help="Index directory to write (or to add to, with --add).")],
    embedder: EmbedderOpt = None,
    fmt: Annotated[
        str, typer.Option("--format", help="auto|jsonl|folder|flickr8k|flickr8k-captions|beir|mbeir")
    ] = "auto",
    split: Annotated[str | None, typer.Option(help="Flickr8k split (test_1k, train_4k) or BEIR split.")] = None,
    backend: Annotated[str | None, typer.Option(help="flat (exact, default) or faiss.")] = None,
    factory: Annotated[str | None, typer.Option(help="FAISS factory string, e.g. IVF1024,Flat or HNSW32.")] = None,
    batch_size: Annotated[int, typer.Option(help="Embedding batch size.", min=1)] = 64,
    shard_size: Annotated[
        int, typer.Option(help="Items per resumable shard: an interrupted build keeps every finished shard.", min=1)
    ] = 2048,
    device: DeviceOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index (atomically).")] = False,
    add: Annotated[bool, typer.Option("--add", help="Add the source's items to an existing index.")] = False,
    instructions: InstructionsOpt = None,
    skip_bad_images: Annotated[
        bool, typer.Option("--skip-bad-images", help="Leave out images that cannot be decoded (and list them).")
    ] = False,
) -> None:
    """Embed a corpus and write a self-describing index directory (resumable if interrupted)."""
    from lumir.data.sources import load_corpus
    from lumir.index import build_index, open_index
    from lumir.index.store import _auto_factory, check_factory_fits

    with cli_errors():
        if add:
            given: dict[str, object] = {"--embedder": embedder, "--backend": backend, "--factory": factory}
            given.update({"--device": device, "--instructions": instructions, "--overwrite": overwrite})
            ignored = [flag for flag, value in given.items() if value]
            if ignored:
                raise ValueError(
                    f"{', '.join(ignored)} cannot be used with --add: new items are embedded with the embedder, "
                    f"backend and settings the index {out} was built with"
                )
            store = open_index(out)
            corpus, skipped = _without_bad_images(load_corpus(source, fmt, split=split), skip_bad_images)
            store.add(list(corpus), batch_size=batch_size)
        else:
            if out.exists() and not overwrite:
                raise FileExistsError(f"{out} already exists; pass --overwrite to replace it, or --add to add to it")
            backend = backend or "flat"
            if backend not in ("flat", "faiss"):
                raise ValueError(f"--backend must be flat or faiss, got {backend!r}")
            if factory is not None and backend != "faiss":
                raise ValueError("--factory needs --backend faiss (the flat index is exact)")
            corpus, skipped = _without_bad_images(load_corpus(source, fmt, split=split), skip_bad_images)
            if backend == "faiss":
                check_factory_fits(factory or _auto_factory(len(corpus)), len(corpus))
            emb = _load_embedder(embedder or "minilm", device, None if instructions == "none" else instructions)
            store = build_index(
                corpus,
                emb,
                out,
                backend=backend,
                factory=factory,
                batch_size=batch_size,
                shard_size=shard_size,
                overwrite=overwrite,
            )
    for item_id, reason in skipped:
        typer.secho(f"skipped {item_id}: {reason}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"indexed {len(store.corpus)} items -> {out}" + (f" ({len(skipped)} skipped)" if skipped else ""))


def _without_bad_images(corpus: Corpus, skip: bool) -> tuple[Corpus, list[tuple[str, str]]]:
    """With ``skip``: decode every image now and leave out (and list) the ones that fail."""
    if not skip:
        return corpus, []
    from lumir.io.images import find_bad_images

    bad = find_bad_images(corpus)
    if not bad:
        return corpus, []
    ids = {item_id for item_id, _ in bad}
    kept = [it for it in corpus if it.id not in ids]
    if not kept:
        raise ValueError(f"none of the {len(corpus)} items has an image that decodes; first: {bad[0][1]}")
    return Corpus(kept, source=corpus.source), bad


def _load_embedder(spec: str, device: str | None, instructions: str | None) -> Any:
    from lumir.embed import load_embedder

    overrides: dict[str, Any] = {}
    if device:
        overrides["device"] = device
    if instructions is not None:
        overrides["instructions"] = instructions
    return load_embedder(spec, **overrides)


@app.command()
def search(
    index_dir: Annotated[Path, typer.Argument(help="Index directory written by `lumir index`.")],
    text: Annotated[list[str] | None, typer.Option("--text", "-t", help="Text query (repeatable).")] = None,
    image: Annotated[
        Path | None, typer.Option("--image", "-i", help="Image query; with --text: composed query.")
    ] = None,
    queries: Annotated[Path | None, typer.Option(help="A jsonl file of queries.")] = None,
    k: Annotated[int, typer.Option("-k", help="How many results per query.", min=1)] = 10,
    modality: Annotated[str | None, typer.Option(help="Only return candidates of this modality.")] = None,
    instruction: Annotated[str | None, typer.Option(help="Task instruction prepended to the query.")] = None,
    pipeline: PipelineOpt = None,
    rerank: RerankOpt = None,
    rewrite: RewriteOpt = None,
    device: DeviceOpt = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write an HTML gallery of the results.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON lines.")] = False,
    llm_cache: LlmCacheOpt = None,
    no_llm_cache: NoLlmCacheOpt = False,
) -> None:
    """Search an index with text, image, or composed image+text queries; optionally rewrite and rerank."""
    from lumir.cli.run import build_queries, print_rankings
    from lumir.pipeline import PipelineSpec, build_pipeline

    with cli_errors():
        base = PipelineSpec() if pipeline is None else PipelineSpec.from_file(pipeline)
        spec = base.replace(
            index=str(index_dir),
            k=k if pipeline is None else max(k, base.k),
            candidate_modality=modality,
            device=device,
            llm_cache=_llm_cache(llm_cache, no_llm_cache),
            **_stage_specs(rerank, rewrite),
        )
        qs = build_queries(text or [], image, queries, instruction)
        pipe = build_pipeline(spec)
        out = pipe.run(qs)
        rankings = out.final.top(k)
        if pipe.reranker is not None or pipe.rewriter is not None:
            timing = ", ".join(f"{name} {1000 * sec:.0f} ms" for name, sec in out.seconds.items())
            typer.echo(f"stages: {timing}", err=True)
        for qid, new in out.rewrites.items():
            typer.echo(f"{qid} rewritten: {new}", err=True)
        if html is not None:
            from lumir.eval.gallery import write_gallery

            assert pipe.corpus is not None
            write_gallery(html, out.queries, rankings, pipe.corpus, title=f"lumir search · {index_dir}")
    assert pipe.corpus is not None
    print_rankings(out.queries, rankings, pipe.corpus, as_json=as_json)
    if html is not None:
        typer.echo(f"gallery written to {html}", err=True)


@app.command("eval")
def eval_(
    tasks: Annotated[list[str], typer.Argument(help="Task specs: scifact, beir:PATH, flickr8k, mbeir:ROOT[:T], toy.")],
    pipeline: PipelineOpt = None,
    embedder: EmbedderOpt = None,
    rerank: RerankOpt = None,
    rewrite: RewriteOpt = None,
    data: Annotated[Path | None, typer.Option(help="Data root (default $LUMIR_DATA or ../shared/data).")] = None,
    k: Annotated[int | None, typer.Option("-k", help="First-stage depth (default 100).", min=1)] = None,
    metrics: Annotated[str | None, typer.Option(help="Comma-separated metrics, e.g. nDCG@10,R@5.")] = None,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    candidate_modality: Annotated[str | None, typer.Option(help="text|image|image,text|auto")] = None,
    backend: Annotated[str | None, typer.Option(help="flat or faiss.")] = None,
    index_cache: Annotated[Path | None, typer.Option(help="Keep resumable index directories here.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the EvalResult JSON here.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write a markdown report here.")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Write TREC run files here.")] = None,
    check: Annotated[Path | None, typer.Option(help="Benchmark YAML to check the result against.")] = None,
    instructions: InstructionsOpt = None,
    llm_cache: LlmCacheOpt = None,
    no_llm_cache: NoLlmCacheOpt = False,
) -> None:
    """Evaluate a pipeline (an embedder, plus optional rewriter and reranker) on retrieval tasks, every stage."""
    from lumir.eval.evaluator import evaluate
    from lumir.eval.report import check_result, format_check, load_benchmark, markdown_table, stage_summary
    from lumir.eval.tasks import load_tasks
    from lumir.pipeline import PipelineSpec

    with cli_errors():
        base = PipelineSpec() if pipeline is None else PipelineSpec.from_file(pipeline)
        spec = base.replace(
            embedder=embedder,
            k=k,
            batch_size=batch_size,
            device=device,
            candidate_modality=candidate_modality,
            backend=backend,
            index_cache=None if index_cache is None else str(index_cache),
            instructions=instructions,
            llm_cache=_llm_cache(llm_cache, no_llm_cache),
            **_stage_specs(rerank, rewrite),
        )
        if spec.embedder is None:
            spec = spec.replace(embedder="minilm")
        if spec.instructions is None and instructions is None and pipeline is None:
            spec = spec.replace(instructions="auto")  # M-BEIR tasks carry their instruction table
        benchmark = load_benchmark(check) if check is not None else None
        loaded = [t for task_spec in tasks for t in load_tasks(task_spec, data=data)]
        command = " ".join(["lumir", *sys.argv[1:]])
        result = evaluate(
            spec,
            loaded,
            metrics=metrics.split(",") if metrics else None,
            output=output,
            run_dir=run_dir,
            config={"command": command, "task_specs": tasks},
        )
        table = markdown_table(result) + "\n\n" + stage_summary(result)
        outcomes = check_result(result, benchmark) if benchmark is not None else None
        if report is not None:
            from lumir.config import atomic_write_text

            atomic_write_text(report, table)
    for name, stages in result.summary.items():
        typer.echo("  ".join(f"Rsum {name} {stage}: {100 * value:.1f}" for stage, value in stages.items()))
    typer.echo(table)
    if outcomes is not None:
        typer.echo(format_check(outcomes))
        if not all(o.ok for o in outcomes):
            raise typer.Exit(1)


@app.command()
def info(index_dir: Annotated[Path, typer.Argument(help="Index directory.")]) -> None:
    """Describe an index directory (every file is read: a damaged one is an error, not a summary)."""
    from lumir.index import open_index

    with cli_errors():
        desc = open_index(index_dir).describe()
    typer.echo(json.dumps(desc, indent=2, default=str))


@app.command()
def check(
    source: Annotated[Path, typer.Argument(help="What `lumir index` would read: jsonl, image folder, Flickr8k, ...")],
    fmt: Annotated[
        str, typer.Option("--format", help="auto|jsonl|folder|flickr8k|flickr8k-captions|beir|mbeir")
    ] = "auto",
    split: Annotated[str | None, typer.Option(help="Flickr8k split or BEIR split.")] = None,
) -> None:
    """Check a corpus before indexing: every item parses and every image decodes (exit 1 if any fails)."""
    from collections import Counter

    from lumir.data.sources import load_corpus
    from lumir.io.images import find_bad_images

    with cli_errors():
        corpus = load_corpus(source, fmt, split=split)
        bad = find_bad_images(corpus)
    counts = Counter(it.modality.value for it in corpus)
    typer.echo(f"{source}: {len(corpus)} items (" + ", ".join(f"{n} {m}" for m, n in sorted(counts.items())) + ")")
    for _, reason in bad:
        typer.secho(f"  unreadable: {reason}", fg=typer.colors.RED)
    if bad:
        typer.echo(f"{len(bad)} image(s) cannot be decoded: fix them, or index with --skip-bad-images")
        raise typer.Exit(1)
    typer.echo("every item parses and every image decodes")


@app.command("list")
def list_(
    kind: Annotated[str | None, typer.Argument(help="embedder, index, chat_model, reranker, ...")] = None,
) -> None:
    """List the registered component names (what specs may name), with their aliases."""
    from lumir.registry import REGISTRIES

    if kind is not None and kind.replace("-", "_") not in REGISTRIES:
        fail(f"unknown kind {kind!r}; known: {', '.join(REGISTRIES)}")
    for name, registry in REGISTRIES.items():
        if kind is not None and name != kind.replace("-", "_"):
            continue
        typer.echo(f"{name}:")
        for entry in registry:
            aliases = f" (also: {', '.join(entry.aliases)})" if entry.aliases else ""
            typer.echo(f"  {entry.name:<30} {entry.help}{aliases}")


def _add_subcommands() -> None:
    from lumir.cli.augment import augment_app
    from lumir.cli.demo import demo
    from lumir.cli.mine import mine
    from lumir.cli.rewrite import rewrite
    from lumir.cli.train import train_app

    app.add_typer(train_app, name="train")
    app.add_typer(augment_app, name="augment")
    app.command("demo")(demo)
    app.command("rewrite")(rewrite)
    app.command("mine")(mine)


_add_subcommands()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
