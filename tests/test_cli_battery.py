"""Every CLI command against a battery of malformed arguments and files: an error message and exit
1, or typer's usage error and exit 2; never a traceback, never an unhandled exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from featurestore import FeatureStore
from featurestore.cli import app

from .conftest import CUSTOMER, PROFILE, profile_rows
from .test_cli import all_commands

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9)
)
SKIP = {"serve", "demo"}  # they would serve or build a demo for real on a valid argument; tested on their own


@pytest.fixture(scope="module")
def battery(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("battery")
    store = root / "store"
    with FeatureStore.init(store) as fs:
        fs.apply([CUSTOMER, PROFILE])
        fs.ingest("profile", profile_rows(3))
    (root / "binary.yaml").write_bytes(b"\x00\x01\xfe\xff" * 64)
    (root / "bomb.yaml").write_text(BOMB)
    (root / "adir").mkdir()
    (root / "bad.csv").write_text("customer_id,event_timestamp\nsecret-key-1,2025-01-01T00:00:00Z,extra\n")
    (root / "plain").write_text("not a store\n")
    return {
        "store": str(store),
        "binary": str(root / "binary.yaml"),
        "bomb": str(root / "bomb.yaml"),
        "dir": str(root / "adir"),
        "missing": str(root / "nowhere" / "x.parquet"),
        "csv": str(root / "bad.csv"),
        "plain": str(root / "plain"),
        "device": "/dev/zero",
        "word": "profile:age",
    }


def check(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    output = result.output
    assert "Traceback" not in output, f"featurestore {' '.join(args)}:\n{output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"featurestore {' '.join(args)} raised {type(result.exception).__name__}: {result.exception}"
    )
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, output)
    if result.exit_code == 1:
        assert output.strip(), f"featurestore {' '.join(args)} failed without a message"
    assert "secret-key-1" not in output, "a raw value from a bad file reached the terminal"


@pytest.mark.parametrize("command", sorted(set(all_commands()) - SKIP))
def test_no_command_prints_a_traceback_for_bad_input(battery: dict[str, str], command: str, tmp_path: Path) -> None:
    words = command.split()
    if command == "init":  # init -s DIR creates a store there: keep the shared battery's directories store-free
        (tmp_path / "adir").mkdir()
        battery = {**battery, "dir": str(tmp_path / "adir"), "missing": str(tmp_path / "nowhere" / "x.parquet")}
    values = [battery[k] for k in ("binary", "bomb", "dir", "missing", "csv", "device", "word")]
    for value in values:
        for count in (1, 2, 3):
            check([*words, *([value] * count), "-s", battery["store"]])
    for store in (battery["missing"], battery["plain"], battery["dir"]):
        check([*words, "-s", store])
    check([*words, "--nonsense-option", "-s", battery["store"]])


def test_serve_refuses_a_bad_port_and_a_bad_store(battery: dict[str, str]) -> None:
    for args in (
        ["serve", "--port", "99999"],
        ["serve", "--port", "-1"],
        ["serve", "--port", "http"],
        ["serve", "-s", battery["missing"]],
        ["serve", "-s", battery["plain"]],
    ):
        check(args)


def test_bad_files_where_a_command_reads_one(battery: dict[str, str], tmp_path: Path) -> None:
    s = ["-s", battery["store"]]
    out = str(tmp_path / "out.parquet")
    for key in ("binary", "bomb", "dir", "missing", "csv", "device", "plain"):
        bad = battery[key]
        for args in (
            ["ingest", "profile", bad],
            ["push", "profile", bad],
            ["push", "profile", bad, "--to", "both"],
            ["get-historical", bad, "-f", "profile:age", "--out", out],
            ["get-historical", battery["csv"], "-f", "profile:age", "--out", bad],
            ["training-set", "create", "ts", bad, "-f", "profile:age"],
            ["policy", "lint", bad],
            ["policy", "plan", bad],
            ["policy", "show", bad],
            ["policy", "approve", bad, "--by", "a", "--role", "b"],
            ["erase", "subject", "--entity", "customer", "--keys-file", bad],
            ["keys", "generate-master", "--out", bad],
        ):
            check([*args, *s])
