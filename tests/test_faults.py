"""Every file fault gets a StoreDamaged that names the file and the fix: never a raw DuckDB, SQLite or
SQLAlchemy error, never a CLI traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.csv as pacsv
import pytest
from typer.testing import CliRunner

from featurestore import FeatureStore, StoreDamaged
from featurestore.cli import app

from .conftest import CUSTOMER, PROFILE, profile_rows


@pytest.fixture
def built(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    with FeatureStore.init(root) as fs:
        fs.apply([CUSTOMER, PROFILE])
        fs.ingest("profile", profile_rows(20_000))
    return root


def truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def truncate_to_header(path: Path) -> None:
    os.truncate(path, 1000)


def garble_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, 2 * len(data) // 3, 7):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def replace_with_text(path: Path) -> None:
    path.write_text("this is not a database\n" * 100)


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated to half": truncate_half,
    "truncated to its header": truncate_to_header,
    "garbled in the middle": garble_middle,
    "replaced by text": replace_with_text,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_offline_file_is_named_with_the_fix(built: Path, damage: str) -> None:
    rows = built / "rows.csv"
    pacsv.write_csv(profile_rows(2), rows)
    DAMAGE[damage](built / "offline.duckdb")
    with pytest.raises(StoreDamaged) as info:
        with FeatureStore(built) as fs:
            fs.read("profile")
    assert str(info.value) == (
        f"the offline store file {built.resolve() / 'offline.duckdb'} is damaged (a failed disk, a "
        "truncated copy or an edit outside DuckDB): restore it from a backup; `featurestore doctor` "
        "checks the whole store."
    )
    result = CliRunner().invoke(app, ["batches", "-s", str(built)])
    assert result.exit_code == 1, result.output
    assert "is damaged" in result.output and "Traceback" not in result.output, (
        "batches never reports committed over a damaged file"
    )
    # An append does not read old blocks, so it may succeed over damage elsewhere; a read of the damage never does.
    CliRunner().invoke(app, ["ingest", "profile", str(rows), "-s", str(built)])
    result = CliRunner().invoke(app, ["batches", "-s", str(built)])
    assert result.exit_code == 1 and "is damaged" in result.output


@pytest.mark.parametrize("damage", ["truncated to half", "replaced by text", "garbled in the middle"])
def test_a_damaged_registry_is_named_with_the_fix(built: Path, damage: str) -> None:
    path = built / "registry.db"
    for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    DAMAGE[damage](path)
    with pytest.raises(StoreDamaged) as info:
        with FeatureStore(built) as fs:
            fs.list_batches()
    assert str(info.value).startswith(f"the registry {built.resolve() / 'registry.db'} is damaged")
    assert "featurestore db recover" in str(info.value)
    result = CliRunner().invoke(app, ["views", "-s", str(built)])
    assert result.exit_code == 1 and "is damaged" in result.output and "Traceback" not in result.output


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MB tmpfs (needs root to mount; skipped with the reason otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the full-disk and read-only cases needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, so no open file of this test keeps the disk busy."""
    exe = Path(sys.executable).parent / "featurestore"
    return subprocess.run([str(exe), *args, "-s", str(root)], capture_output=True, text=True, timeout=120)


def test_a_full_disk_and_a_read_only_disk_are_named_with_the_fix(built: Path, small_disk: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    root = small_disk / "store"
    shutil.copytree(built, root)
    big = tmp_path / "big.parquet"
    pq.write_table(profile_rows(400_000), big)
    full = cli(root, "ingest", "profile", str(big))
    assert full.returncode == 1 and "Traceback" not in full.stderr + full.stdout
    assert f"the offline store file {root / 'offline.duckdb'} is on a full disk: free space on that disk" in full.stderr
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    with FeatureStore(root) as fs:
        assert fs.read("profile").num_rows == 20_000, "nothing of the failed batch is visible"
        assert [b.status for b in fs.list_batches()] == ["committed", "aborted"], "the pending batch was settled"
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    readonly = cli(root, "ingest", "profile", str(big))
    assert readonly.returncode == 1 and "Traceback" not in readonly.stderr + readonly.stdout
    assert (
        f"the registry {root / 'registry.db'} cannot be opened for writing: make the store directory" in readonly.stderr
    )
