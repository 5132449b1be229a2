"""``lumir demo``: index sample photos (and Flickr8k when present), run example queries, write an HTML gallery."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer

from lumir.cli.run import CLI_ERRORS, fail


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (photos, indexes, demo.html).")] = Path(
        "runs/demo"
    ),
    data: Annotated[
        Path | None, typer.Option(help="Folder holding flickr8k/ (default: $LUMIR_DATA, ../shared/data).")
    ] = None,
    no_flickr: Annotated[
        bool, typer.Option("--no-flickr", help="Sample photos only, even if Flickr8k is found.")
    ] = False,
    k: Annotated[int, typer.Option("-k", help="Results per query.")] = 5,
    flickr_limit: Annotated[
        int | None, typer.Option(help="Use only the first N Flickr8k test photos (faster).", min=1)
    ] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open the gallery in a web browser.")] = False,
) -> None:
    """Show what lumir does, offline: text→image, image→text and composed searches with lumir-mini (its
    open-vocabulary variant, `mini:open_vocab=1`, so photos outside Flickr's world are found too)."""
    from lumir.demo import DemoWarning, run_demo
    from lumir.demo.run import describe_sources

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DemoWarning)
        try:
            result = run_demo(
                out,
                data=data,
                flickr=not no_flickr,
                k=k,
                flickr_limit=flickr_limit,
                log=lambda s: typer.echo(s, err=True),
            )
        except CLI_ERRORS as err:
            _warn(caught)
            fail(err)
    _warn(caught)
    typer.echo(f"sources: {describe_sources(result.sources)}")
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(
        f"indexed {result.n_photos} photos and {result.n_captions} captions; "
        f"took {result.seconds['total']:.0f} s in all"
    )
    typer.echo("top-1 per query; ✓: it is the known right answer, else where that answer ranked:")
    section = ""
    for top in result.top1:
        if top.section != section:
            section = top.section
            typer.echo(f"\n{section}:")
        mark = "✓" if top.correct else " "
        hit = top.hit if len(top.hit) <= 100 else top.hit[:97] + "..."
        where = ""
        if top.has_known and not top.correct:
            where = f"  (known answer: #{top.known_rank})" if top.known_rank else f"  (known answer not in top {k})"
        typer.echo(f"  {mark} {top.query}  ->  {hit}  [{top.score:.3f}]{where}")
    typer.echo(f"\ngallery: {result.html}")
    if open_:
        import webbrowser

        webbrowser.open(result.html.resolve().as_uri())


def _warn(caught: list[warnings.WarningMessage]) -> None:
    """Print the demo's own warnings plainly; show any other warning the usual way."""
    from lumir.demo import DemoWarning

    for w in caught:
        if issubclass(w.category, DemoWarning):
            typer.secho(f"warning: {w.message}", fg=typer.colors.YELLOW, err=True)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
