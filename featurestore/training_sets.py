"""Training sets: point-in-time joins saved with a manifest that rebuilds them exactly.

Saving, loading and reproducing all go through read grants decided for the caller's purpose at
the moment of the call: a purpose revoked since a set was built can no longer load it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .context import StoreContext
from .entity_frames import content_hash, read_entity_frame
from .errors import NotFoundError, RetrievalError, did_you_mean
from .governance import MAINTAIN, PolicySnapshot
from .governance.treatments import treated
from .historical import Historical, JoinPart
from .policy import Policy
from .privacy.pseudonymize import detokenize, tokenize
from .privacy.treatments import treatment_of
from .refs import NAME_RE
from .registry.models import TrainingSetRow


@dataclass(frozen=True)
class TrainingSet:
    """A saved training set's manifest."""

    name: str
    description: str
    features: list[dict[str, Any]]
    entity_columns: list[str]
    timestamp_column: str
    as_of: datetime
    known_at_prediction_time: bool
    row_count: int
    content_hash: str
    policy_hashes: list[str]
    """``"<policy id>@<sha256>"`` of every approved policy governing its views when built."""
    purpose: str | None
    protected_columns: list[str]
    """Entity columns saved as tokens (raw keys of pseudonymized join keys)."""
    location: str
    created_at: datetime
    notes: list[dict[str, Any]]
    """What happened to its saved rows since it was built: rows left out past retention,
    erased subjects, rewrites (each with when, why and how many rows)."""

    @property
    def views(self) -> list[str]:
        """The names of the views its features come from."""
        return sorted({f["view"] for f in self.features})

    @property
    def services(self) -> dict[str, list[str]]:
        """The feature services (``name@vN``) it was built from, each with its resolved, version-pinned refs."""
        found: dict[str, list[str]] = {}
        for f in self.features:
            if f.get("service"):
                found.setdefault(f["service"], []).append(f["ref"])
        return found


@dataclass(frozen=True)
class Reproduction:
    """A rebuilt training set and whether it matches the saved one's content hash."""

    name: str
    expected_hash: str
    content_hash: str
    matches: bool
    table: pa.Table
    notes: list[str]
    """Why the rebuild differs from the set as built, where the store knows (retention, erasure)."""


class TrainingSets:
    """Builds, saves, loads and reproduces training sets."""

    def __init__(
        self, ctx: StoreContext, historical: Historical, last_ingestion: Callable[[], datetime | None]
    ) -> None:
        self.ctx = ctx
        self.historical = historical
        self._last_ingestion = last_ingestion
        self._memory: dict[str, pa.Table] = {}

    def create(
        self,
        name: str,
        entity_df: Any,
        features: Sequence[str] | str,
        *,
        as_of: datetime | None = None,
        known_at_prediction_time: bool = False,
        timestamp_column: str = "event_timestamp",
        full_feature_names: bool = False,
        description: str = "",
        purpose: str | None = None,
        engine: str = "duckdb",
    ) -> TrainingSet:
        """Build a point-in-time training set (joined by `engine`), save it in the store and record its manifest."""
        ctx = self.ctx
        if not NAME_RE.match(name):
            raise RetrievalError(
                f"invalid training set name {name!r}: use letters, digits and _, starting with a letter"
            )
        if ctx.registry.training_set(name) is not None:
            raise RetrievalError(f"a training set named '{name}' exists already; choose another name")
        entity = read_entity_frame(entity_df)
        now = ctx.now()
        if as_of is None:
            as_of = self._last_ingestion() or now
        elif as_of.tzinfo is None:
            raise RetrievalError("as_of must be time-zone aware, e.g. datetime(2025, 1, 1, tzinfo=UTC)")
        elif as_of > now:
            raise RetrievalError(
                f"as_of {as_of.isoformat()} is in the future: rows ingested until then would change "
                "the training set, so it could not be reproduced. Omit as_of to use the last ingestion."
            )
        requests = self.historical.requests(features, entity.column_names, full_feature_names)
        parts = self.historical.grant_parts(ctx.access.snapshot(), requests, purpose)
        table = self.historical.point_in_time(
            entity, parts, timestamp_column, as_of=as_of, known=known_at_prediction_time, engine=engine
        )
        service_of = {
            r.ref: r.service for r in self.historical.catalog.resolve_features(features) if r.service is not None
        }
        manifest_features = [
            {
                "ref": f"{p.vv.view.name}@v{p.vv.version}:{feature}",
                "view": p.vv.view.name,
                "version": p.vv.version,
                "feature": feature,
                "output": out,
                "ttl_seconds": p.ttl.total_seconds() if p.ttl is not None else None,
                **(
                    {"service": service}
                    if (service := service_of.get(f"{p.vv.view.name}@v{p.vv.version}:{feature}"))
                    else {}
                ),
            }
            for p in parts
            for feature, out in zip(p.grant.features, p.outputs, strict=True)
        ]
        table, protected = self._protect_entity_columns(table, parts, entity.column_names, timestamp_column)
        notes: list[dict[str, Any]] = []
        cutoff = _strictest([p.grant.cutoff("training_sets") for p in parts])
        if cutoff is not None and timestamp_column in table.column_names:  # never saved past retention
            expired = _before(table.column(timestamp_column), cutoff)
            if left_out := pc.sum(expired).as_py() or 0:
                table = table.filter(pc.invert(expired))
                notes.append(
                    {
                        "at": now.isoformat(),
                        "kind": "retention",
                        "rows": left_out,
                        "text": f"{left_out} entity rows older than the training-set retention ({cutoff.date()}) were not saved",
                    }
                )
        saved_entity_columns = [c for c in entity.column_names if c in table.column_names]
        location = self._save(name, table)
        digest = content_hash(table)
        ctx.registry.add_training_set(
            name=name,
            description=description,
            features=manifest_features,
            entity_columns=saved_entity_columns,
            timestamp_column=timestamp_column,
            as_of=as_of,
            known_at_prediction_time=known_at_prediction_time,
            full_feature_names=full_feature_names,
            row_count=table.num_rows,
            content_hash=digest,
            policy_hashes=sorted({h for p in parts if (h := p.grant.policy_hash) is not None}),
            purpose=purpose,
            protected_columns=protected,
            location=location,
            created_at=now,
            notes=notes,
        )
        ctx.audit.append(
            ctx.actor,
            "create_training_set",
            name,
            purpose=purpose,
            details={"rows": table.num_rows, "features": [f["ref"] for f in manifest_features], "content_hash": digest},
        )
        return self.get(name)

    def list_all(self) -> list[TrainingSet]:
        """Every saved training set's manifest, by name."""
        return [_training_set(row) for row in self.ctx.registry.training_sets()]

    def get(self, name: str) -> TrainingSet:
        """One training set's manifest."""
        row = self.ctx.registry.training_set(name)
        if row is None:
            names = [r.name for r in self.ctx.registry.training_sets()]
            raise NotFoundError(f"no training set named '{name}'." + did_you_mean(name, names))
        return _training_set(row)

    def _grants(
        self, snapshot: PolicySnapshot, ts: TrainingSet, purpose: str | None, access: Sequence[str] = ("offline",)
    ) -> list[JoinPart]:
        """Read grants for every view version of a training set, for `purpose`, decided now."""
        recorded = {
            (f["view"], f["version"]): timedelta(seconds=f["ttl_seconds"]) if f["ttl_seconds"] is not None else None
            for f in ts.features
        }
        requests = self.historical.group(
            [(f["view"], f["version"], f["feature"], f["output"]) for f in ts.features], recorded
        )
        return self.historical.grant_parts(snapshot, requests, purpose, access)

    def load(self, name: str, *, purpose: str | None) -> pa.Table:
        """The saved data of a training set, for a purpose its views' policies allow now."""
        ts = self.get(name)
        parts = self._grants(self.ctx.access.snapshot(), ts, purpose)
        table = self._load(ts, parts)
        self.ctx.audit.append(
            self.ctx.actor, "load_training_set", name, purpose=purpose, details={"rows": table.num_rows}
        )
        return table

    def reproduce(self, name: str, *, purpose: str | None) -> Reproduction:
        """Rebuild a training set from the offline store with its manifest, for the caller's
        purpose (checked now), and compare content hashes."""
        ts = self.get(name)
        parts = self._grants(self.ctx.access.snapshot(), ts, purpose)
        saved = self._load(ts, parts)
        notes = [str(n.get("text")) for n in ts.notes]
        expected = ts.content_hash
        if saved.num_rows != ts.row_count:  # rows past the training-set retention are gone for readers
            expected = content_hash(saved)
            notes.append(
                f"{ts.row_count - saved.num_rows} saved rows are now past the training-set retention and are "
                "left out; the rebuild is compared with the rows still kept"
            )
        saved_entity = saved.select(ts.entity_columns)
        entity = saved_entity
        for column in ts.protected_columns:  # tokens of raw keys: decrypted in memory only
            tokens = saved_entity.column(column).to_pylist()
            raw = [
                None
                if t is None
                else detokenize(t, self.ctx.keys.get(t.partition(":")[0]), context=f"training_set:{column}")
                for t in tokens
            ]
            entity = entity.set_column(entity.column_names.index(column), column, pa.array(raw, pa.string()))
        table = self.historical.point_in_time(
            entity, parts, ts.timestamp_column, as_of=ts.as_of, known=ts.known_at_prediction_time
        )
        for column in ts.entity_columns:  # the saved entity columns, exactly as saved
            if column in table.column_names:
                table = table.set_column(table.column_names.index(column), column, saved_entity.column(column))
        self.ctx.audit.append(
            self.ctx.actor, "reproduce_training_set", name, purpose=purpose, details={"rows": table.num_rows}
        )
        digest = content_hash(table)
        if digest != expected:
            for part in parts:
                if (cut := part.grant.cutoff("offline")) is not None:
                    notes.append(
                        f"rows of {part.vv.ref} with event times before {cut.isoformat()} are past the offline "
                        f"retention of policy '{part.grant.policy.id if part.grant.policy else ''}' and no longer exist"
                    )
        return Reproduction(name, expected, digest, digest == expected, table, notes)

    # --- storage ------------------------------------------------------------------------------

    def _protect_entity_columns(
        self, table: pa.Table, parts: list[JoinPart], entity_columns: list[str], timestamp_column: str
    ) -> tuple[pa.Table, list[str]]:
        """Before a training set is saved: raw keys of pseudonymized join keys become AES-SIV
        tokens (the store can still rebuild the set; the file holds no raw key), and other
        entity columns a governing policy classifies get that policy's treatment."""
        protected: list[str] = []
        policies: dict[str, Policy] = {}
        for part in parts:
            policy = part.grant.policy
            if policy is None:
                continue
            policies[policy.id] = policy
            for key in treated(policy, list(part.vv.join_keys)):
                if key not in protected:
                    protected.append(key)
                    tokens = tokenize(table.column(key), self.ctx.keys.current("siv"), context=f"training_set:{key}")
                    table = table.set_column(table.column_names.index(key), key, tokens)
        for policy in policies.values():
            others = [
                c
                for c in entity_columns
                if c not in protected
                and c != timestamp_column
                and (r := policy.rule(c)) is not None
                and not treatment_of(r).as_is
            ]
            if others:  # treated in place, so the column order (and so the hash) is stable
                view = next(
                    p.vv.view.name for p in parts if p.grant.policy is not None and p.grant.policy.id == policy.id
                )
                result = self.ctx.treatments.treat(table.select(others), policy, view)
                for column in others:
                    if column in result.column_names:
                        table = table.set_column(table.column_names.index(column), column, result.column(column))
                    else:
                        table = table.drop_columns([column])
        return table, protected

    def _save(self, name: str, table: pa.Table) -> str:
        root = self.ctx.config.root
        if root is None:
            self._memory[name] = table
            return f"memory:{name}"
        import pyarrow.parquet as pq

        folder = root / "training_sets"
        folder.mkdir(exist_ok=True)
        final = folder / f"{name}.parquet"
        partial = folder / f".{name}.parquet.partial"
        pq.write_table(table, partial)
        os.replace(partial, final)
        return f"training_sets/{name}.parquet"

    def _load(self, ts: TrainingSet, parts: list[JoinPart]) -> pa.Table:
        """The saved file; only with an offline grant for every view it holds."""
        table = self._read_file(ts, parts)
        cutoff = _strictest([p.grant.cutoff("training_sets") for p in parts])
        if cutoff is not None and ts.timestamp_column in table.column_names:  # rows past retention are gone for readers
            table = table.filter(pc.invert(_before(table.column(ts.timestamp_column), cutoff)))
        return table

    def _read_file(self, ts: TrainingSet, parts: Sequence[JoinPart]) -> pa.Table:
        """The saved rows, only with a grant (offline, or maintain for erasure, retention and
        treat-existing) for every view the set holds."""
        granted = {
            p.grant.view.view.name
            for p in parts
            if p.grant.require(MAINTAIN if MAINTAIN in p.grant.access else "offline")
        }
        missing = set(ts.views) - granted
        if missing:
            raise RetrievalError(f"training set '{ts.name}' holds {', '.join(sorted(missing))}, which no grant covers")
        root = self.ctx.config.root
        if root is None:
            return self._memory[ts.name]
        import pyarrow.parquet as pq

        return pq.read_table(root / ts.location)

    def delete(self, name: str) -> None:
        """Delete a saved training set: its file and its manifest (retention's ``delete`` action)."""
        ts = self.get(name)
        root = self.ctx.config.root
        if root is None:
            self._memory.pop(name, None)
        else:
            (root / ts.location).unlink(missing_ok=True)
        self.ctx.registry.delete_training_set(name)
        self.ctx.audit.append(self.ctx.actor, "delete_training_set", name, details={"rows": ts.row_count})

    def maintenance_parts(self, ts: TrainingSet, task: str) -> list[JoinPart]:
        """Maintain grants for `task` (erasure, retention, treat_existing) for every view of a training set."""
        return self._grants(self.ctx.access.snapshot(), ts, task, (MAINTAIN,))

    def rewrite(
        self,
        name: str,
        remove: Callable[[pa.Table, list[JoinPart]], pa.ChunkedArray],
        *,
        kind: str,
        text: str,
        dry_run: bool = False,
    ) -> int:
        """Rewrite a saved set without the rows `remove` marks (erasure, retention); the manifest
        gets the new row count, content hash and a note. Returns how many rows went."""
        ts = self.get(name)
        parts = self.maintenance_parts(ts, "retention" if kind == "retention" else "erasure")
        table = self._read_file(ts, parts)
        mask = pc.fill_null(remove(table, parts), False)
        removed = int(pc.sum(mask).as_py() or 0)
        if removed == 0 or dry_run:
            return removed
        kept = table.filter(pc.invert(mask))
        self._save(name, kept)
        note = {"at": self.ctx.now().isoformat(), "kind": kind, "rows": removed, "text": text.format(rows=removed)}
        self.ctx.registry.update_training_set(
            name, row_count=kept.num_rows, content_hash=content_hash(kept), notes=[*ts.notes, note]
        )
        return removed

    def treat(self, name: str, treat: Callable[[pa.Table], pa.Table], keys: Sequence[str], text: str) -> None:
        """Rewrite a saved set's feature columns through `treat` and protect its raw entity `keys`
        as :meth:`create` does for treated join keys (a policy approved over untreated rows); the
        manifest gets the new content hash, the protected columns and a note."""
        ts = self.get(name)
        table = treat(self._read_file(ts, self.maintenance_parts(ts, "treat_existing")))
        protected = list(ts.protected_columns)
        for key in keys:
            if key not in protected:
                protected.append(key)
                tokens = tokenize(table.column(key), self.ctx.keys.current("siv"), context=f"training_set:{key}")
                table = table.set_column(table.column_names.index(key), key, tokens)
        self._save(name, table)
        note = {"at": self.ctx.now().isoformat(), "kind": "treatment", "rows": table.num_rows, "text": text}
        self.ctx.registry.update_training_set(
            name, content_hash=content_hash(table), protected_columns=protected, notes=[*ts.notes, note]
        )


def _training_set(row: TrainingSetRow) -> TrainingSet:
    return TrainingSet(
        row.name,
        row.description,
        list(row.features),
        list(row.entity_columns),
        row.timestamp_column,
        row.as_of,
        row.known_at_prediction_time,
        row.row_count,
        row.content_hash,
        list(row.policy_hashes),
        row.purpose,
        list(row.protected_columns or []),
        row.location,
        row.created_at,
        list(row.notes or []),
    )


def _strictest(cutoffs: Sequence[datetime | None]) -> datetime | None:
    """The latest of some retention cutoffs (the strictest limit), or None."""
    present = [c for c in cutoffs if c is not None]
    return max(present) if present else None


def _before(column: pa.ChunkedArray, cutoff: datetime) -> pa.ChunkedArray:
    """Which timestamps are before `cutoff` (nulls count as not before)."""
    return pc.fill_null(pc.less(column, pa.scalar(cutoff, pa.timestamp("us", tz="UTC")).cast(column.type)), False)
