"""``lumir train ...``: run training recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lumir.cli.run import cli_errors

train_app = typer.Typer(help="Train models from YAML recipes (recipes/...).", no_args_is_help=True)

# options every `lumir train` command shares
ProfileOption = Annotated[
    str | None, typer.Option(help="A named profile of the recipe, applied before --set (e.g. cpu).")
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a recipe value: --set train.epochs=2 (repeatable).")
]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help="Output folder (default: the recipe's).")]
DataOption = Annotated[
    Path | None, typer.Option(help="Folder holding flickr8k/ (default: $LUMIR_DATA, ../shared/data).")
]
ResumeOption = Annotated[bool, typer.Option(help="Continue from the output folder's checkpoint if there is one.")]


@train_app.command("embedder")
def embedder(
    config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML, e.g. recipes/mini/flickr8k.yaml.")],
    output: OutputOption = None,
    data: DataOption = None,
    set_: SetOption = None,
    profile: ProfileOption = None,
    resume: ResumeOption = True,
) -> None:
    """Train an embedder from a recipe (lumir-mini heads, or an (M)LLM embedder: recipes/embedder/*.yaml); prints
    where the model went and how to use it."""
    from lumir.train.recipe import run_recipe

    with cli_errors():
        result = run_recipe(config, set_ or [], profile=profile, data=data, output_dir=output, resume=resume)
    if isinstance(result, dict):  # kind: embedder (an (M)LLM embedder, lumir.train.embedder_recipe)
        typer.echo(
            f"trained {result['steps']} steps in {result['seconds']:.1f} s ({result['seconds_per_step']:.2f} s/step, "
            f"peak RSS {result['peak_rss_mb']:.0f} MB); loss {result['first_loss']} -> {result['final_loss']}"
        )
        typer.echo(f"model: {result['model_dir']}\nuse it: lumir eval TASK --embedder mllm:{result['model_dir']}")
        return
    s = result.summary
    typer.echo(
        f"trained {s.epochs} epochs / {s.steps} steps in {s.seconds:.1f} s; final loss {s.final_loss:.4f}, "
        f"temperature {s.temperature:.4f}"
    )
    for key, value in result.validation.items():
        typer.echo(f"  {key}: {value:.2f}")
    typer.echo(f"model: {result.model_dir}\nuse it: lumir eval flickr8k --embedder mini:{result.model_dir}")


@train_app.command("rewriter")
def rewriter(
    config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML, e.g. recipes/rewriter/sft.yaml.")],
    stage: Annotated[
        str | None, typer.Option(help="MGQRe stage: sft, pro, ppo or grpo (default: the recipe's own).")
    ] = None,
    profile: ProfileOption = None,
    set_: SetOption = None,
    output: OutputOption = None,
    resume: ResumeOption = True,
) -> None:
    """Train a query rewriter (MGQRe SFT → PRO → PPO) from a recipe; prints where the model went and how to use it."""
    from lumir.train.rewriter.run import run_rewriter_recipe

    with cli_errors():
        result = run_rewriter_recipe(
            config, stage=stage, overrides=set_ or [], profile=profile, output_dir=output, resume=resume
        )
    m = result.metrics
    typer.echo(_loss_line(m, f"trained {m.get('steps', '?')} steps in {result.seconds:.1f} s"))
    for key, value in m.items():  # holdout accuracies (PRO's top1/pair_acc, SFT's token accuracy), not counters
        if key.startswith("eval_") and ("acc" in key or "top1" in key) and isinstance(value, float):
            typer.echo(f"  {key}: {value:.4f}")
    typer.echo(
        f"model: {result.model_dir}\nlog: {result.log_path}\n"
        f"use it: lumir eval flickr8k --embedder mini --rewrite trained:{result.model_dir}"
    )
    from lumir.rewrite.artifact import read_manifest

    follow = {"sft": "pro", "pro": "ppo"}.get(str((read_manifest(result.model_dir) or {}).get("stage")))
    if follow:
        typer.echo(
            f"next stage: lumir train rewriter --config recipes/rewriter/{follow}.yaml "
            f"--set model.init={result.model_dir}"
        )


@train_app.command("reranker")
def reranker(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Recipe YAML, e.g. recipes/reranker/lamra_rank.yaml.")
    ],
    profile: ProfileOption = None,
    set_: SetOption = None,
    output: OutputOption = None,
    resume: ResumeOption = True,
) -> None:
    """Train a LamRA-Rank reranker LoRA (joint pointwise + listwise) from a recipe; prints how to rerank with it."""
    from lumir.train.reranker import run_reranker_recipe

    with cli_errors():
        result = run_reranker_recipe(config, overrides=set_ or [], profile=profile, output_dir=output, resume=resume)
    m = result.metrics
    head = f"trained {m.get('steps', '?')} steps in {result.seconds:.1f} s ({m.get('seconds_per_step', '?')} s/step)"
    typer.echo(_loss_line(m, head))
    for key in ("eval_point_acc", "eval_list_acc"):
        if isinstance(m.get(key), float):
            typer.echo(f"  {key}: {m[key]:.4f}")
    typer.echo(
        f"model: {result.model_dir}\nlog: {result.log_path}\n"
        f"use it: lumir eval scifact --embedder minilm --rerank yes-no:llm=hf:{result.model_dir}"
    )


@train_app.command("prompt")
def prompt(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Recipe YAML, e.g. recipes/prompt_tuning/lamp_mini.yaml.")
    ],
    output: OutputOption = None,
    data: DataOption = None,
    set_: SetOption = None,
    profile: ProfileOption = None,
) -> None:
    """Train LAMP action-aware prompts (two-stage, §3.4) from a ``kind: prompt_tuning`` recipe; resumes from the
    output folder's checkpoint; prints where the model went and how to re-score with it."""
    from lumir.train.recipe import run_recipe

    with cli_errors():
        result = run_recipe(config, set_ or [], profile=profile, data=data, output_dir=output)
    last = result["epochs"][-1] if result["epochs"] else {}
    typer.echo(f"trained {result['steps']} steps in {result['seconds']:.1f} s; last epoch: {json_line(last)}")
    typer.echo(
        f"model: {result['model']}\nuse it: lumir eval flickr8k --embedder mini "
        f"--rerank action-aware:model={result['model']},knowledge=KNOWLEDGE.jsonl"
    )


def _loss_line(metrics: dict[str, object], head: str) -> str:
    """``head`` followed by the final training loss and the holdout loss, when the trainer reported them."""
    line = head
    if isinstance(metrics.get("train_loss"), (int, float)):
        line += f"; final loss {metrics['train_loss']:.4f}"
    if isinstance(metrics.get("eval_loss"), (int, float)):
        line += f", holdout loss {metrics['eval_loss']:.4f}"
    return line


def json_line(entry: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in entry.items())
