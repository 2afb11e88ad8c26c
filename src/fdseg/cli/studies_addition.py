"""Commands of the data-addition study: ``fdseg divergence`` (and the ``experiment`` group's studies)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fdseg.cli import _echo, app


def parse_numbers(text: str | None, option: str) -> list[float | int] | None:
    """``"8,15,30"`` -> ``[8, 15, 30]`` (ints where whole, floats otherwise); ``None`` stays ``None``.

    Raises:
        ValueError: an item that is not a number, or an empty list (naming ``option``).
    """
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"{option} needs a comma-separated list of numbers, got {text!r}")
    out: list[float | int] = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"{option}: {item!r} is not a number") from None
        out.append(
            int(value) if value.is_integer() and "." not in item and "e" not in item.lower() else value
        )
    return out


@app.command()
def divergence(
    base: Annotated[str, typer.Argument(help="Base dataset spec NAME:PATH[?opt=v].")],
    novel: Annotated[str, typer.Argument(help="Novel dataset spec; images come from its training part.")],
    k: Annotated[str | None, typer.Option("--k", help="Added counts, e.g. 8,15,30.")] = None,
    fractions: Annotated[
        str | None,
        typer.Option("--fractions", help="Fractions of the novel training pool (default 0.25,0.5,1)."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for divergence.csv/.json.")] = None,
    size: Annotated[
        int | None, typer.Option("--size", help="Compare at SIZE² (the training resize); default native.")
    ] = None,
    grey: Annotated[
        str, typer.Option(help="bt601 (0.299/0.587/0.114) or luminosity (0.21/0.72/0.07).")
    ] = "bt601",
    base_set: Annotated[str, typer.Option(help="train (the base training split) or all.")] = "train",
    split_scheme: Annotated[str, typer.Option(help="Base split scheme (code or paper).")] = "code",
    split_seed: Annotated[int, typer.Option(help="Base split seed.")] = 35,
    selection: Annotated[str, typer.Option(help="first (natural id order) or random (seeded).")] = "first",
    selection_seed: Annotated[int, typer.Option(help="Seed of --selection random.")] = 0,
) -> None:
    """KL and JS distance of pixel intensities: base training images vs each added novel subset."""
    from fdseg.analysis.divergence import DivergenceSettings
    from fdseg.experiments.divergence import SubsetRule, divergence_study

    if k is not None and fractions is not None:
        raise ValueError("give --k or --fractions, not both")
    settings = DivergenceSettings(grey=grey)
    rule = SubsetRule(
        split_scheme=split_scheme,
        split_seed=split_seed,
        base_set=base_set,
        selection=selection,
        selection_seed=selection_seed,
    )
    if size is not None and size < 8:
        raise ValueError(f"--size must be >= 8, got {size}")
    result = divergence_study(
        base,
        novel,
        k=parse_numbers(k, "--k"),
        fractions=parse_numbers(fractions, "--fractions"),
        size=size,
        settings=settings,
        rule=rule,
    )
    meta: dict[str, Any] = result.meta
    _echo(
        f"base: {meta['base_images']} {meta['base_set']} images of {base}; novel pool: {meta['novel_pool']} "
        f"({meta['novel_pool_rule']}) of {novel}; size: {meta['size']}"
    )
    _echo(
        f"grey {settings.grey} {list(result.settings['grey_weights'])}, {settings.bins} bins on "
        f"{list(settings.value_range)}, eps {settings.eps}, KL(base || novel), "
        "JS distance = sqrt(JSD), natural log"
    )
    _echo(result.table_text)
    if out is not None:
        csv_path, json_path = result.write(out)
        _echo(f"written: {csv_path} {json_path}")
