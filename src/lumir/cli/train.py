"""``lumir train ...``: run training recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lumir.cli.run import cli_errors

train_app = typer.Typer(help="Train models from YAML recipes (recipes/...).", no_args_is_help=True)


@train_app.command("embedder")
def embedder(
    config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML, e.g. recipes/mini/flickr8k.yaml.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output folder (default: the recipe's).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Folder holding flickr8k/ (default: $LUMIR_DATA, ../shared/data).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a recipe value: --set train.epochs=5 (repeatable).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the output folder's checkpoint if there is one.")] = True,
) -> None:
    """Train an embedder from a recipe; prints where the model went and how to use it."""
    from lumir.train.recipe import run_recipe

    with cli_errors():
        result = run_recipe(config, set_ or [], data=data, output_dir=output, resume=resume)
    s = result.summary
    typer.echo(
        f"trained {s.epochs} epochs / {s.steps} steps in {s.seconds:.1f} s; final loss {s.final_loss:.4f}, "
        f"temperature {s.temperature:.4f}"
    )
    for key, value in result.validation.items():
        typer.echo(f"  {key}: {value:.2f}")
    typer.echo(f"model: {result.model_dir}\nuse it: lumir eval flickr8k --embedder mini:{result.model_dir}")
