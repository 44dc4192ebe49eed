"""One name pattern everywhere, and stored text that cannot take over the terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from featurestore import DefinitionError, Entity, FeatureStore, FeatureView, PolicyError
from featurestore.cli import app
from featurestore.errors import RetrievalError
from featurestore.policy import load_policy

from .conftest import CUSTOMER, PROFILE, profile_rows
from .test_governance import POLICY

BAD_NAMES = ["ts\n", "ts\r", "a b", "1abc", "", "_x", "x" * 101, "naïve", "a/b", "a\x1bb", "a\u202eb", "a.b"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_are_refused_everywhere(tmp_path: Path, name: str) -> None:
    with pytest.raises(DefinitionError, match="invalid name"):
        Entity(name=name, join_keys={"k": "string"})
    with pytest.raises(DefinitionError):
        FeatureView(name=name, entity="customer", features={"a": "int64"})
    with pytest.raises(DefinitionError):
        FeatureView(name="v", entity="customer", features={name: "int64"})
    with FeatureStore(memory=True) as fs:
        fs.apply([CUSTOMER, PROFILE])
        fs.ingest("profile", profile_rows(1))
        import pyarrow as pa

        spine = pa.table({"customer_id": ["c0"], "event_timestamp": profile_rows(1).column("event_timestamp")})
        with pytest.raises((RetrievalError, DefinitionError)):
            fs.create_training_set(name, spine, ["profile:age"])
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.replace("id: people", f"id: {name!r}" if name else "id: ''"))
    with pytest.raises(PolicyError, match="invalid policy id"):
        load_policy(policy)


def test_good_names_at_the_limits_are_accepted() -> None:
    Entity(name="a" * 100, join_keys={"k_1": "string"})
    FeatureView(name="V_2", entity="customer", features={"x" * 100: "int64"})


def test_stored_text_is_printed_escaped(tmp_path: Path) -> None:
    root = tmp_path / "store"
    evil = FeatureView(
        name="profile",
        entity="customer",
        features={"age": "int64"},
        owner="team\x1b[2J\x1b[1;1Hall clear",
        description="right\u202etfel",
    )
    with FeatureStore.init(root, actor="mallory\x1b[8m") as fs:
        fs.apply([CUSTOMER, evil])
    for args in (["views"], ["audit", "show"]):
        result = CliRunner().invoke(app, [*args, "-s", str(root)])
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\u202e" not in result.output
    assert "\\x1b" in CliRunner().invoke(app, ["audit", "show", "-s", str(root)]).output, "shown, as an escape"
