"""The README's Python example runs as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "the README has a Python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(block.group(1), str(README), "exec"), namespace)  # noqa: S102 - our own documentation
    store = namespace["store"]
    assert store.reproduce_training_set("churn_v1").matches  # type: ignore[attr-defined]
    assert store.get_online_features({"customer_id": "C1"}, ["spend:txn_count"]).statuses == {"txn_count": ["expired"]}  # type: ignore[attr-defined]
    assert os.path.isdir(tmp_path / "my-store")
