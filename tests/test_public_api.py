"""The public surface is explicit, documented and its examples run."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import featurestore


def test_all_lists_exactly_the_public_names_sorted() -> None:
    public = sorted(n for n in dir(featurestore) if not n.startswith("_") and n[0].isupper())  # FeatureStore is lazy
    assert featurestore.__all__ == sorted(featurestore.__all__)
    assert featurestore.__all__ == public


def test_every_public_name_has_a_docstring() -> None:
    for name in featurestore.__all__:
        assert getattr(featurestore, name).__doc__, name


def test_error_tree() -> None:
    from featurestore import errors

    for name in featurestore.__all__:
        obj = getattr(featurestore, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, errors.FeatureStoreError), name
            assert name in errors.__doc__, f"{name} missing from the drawn tree"


MODULES = sorted(
    m.name for m in pkgutil.walk_packages(featurestore.__path__, "featurestore.") if "migrations" not in m.name
)


@pytest.mark.parametrize("module", MODULES)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
