"""Subject lineage: every place that holds a person's rows (every version of every view of the
entity, the online store, saved training sets), found from their raw id through every stored
form (pseudonyms and tokens under every key id). Erasure, its proofs and legal holds stand on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from .catalog import Catalog
from .context import StoreContext
from .errors import NotFoundError
from .governance import MAINTAIN, Grant
from .governance.subjects import Subjects, subject_key
from .historical import JoinPart
from .online.service import OnlineService
from .privacy.pseudonymize import tokenize
from .training_sets import TrainingSets
from .versions import online_table


class Lineage:
    """Where a subject's rows are, for one store.

    Args:
        ctx: The store's parts.
        catalog: Its definitions.
        online: The online service (its rows are read through it, under maintain grants).
        training: Saved training sets.
    """

    def __init__(self, ctx: StoreContext, catalog: Catalog, online: OnlineService, training: TrainingSets) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.online = online
        self.training = training
        self.subjects = Subjects(ctx.keys, ctx.treatments)

    def versions(self, entity: str, task: str) -> list[Grant]:
        """Maintain grants for `task` for every version of every view of an entity."""
        if self.ctx.registry.entity(entity) is None:
            names = [e.name for e in self.catalog.list_entities()]
            from .errors import did_you_mean

            raise NotFoundError(f"unknown entity '{entity}'." + did_you_mean(entity, names))
        snapshot = self.ctx.access.snapshot()
        grants = []
        for head in self.catalog.list_views():
            if head.view.entity != entity:
                continue
            for vv in self.catalog.view_versions(head.view.name):
                grants.append(self.ctx.access.grant(snapshot, vv, vv.view.feature_names, task, (MAINTAIN,)))
        return grants

    def entity_hashes(self, grants: Sequence[Grant], raw_ids: Sequence[str]) -> list[str]:
        """The subject hashes of raw ids, over every view version the grants cover."""
        return self.subjects.entity_hashes([(g.policy, g.view) for g in grants], raw_ids)

    def training_sets_of(self, views: set[str]) -> list[str]:
        """Saved training sets holding any of these views."""
        return [ts.name for ts in self.training.list_all() if set(ts.views) & views]

    def training_mask(
        self, ts_name: str, grants_by_view: dict[str, Grant], raw_ids: Sequence[str], counts: list[int] | None = None
    ) -> Callable[[pa.Table, list[JoinPart]], pa.ChunkedArray]:
        """Which rows of a saved training set hold these subjects (raw, pseudonymized or tokenized
        keys); with `counts`, also how many rows each subject holds."""
        ts = self.training.get(ts_name)

        def remove(table: pa.Table, parts: list[JoinPart]) -> pa.ChunkedArray:
            mask = pa.chunked_array([pa.array([False] * table.num_rows, pa.bool_())])
            for key in dict.fromkeys(subject_key(p.vv) for p in parts):
                if key not in table.column_names:
                    continue
                part = next(p for p in parts if subject_key(p.vv) == key)
                grant = grants_by_view.get(part.vv.view.name) or part.grant
                if key in ts.protected_columns:  # tokens of the raw key, under every AES-SIV key id
                    raw = pa.array(list(raw_ids), pa.string())
                    by_id = [
                        list(t)
                        for t in zip(
                            *(
                                tokenize(raw, k, context=f"training_set:{key}").to_pylist()
                                for k in self.ctx.keys.keys("siv")
                            ),
                            strict=True,
                        )
                    ]
                else:
                    by_id = self.subjects.stored_forms_by_id(grant.policy, part.vv, raw_ids)
                owner = {str(f): i for i, forms in enumerate(by_id) for f in forms}
                column = table.column(key)
                text = column.cast(pa.string()) if column.type != pa.string() else column
                hits = pc.fill_null(pc.is_in(text, value_set=pa.array(list(owner), pa.string())), False)
                mask = pc.or_(mask, hits)
                if counts is not None:
                    for value in text.filter(hits).to_pylist():
                        counts[owner[value]] += 1
            return mask

        return remove

    def where(self, entity: str, key: str) -> dict[str, int]:
        """Every place that holds a subject, with row counts (places with none are left out)."""
        found = {place: rows for place, rows in self.where_all(entity, key).items() if rows}
        self.ctx.audit.append(self.ctx.actor, "where", entity, details={"places": len(found)})
        return found

    def where_all(self, entity: str, key: str) -> dict[str, int]:
        """:meth:`where`, with every place listed (zero counts included), unaudited."""
        grants = self.versions(entity, "erasure")
        counts: dict[str, int] = {}
        for grant in grants:
            vv = grant.view
            forms = self.subjects.stored_forms(grant.policy, vv, [key])
            counts[f"offline {vv.ref}"] = sum(self.ctx.offline.key_counts(grant, forms).values())
            if self.ctx.registry.materialization(vv.view.name, vv.version) is not None:
                counts[f"online {online_table(vv)}"] = len(self.online.present_keys(grant, vv, [str(f) for f in forms]))
        by_view = {g.view.view.name: g for g in grants}
        for name in self.training_sets_of(set(by_view)):
            counts[f"training set {name}"] = self.training.rewrite(
                name, self.training_mask(name, by_view, [key]), kind="where", text="", dry_run=True
            )
        return counts
