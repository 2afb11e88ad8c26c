"""The fdseg command line: the only place that parses arguments, reads env vars, seeds, picks devices."""

from __future__ import annotations

from collections.abc import Sequence

import typer

import fdseg

app = typer.Typer(
    name="fdseg",
    help="Feature-discrepancy losses, U-Nets, multi-site data and per-sample evaluation.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the fdseg version."""
    typer.echo(fdseg.__version__)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fdseg`` script; returns the exit code."""
    try:
        app(args=list(argv) if argv is not None else None, standalone_mode=False)
    except SystemExit as exc:  # pragma: no cover - typer exits on --help
        return int(exc.code or 0)
    return 0
