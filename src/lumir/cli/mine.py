"""``lumir mine``: hard negatives for training queries from an embedder's top-k (:mod:`lumir.train.mining`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lumir.cli.run import cli_errors


def mine(
    tasks: Annotated[
        list[str],
        typer.Argument(help="Task specs of TRAINING queries, e.g. flickr8k-union:train_4k, beir:PATH:train."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder; one <task>.jsonl per task (resumable).")],
    embedder: Annotated[
        str, typer.Option("--embedder", "-e", help="Embedder spec whose top-k is mined (e.g. mini:DIR).")
    ] = "minilm",
    mode: Annotated[str, typer.Option(help="modality (MM-Embed type 1 / type 2) or window.")] = "modality",
    n: Annotated[int, typer.Option("-n", help="Negatives per query.", min=1)] = 1,
    depth: Annotated[int, typer.Option(help="Top-k considered (MM-Embed: 50).", min=1)] = 50,
    k_prime: Annotated[int, typer.Option(help="Type 2 negatives rank below this (MM-Embed: 45).", min=0)] = 45,
    p_type1: Annotated[float, typer.Option(help="Probability of a type 1 draw.")] = 0.5,
    window: Annotated[
        str, typer.Option(help="Rank window LO,HI (1-based, HI excluded) for --mode window.")
    ] = "30,100",
    margin: Annotated[
        float | None, typer.Option(help="Drop candidates scoring above MARGIN x the positive (NV-Retriever: 0.95).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the per-query draws.")] = 0,
    chunk_size: Annotated[int, typer.Option(help="Queries per retrieval call.", min=1)] = 2048,
    batch_size: Annotated[int, typer.Option(help="Embedding batch size.", min=1)] = 64,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto.")] = None,
    data: Annotated[Path | None, typer.Option(help="Data root (default $LUMIR_DATA or ../shared/data).")] = None,
) -> None:
    """Mine hard negatives for every query of the tasks; rerunning skips queries already mined."""
    from lumir.embed import load_embedder
    from lumir.embed.memo import MemoEmbedder
    from lumir.eval.tasks import load_tasks
    from lumir.pipeline.spec import slug
    from lumir.retrieve import DenseRetriever
    from lumir.train.mining import MiningConfig, compute_rankings, mine_hard_negatives

    with cli_errors():
        lo, sep, hi = window.partition(",")
        if not sep:
            raise ValueError(f"--window must be LO,HI, got {window!r}")
        config = MiningConfig(mode=mode, n=n, depth=depth, k_prime=k_prime, p_type1=p_type1,
                              window=(int(lo), int(hi)), margin=margin, seed=seed)  # fmt: skip
        loaded = [t for spec in tasks for t in load_tasks(spec, data=data)]
        model = MemoEmbedder(load_embedder(embedder, **({"device": device} if device else {})))  # pools shared
        for task in loaded:
            if "test" in str(task.meta.get("split", "")):
                raise ValueError(f"refusing to mine negatives from a test split ({task.name}); mine training queries")
            retriever = DenseRetriever.from_corpus(task.corpus, model, batch_size=batch_size)
            rankings, positive_scores = compute_rankings(
                retriever, task.queries, k=config.needed_depth, exclude=task.exclude, qrels=task.qrels,
                chunk_size=chunk_size, batch_size=batch_size,
            )  # fmt: skip
            path = output / f"{slug(task.name)}.jsonl"
            records = mine_hard_negatives(
                rankings, task.qrels, {it.id: it.modality for it in task.corpus}, task.candidate_modality, config,
                output=path, exclude=task.exclude, positive_scores=positive_scores,
            )  # fmt: skip
            found = sum(len(r["negatives"]) for r in records)
            empty = sum(1 for r in records if not r["negatives"])
            typer.echo(f"{task.name}: {len(records)} queries, {found} negatives ({empty} queries without) -> {path}")
