"""Who a data subject is in each view: the stored forms of a raw id (itself, its pseudonym under
every HMAC key id, its token under every AES-SIV key id), and the subject hash that tombstones
and holds keep instead of any of those.

A subject hash is ``sha256("featurestore-subject:" + pseudonym)`` of the subject's pseudonym
under one HMAC key id (normalized as the view's policy normalizes the key). It lets ingestion
and materialization recognize an erased subject (hash the incoming key, compare), while the
registry holds neither the raw id nor a pseudonym that appears in the data: a byte scan of the
store for the subject's pseudonyms finds nothing after erasure, tombstones included.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DefinitionError, KeyManagementError, PolicyViolation, Problem, RetrievalError
from ..policy import Policy
from ..privacy.keys import KeyRing
from ..privacy.pseudonymize import keyed_hash, token_context
from ..privacy.treatments import treatment_of
from ..types import arrow_type
from ..versions import ViewVersion
from .treatments import Treatments


def subject_key(vv: ViewVersion) -> str:
    """The one join key that identifies a subject in a view (composite keys are not supported)."""
    if len(vv.join_keys) != 1:
        raise DefinitionError(
            [
                Problem(
                    f"feature view '{vv.view.name}' has the composite key {', '.join(vv.join_keys)}; "
                    "erasure, holds and lineage need an entity with one join key"
                )
            ]
        )
    return next(iter(vv.join_keys))


def subject_hash(pseudonym: str) -> str:
    """The hash tombstones and holds keep of a subject's pseudonym.

    >>> subject_hash("hmac-1:00")[:16]
    'e0beccef363a02b3'
    """
    return hashlib.sha256(f"featurestore-subject:{pseudonym}".encode()).hexdigest()


class Subjects:
    """Stored forms and subject hashes, with the store's keys.

    Args:
        keys: The store's key ring.
        treatments: How policies treat keys (for the stored forms).
    """

    def __init__(self, keys: KeyRing, treatments: Treatments) -> None:
        self.keys = keys
        self.treatments = treatments

    def raw_column(self, vv: ViewVersion, raw_ids: Sequence[str]) -> pa.ChunkedArray:
        """Raw ids as a column of the view's key type (an id that does not fit is an error)."""
        key = subject_key(vv)
        try:
            return pa.chunked_array([pa.array(list(raw_ids), pa.string()).cast(arrow_type(vv.join_keys[key]))])
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise RetrievalError(
                f"a subject key given is not a valid {vv.join_keys[key]} for '{key}' of {vv.ref}"
            ) from None

    def stored_forms(self, policy: Policy | None, vv: ViewVersion, raw_ids: Sequence[str]) -> list[object]:
        """Every form these subjects' keys may be stored in: as given (typed), and as the
        policy's pseudonyms or tokens under every key id."""
        forms = [f for per_id in self.stored_forms_by_id(policy, vv, raw_ids) for f in per_id]
        return list(dict.fromkeys(forms))

    def stored_forms_by_id(self, policy: Policy | None, vv: ViewVersion, raw_ids: Sequence[str]) -> list[list[object]]:
        """:meth:`stored_forms` per raw id, computed for all of them at once (one native pass per key id)."""
        key = subject_key(vv)
        raw = self.raw_column(vv, raw_ids)
        columns = [raw.to_pylist()]
        if policy is not None:
            columns += [variant.to_pylist() for variant in self.treatments.key_variants(policy, vv.view.name, key, raw)]
        return [list(dict.fromkeys(f for f in forms if f is not None)) for forms in zip(*columns, strict=True)]

    def hashes(self, policy: Policy | None, vv: ViewVersion, raw: pa.ChunkedArray) -> list[pa.ChunkedArray]:
        """Subject hashes of a raw key column as the view normalizes it, one column per HMAC key id."""
        rule = policy.rule(subject_key(vv)) if policy is not None else None
        return self._hashes(
            raw, rule.normalize if rule is not None else "none", rule.region if rule is not None else None
        )

    def _hashes(self, raw: pa.ChunkedArray, normalize: str, region: str | None) -> list[pa.ChunkedArray]:
        text = raw.cast(pa.string()) if raw.type != pa.string() else raw
        result = []
        for key in self.keys.keys("hmac") or [self.keys.current("hmac")]:
            pseudonyms = keyed_hash(text, key, normalize=normalize, region=region)
            result.append(
                pa.chunked_array(
                    [pa.array([None if p is None else subject_hash(p) for p in pseudonyms.to_pylist()], pa.string())]
                )
            )
        return result

    def entity_hashes(self, views: Sequence[tuple[Policy | None, ViewVersion]], raw_ids: Sequence[str]) -> list[str]:
        """Every subject hash of these raw ids that any view of the entity, present or future,
        could compute: under every HMAC key id and every normalization (phones with the regions
        the policies name); a normalization an id does not fit is skipped."""
        return list(dict.fromkeys(h for per_id in self.entity_hashes_by_id(views, raw_ids) for h in per_id))

    def entity_hashes_by_id(
        self, views: Sequence[tuple[Policy | None, ViewVersion]], raw_ids: Sequence[str]
    ) -> list[list[str]]:
        """:meth:`entity_hashes` per raw id, computed for all of them at once."""
        if not views:
            return [[] for _ in raw_ids]
        raw = self.raw_column(views[0][1], raw_ids)
        forms: set[tuple[str, str | None]] = {("none", None), ("text", None), ("email", None)}
        for policy, vv in views:
            rule = policy.rule(subject_key(vv)) if policy is not None else None
            if rule is not None:
                forms.add((rule.normalize, rule.region))
        found: list[list[str]] = [[] for _ in raw_ids]
        for normalize, region in sorted(forms, key=lambda f: (f[0], f[1] or "")):
            try:
                columns = self._hashes(raw, normalize, region)
            except PolicyViolation:  # e.g. an id that is not a phone number
                continue
            for column in columns:
                for i, digest in enumerate(column.to_pylist()):
                    if digest is not None:
                        found[i].append(digest)
        return [list(dict.fromkeys(per_id)) for per_id in found]

    def stored_hashes(self, policy: Policy | None, vv: ViewVersion, stored: pa.ChunkedArray) -> list[pa.ChunkedArray]:
        """Subject hashes of a column of stored keys (pseudonyms compare as they are, tokens are
        decrypted in memory, plain keys hashed), one column per HMAC key id that could match."""
        key = subject_key(vv)
        rule = policy.rule(key) if policy is not None else None
        treatment = treatment_of(rule) if rule is not None else None
        if treatment is not None and treatment.key_kind == "hmac":  # stored keys are the pseudonyms hashes are made of
            return [
                pa.chunked_array(
                    [pa.array([None if p is None else subject_hash(p) for p in stored.to_pylist()], pa.string())]
                )
            ]
        if rule is not None and treatment is not None and treatment.reversible:
            assert policy is not None
            context = token_context(policy.id, vv.view.name, key)
            raw: list[str | None] = []
            for token in stored.to_pylist():
                try:
                    raw.append(None if token is None else treatment.reverse(token, rule, self.keys, context=context))
                except KeyManagementError:
                    raw.append(None)
            return self.hashes(policy, vv, pa.chunked_array([pa.array(raw, pa.string())]))
        return self.hashes(policy, vv, stored)

    def matching(
        self, policy: Policy | None, vv: ViewVersion, stored: pa.ChunkedArray, wanted: set[str]
    ) -> pa.ChunkedArray:
        """A boolean mask: which stored keys belong to a subject whose hash is in `wanted`."""
        mask = pa.chunked_array([pa.array([False] * len(stored), pa.bool_())])
        if not wanted or len(stored) == 0:
            return mask
        values = pa.array(sorted(wanted), pa.string())
        for column in self.stored_hashes(policy, vv, stored):
            mask = pc.or_(mask, pc.fill_null(pc.is_in(column, value_set=values), False))
        return mask
