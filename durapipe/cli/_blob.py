"""``durapipe blob get``: the bytes behind a blob reference (a document, an image a run made)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

import durapipe as dp
from durapipe._words import counted
from durapipe.cli._app import app, fail, handles_errors

blob_app = typer.Typer(
    help="Blobs: the binary inputs and outputs of runs (documents, images).", no_args_is_help=True
)
app.add_typer(blob_app, name="blob")


@blob_app.command("get")
@handles_errors
def blob_get(
    ref: Annotated[
        str,
        typer.Argument(
            help="sha256:<hex>, or the blob reference as JSON (as a run's output shows it).",
            show_default=False,
        ),
    ],
    file: Annotated[Path, typer.Argument(help="Where to write the bytes ('-': stdout).")],
) -> None:
    """Write the bytes of blob REF, from this machine's blob store (DURAPIPE_BLOB_DIR), to FILE."""
    try:
        blob = (
            dp.spec.Blob.model_validate_json(ref)
            if ref.lstrip().startswith("{")
            else dp.spec.Blob(blob=ref)
        )
    except ValidationError:
        raise fail(
            f"'{ref[:80]}' is not a blob reference: give sha256:<64 hex digits> or the reference as JSON"
        ) from None
    try:
        data = dp.stores.blob_store().get(blob)
    except dp.stores.BlobNotFound as err:
        raise fail(str(err), code=1) from None  # as a run id that names no run: exit 1
    if str(file) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        file.write_bytes(data)
    except OSError as err:
        raise fail(f"cannot write '{file}': {err.strerror}") from None
    typer.echo(f"wrote {counted(len(data), 'byte')} of {blob.blob} to {file}", err=True)
