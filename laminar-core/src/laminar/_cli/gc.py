"""``laminar gc``: delete old executions and the blobs nothing references any more."""

from __future__ import annotations

from pathlib import Path

import click

from laminar._cli.output import emit_json, json_option, size_text
from laminar._plugins.manager import resolve_datastore
from laminar._storage import gc as collector


def _datastore_url(text: str) -> str:
    if "://" in text:
        return text
    path = Path(text)
    if not path.is_dir():
        raise click.BadParameter(
            f"{text!r} is neither a datastore URL (file:///path, s3://bucket/prefix, ...) nor a directory",
            param_hint="'DATASTORE'",
        )
    return path.resolve().as_uri()


def _age(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return collector.parse_age(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command()
@click.argument("datastore", metavar="DATASTORE")
@click.option(
    "--keep-last", type=click.IntRange(min=0), default=None, help="Keep the N newest executions of each flow."
)
@click.option(
    "--older-than",
    metavar="AGE",
    default=None,
    callback=_age,
    help="Delete only executions created longer ago than AGE (90s, 30m, 12h, 7d, 2w).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be deleted, and delete nothing.")
@json_option
def gc(datastore: str, keep_last: int | None, older_than: float | None, dry_run: bool, as_json: bool) -> None:
    """Delete executions in DATASTORE, and the stored values no remaining execution references.

    Without --keep-last or --older-than no execution is deleted, only unreferenced values. Nothing is
    deleted while an execution in the datastore is running (holds a live lease).
    """
    store = resolve_datastore(_datastore_url(datastore))
    result = collector.collect(store, keep_last=keep_last, older_than=older_than, dry_run=dry_run)
    kept = result.kept
    saved = kept.referenced_bytes - kept.unique_bytes
    if as_json:
        emit_json(
            {
                "dry_run": dry_run,
                "deleted_executions": [{"flow": e.flow, "id": e.id} for e in result.deleted_executions],
                "kept_executions": len(result.kept_executions),
                "deleted_blobs": len(result.deleted_blobs),
                "freed_bytes": result.freed_bytes,
                "blobs": result.blobs_after,
                "references": kept.references,
                "referenced_bytes": kept.referenced_bytes,
                "stored_bytes": kept.unique_bytes,
                "dedup_saved_bytes": saved,
                "inline_values": kept.inline,
                "copied_layers": [
                    {"flow": loan.flow, "execution": loan.execution, "layer": loan.layer}
                    for loan in result.copied
                ],
            }
        )
        return
    verb = "would delete" if dry_run else "deleted"
    for execution in result.deleted_executions:
        click.echo(f"{verb} execution {execution.id} of flow {execution.flow}")
    for loan in result.copied:
        click.echo(
            f"{'would copy' if dry_run else 'copied'} the records of the {len(loan.splits)} split(s) layer "
            f"{loan.layer} of execution {loan.execution} reuses from {', '.join(sorted(loan.lenders))} into it"
        )
    click.echo(
        f"{verb} {len(result.deleted_executions)} execution(s) and {len(result.deleted_blobs)} blob(s): "
        f"{'would free' if dry_run else 'freed'} {size_text(result.freed_bytes)} ({result.freed_bytes} bytes)"
    )
    ratio = kept.referenced_bytes / kept.unique_bytes if kept.unique_bytes else 1.0
    click.echo(
        f"kept {len(result.kept_executions)} execution(s); {kept.references} reference(s) to "
        f"{len(kept.sizes)} blob(s): {size_text(kept.referenced_bytes)} referenced, "
        f"{size_text(kept.unique_bytes)} stored once (dedup saves {size_text(saved)}, {ratio:.2f}x); "
        f"{kept.inline} small value(s) kept inline in their records"
    )
