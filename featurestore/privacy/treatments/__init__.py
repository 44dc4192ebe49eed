"""Treatments: what a policy does to a column before it is stored, one module each, behind one
protocol (:class:`~.base.Treatment`).

A policy file names a treatment per column (``treatment: keyed_hash``); :class:`ColumnRule
<featurestore.policy.model.ColumnRule>` keeps that name and :func:`treatment_of` turns it into the
object that knows everything else: how to apply it to a column, the stored forms of a raw value
under every key id (lookups, erasure, tombstones and holds), whether and how it reverses, the key
kind it needs, the type it stores, the words legal reads in ``policy plan``, and when two rules
store the same values (:func:`same`, asked by both the plan and ``approve --treat-existing``).
No other module compares treatment names.

>>> sorted(REGISTRY)
['drop', 'generalize', 'keep', 'keyed_hash', 'tokenize']
>>> treatment("tokenize").reversible, treatment("keyed_hash").key_kind, treatment("drop").stored
(True, 'hmac', False)

How to add a treatment (say ``mask``):

1. Add a module ``featurestore/privacy/treatments/mask.py`` with a class that subclasses
   :class:`~.base.Treatment` and sets every attribute (``name = "mask"``, ``key_kind``,
   ``output``, ``rewrites``, ``reversible``, ``options``) and implements ``apply``,
   ``describe`` and ``same``; override ``apply_all``, ``stored_forms``, ``lookup_forms`` and
   ``reverse`` where the defaults (one column at a time; stored as given; not reversible) are
   wrong. Its arithmetic on Arrow columns can live in the module; mechanisms shared with other
   code (normalize, HMAC, AES-SIV) are in :mod:`featurestore.privacy.pseudonymize`. Import
   pyarrow and those inside the methods: policies load and plans are worded without them.
2. Register it: import it here and add one line to :data:`REGISTRY`. Policy files, the JSON
   schema's enum (``policy.model.TREATMENTS`` is read from the registry) and every module that
   treats, looks up, erases, re-identifies or words data then know it.
3. If it takes options of its own (a new column setting, like ``generalize``'s bins): add the
   field to ``ColumnRule`` in ``featurestore/policy/model.py``, read and check it in
   ``featurestore/policy/loader.py`` (``COLUMN_KEYS`` and ``_classification``, which asks
   ``options`` whether the treatment reads a setting), and describe it in
   ``featurestore/policy/schema.py``; name it in ``options``.
4. Add it to the tests: ``tests/test_treatments.py`` checks every registered treatment against
   the protocol by itself; add a case for its plan words and for each option that changes its
   stored values, and a round trip through ingestion and lookup if it stores join keys.

So a treatment without options touches 3 files (its module, this registry, its tests); with
options, 6 (also ``policy/model.py``, ``policy/loader.py``, ``policy/schema.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import KeyKind, Output, Target, Treatment
from .drop import Drop
from .generalize import Generalize
from .keep import Keep
from .keyed_hash import KeyedHash
from .tokenize import Tokenize

if TYPE_CHECKING:
    from .base import ColumnRule

REGISTRY: dict[str, Treatment] = {
    t.name: t
    for t in (
        KeyedHash(),
        Tokenize(),
        Generalize(),
        Drop(),
        Keep(),
    )
}
"""Every treatment by the name policy files use, in the order documentation lists them."""

NAMES = tuple(REGISTRY)
"""The treatment names policy files may use."""


def treatment(name: str) -> Treatment:
    """The treatment of a name (a KeyError for a name the registry does not have: policies are
    checked against :data:`NAMES` when they are loaded)."""
    return REGISTRY[name]


def treatment_of(rule: ColumnRule) -> Treatment:
    """The treatment a column rule names."""
    return REGISTRY[rule.treatment]


def same(a: ColumnRule, b: ColumnRule) -> bool:
    """Whether two rules store exactly the same values for the same raw data (a classification
    kind may differ); the one comparison behind ``policy plan`` and ``approve --treat-existing``."""
    return treatment_of(a).same(a, b)


__all__ = [
    "NAMES",
    "REGISTRY",
    "KeyKind",
    "Output",
    "Target",
    "Treatment",
    "same",
    "treatment",
    "treatment_of",
]
