"""The ``featurestore`` command: each command parses its arguments, calls one FeatureStore
method and prints the result. Errors of the store are printed (no traceback) with exit code 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

if TYPE_CHECKING:
    from .store import FeatureStore

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

# Which FeatureStore method each command calls (checked by tests/test_cli.py).
COMMAND_METHODS: dict[str, str] = {
    "init": "init",
    "db upgrade": "upgrade_registry",
    "db current": "registry_revision",
    "plan": "plan",
    "apply": "apply",
    "ingest": "ingest",
    "views": "list_views",
    "versions": "view_versions",
    "batches": "list_batches",
    "demo": "featurestore.demo.run_demo",
}


class _Group(TyperGroup):
    """Turns a FeatureStoreError anywhere below into a message and exit code 1."""

    def invoke(self, ctx: Any) -> Any:
        from .errors import FeatureStoreError

        try:
            return super().invoke(ctx)
        except FeatureStoreError as exc:
            err.print("error: ", style="bold red", end="")
            err.print(str(exc), markup=False)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    help="A privacy-preserving feature store: versioned features, point-in-time training data, online serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(cls=_Group, help="Inspect and migrate the registry database.", no_args_is_help=True)
app.add_typer(db_app, name="db")

StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="The store directory.", show_default=True)]


def _open(store: Path) -> FeatureStore:
    from .store import FeatureStore

    return FeatureStore(store)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Directory to create the store in.")],
    registry: Annotated[
        str | None, typer.Option(help="Registry URL, e.g. postgresql://user@host/db (default: SQLite in DIR).")
    ] = None,
) -> None:
    """Create a store: featurestore.yaml, features/, policies/, registry and offline file."""
    from .store import FeatureStore

    FeatureStore.init(directory, registry_url=registry).close()
    out.print(f"Created a feature store in {directory}")
    out.print(f"Next: write definitions under {directory / 'features'} and run `featurestore apply -s {directory}`.")


@db_app.command("upgrade")
def db_upgrade(store: StoreOpt = Path(".")) -> None:
    """Migrate the registry schema to the newest revision."""
    from .store import FeatureStore

    before, after = FeatureStore.upgrade_registry(store)
    if before == after:
        out.print(f"The registry is already at the newest revision ({after}).")
    else:
        out.print(f"Upgraded the registry from {before or 'empty'} to {after}.")


@db_app.command("current")
def db_current(store: StoreOpt = Path(".")) -> None:
    """Show the registry's schema revision and the newest one this version knows."""
    from .store import FeatureStore

    current, head = FeatureStore.registry_revision(store)
    state = "up to date" if current == head else "behind: run `featurestore db upgrade`"
    out.print(f"registry revision: {current or 'none'}\nnewest revision:   {head}\n{state}")


@app.command()
def plan(store: StoreOpt = Path(".")) -> None:
    """Show what `apply` would change, from the definitions under features/."""
    with _open(store) as fs:
        out.print(str(fs.plan()), markup=False)


@app.command()
def apply(store: StoreOpt = Path(".")) -> None:
    """Register the definitions under features/ (a schema change makes a new view version)."""
    with _open(store) as fs:
        result = fs.apply()
        out.print(str(result), markup=False)
        if result.changes:
            out.print(f"Applied {len(result.changes)} change{'s' if len(result.changes) != 1 else ''}.")


@app.command()
def ingest(
    view: Annotated[str, typer.Argument(help="Feature view, 'name' (latest version) or 'name@v1'.")],
    path: Annotated[Path, typer.Argument(help="A .parquet or .csv file; streamed in batches.")],
    store: StoreOpt = Path("."),
) -> None:
    """Ingest a Parquet or CSV file into a feature view as one atomic batch."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with _open(store) as fs, Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(f"ingesting {path.name}", total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        result = fs.ingest(view, path, progress=progress)
    out.print(
        f"Ingested {result.rows:,} rows into {result.view}@v{result.version} "
        f"as batch {result.batch_id} at {result.ingested_at.isoformat()}"
    )


@app.command()
def views(store: StoreOpt = Path(".")) -> None:
    """List feature views (latest versions) with their entity, features and TTL."""
    with _open(store) as fs:
        table = Table("view", "version", "entity", "features", "ttl", "owner")
        for vv in fs.list_views():
            table.add_row(
                vv.view.name, f"v{vv.version}", vv.view.entity,
                ", ".join(f"{f.name}:{f.dtype}" for f in vv.view.features),
                str(vv.view.ttl or "-"), vv.view.owner or "-",
            )
        out.print(table)


@app.command()
def versions(
    view: Annotated[str, typer.Argument(help="Feature view name.")],
    store: StoreOpt = Path("."),
) -> None:
    """List every version of a feature view and its features."""
    with _open(store) as fs:
        table = Table("version", "latest", "features", "created")
        for vv in fs.view_versions(view):
            table.add_row(
                f"v{vv.version}", "yes" if vv.latest else "",
                ", ".join(f"{f.name}:{f.dtype}" for f in vv.view.features), vv.created_at.isoformat(timespec="seconds"),
            )
        out.print(table)


@app.command()
def batches(
    view: Annotated[str | None, typer.Argument(help="Only this feature view.")] = None,
    store: StoreOpt = Path("."),
) -> None:
    """List ingestion batches: id, view version, status, rows, time, source."""
    with _open(store) as fs:
        table = Table("batch", "view", "status", "rows", "ingested at", "source")
        for b in fs.list_batches(view):
            table.add_row(
                str(b.batch_id), f"{b.view}@v{b.version}", b.status,
                f"{b.rows:,}" if b.rows is not None else "-", b.ingested_at.isoformat(timespec="seconds"), b.source,
            )
        out.print(table)


@app.command()
def demo(
    directory: Annotated[Path, typer.Argument(help="Where to build the demo store.")] = Path("featurestore-demo"),
    customers: Annotated[int, typer.Option(help="Number of synthetic customers.", min=10)] = 2000,
    force: Annotated[bool, typer.Option(help="Replace an existing demo store in DIRECTORY.")] = False,
) -> None:
    """Build a store with synthetic customers and transactions and show every capability."""
    from .demo import run_demo

    run_demo(directory, customers=customers, force=force, echo=out.print)


def main() -> None:
    """Entry point of the `featurestore` console script."""
    app()
