"""The catalog: entities and feature views, their versions, plan/apply, and feature references."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .apply_plan import Plan, RegisteredView, compute_plan
from .context import StoreContext
from .definitions import Definitions, Entity, FeatureView, load_definitions, read_definitions
from .errors import ConfigError, DefinitionError, Problem, UnknownFeatureError, UnknownViewError, did_you_mean
from .feature_services import SERVICE_PREFIX, FeatureService, parse_service_ref
from .governance import MAINTAIN, check_definitions
from .offline import Carry
from .refs import FeatureRef, parse_view_ref
from .registry.models import FeatureViewRow, FeatureViewVersionRow
from .versions import ResolvedFeature, ServiceVersion, ViewVersion, online_table, table_name

__all__ = [
    "Catalog",
    "DefinitionsLike",
    "ResolvedFeature",
    "ServiceVersion",
    "ViewVersion",
    "online_table",
    "table_name",
]

DefinitionsLike = Definitions | Iterable[Entity | FeatureView | FeatureService] | None


class Catalog:
    """Definitions and versions of one store."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    # --- definitions ------------------------------------------------------------------------

    def load_definitions(self, *, keep_going: bool = False) -> Definitions:
        """Read every ``*.yaml`` / ``*.yml`` under the store's ``features/`` folder (`keep_going`:
        the valid items, with the problems in ``problems`` instead of raised)."""
        root = self.ctx.config.root
        if root is None:
            raise ConfigError("a memory store has no features/ folder: pass definitions to plan/apply")
        folder = root / "features"
        files = sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")])
        return read_definitions(files) if keep_going else load_definitions(files)

    def as_definitions(self, definitions: DefinitionsLike) -> Definitions:
        """Definitions from a Definitions object, Entity / FeatureView objects, or ``features/``."""
        if definitions is None:
            return self.load_definitions(keep_going=True)
        if isinstance(definitions, Definitions):
            return definitions
        defs = Definitions()
        for obj in definitions:
            if isinstance(obj, Entity):
                defs.entities.append(obj)
            elif isinstance(obj, FeatureView):
                defs.views.append(obj)
            elif isinstance(obj, FeatureService):
                defs.services.append(obj)
            else:
                raise TypeError(f"apply takes Entity, FeatureView and FeatureService objects, not {type(obj).__name__}")
        return defs

    def plan(self, definitions: DefinitionsLike = None) -> Plan:
        """What :meth:`apply` would change; refuses views the policies would not accept."""
        defs = self.as_definitions(definitions)
        registry = self.ctx.registry
        registered_entities = {
            row.name: Entity(name=row.name, join_keys=row.join_keys, description=row.description)
            for row in registry.entities()
        }
        latest = self.list_views()
        known = {**registered_entities, **{e.name: e for e in defs.entities}}
        hashes = {vv.view.name: vv.view.schema_hash(vv.join_keys) for vv in latest}
        changing = {
            v.name
            for v in defs.views
            if v.name in hashes and v.entity in known and v.schema_hash(known[v.entity].join_keys) != hashes[v.name]
        }  # only these need a row count
        rows = self.ctx.offline.row_counts(vv.table for vv in latest if vv.view.name in changing)
        registered_views = {
            vv.view.name: RegisteredView(vv.view, vv.version, vv.join_keys, hashes[vv.view.name], rows.get(vv.table, 0))
            for vv in latest
        }
        services = self.list_services()
        problems = list(defs.problems)  # every problem in one pass: reading, planning, policies
        for view, (entity, where) in defs.unchecked_entities.items():
            if entity not in known:
                problems.append(
                    Problem(
                        f"feature view '{view}' names unknown entity '{entity}'." + did_you_mean(entity, known),
                        where.file,
                        where.line,
                        where.column,
                    )
                )
        try:
            plan = compute_plan(
                defs.entities,
                defs.views,
                registered_entities=registered_entities,
                registered_views=registered_views,
                entity_positions=defs.entity_positions,
                services=defs.services,
                registered_services={s.service.name: (s.service, s.version) for s in services},
                registered_features={
                    (r.view_name, r.version): [f["name"] for f in r.definition["features"]]
                    for r in registry.view_versions()
                },
            )
        except DefinitionError as exc:
            problems += exc.errors
            plan = Plan()
        try:
            check_definitions(
                self.ctx.access.snapshot(),
                [
                    (v.name, known[v.entity].join_keys, {f.name: f.dtype for f in v.features})
                    for v in defs.views
                    if v.entity in known
                ],
            )
        except DefinitionError as exc:
            problems += exc.errors
        if problems:
            raise DefinitionError(problems)
        return plan

    def apply(self, definitions: DefinitionsLike = None) -> Plan:
        """Register entities and feature views; a schema change makes a new view version."""
        defs = self.as_definitions(definitions)
        plan = self.plan(defs)
        if not plan.changes:
            return plan
        entities = {e.name: e for e in defs.entities}
        views = {v.name: v for v in defs.views}
        keys = {
            v.name: self._entity_keys(v.entity, entities)
            for v in defs.views
            if any(c.name == v.name and c.kind in ("create_view", "new_version", "update_view") for c in plan.changes)
        }
        tables: dict[str, str] = {}
        carried: dict[str, tuple[ViewVersion, int]] = {}
        # Tables first: a table without a registry row is an orphan that the next apply
        # replaces; a registry row without its table could not be ingested into.
        for change in plan.changes:
            if change.kind in ("create_view", "new_version"):
                view = views[change.name]
                assert change.version is not None
                table = tables[view.name] = table_name(view.name, change.version)
                carry = None
                if change.carry_from is not None:
                    old = self.get_view(f"{view.name}@v{change.carry_from}")
                    carry = self._carry(old, view)
                rows = self.ctx.offline.create_table(
                    table, view.stored_columns(keys[view.name]), carry, view.time_columns
                )
                if change.carry_from is not None:
                    carried[view.name] = (old, rows)
        self.ctx.registry.apply_changes(
            plan.changes, entities, views, keys, tables, self.ctx.now(), {s.name: s for s in defs.services}
        )
        self.ctx.audit.append(
            self.ctx.actor,
            "apply",
            ", ".join(c.name for c in plan.changes),
            details={
                "changes": [str(c) for c in plan.changes],
                **(
                    {"carried_rows": {f"{old.view.name}@v{old.version}": n for old, n in carried.values()}}
                    if carried
                    else {}
                ),
            },
        )
        return plan

    def _carry(self, old: ViewVersion, new: FeatureView) -> Carry:
        """The copy that starts `new` with `old`'s rows: keys and event time as they are, each
        feature `old` has, null for the rest; none past retention (decided under a maintain grant)."""
        grant = self.ctx.access.grant(
            self.ctx.access.snapshot(), old, old.view.feature_names, "carry_forward", (MAINTAIN,)
        )
        columns: dict[str, str | None] = {k: k for k in old.join_keys}
        columns[new.timestamp_field] = old.view.timestamp_field
        if new.created_timestamp_field:  # equal in both: carrying needs the same created column
            columns[new.created_timestamp_field] = new.created_timestamp_field
        columns.update({f.name: f.name if f.name in old.view.feature_names else None for f in new.features})
        return Carry(grant, columns, old.view.timestamp_field)

    def _entity_keys(self, name: str, pending: dict[str, Entity]) -> dict[str, str]:
        if name in pending:
            return dict(pending[name].join_keys)
        row = self.ctx.registry.entity(name)
        assert row is not None, f"entity {name} vanished"
        return dict(row.join_keys)

    # --- lookups ----------------------------------------------------------------------------

    def list_entities(self) -> list[Entity]:
        """Every registered entity."""
        return [
            Entity(name=r.name, join_keys=r.join_keys, description=r.description) for r in self.ctx.registry.entities()
        ]

    def list_views(self) -> list[ViewVersion]:
        """The latest version of every registered feature view."""
        latest = {row.name: row.latest_version for row in self.ctx.registry.views()}
        return [
            _view_version(r, latest[r.view_name])
            for r in self.ctx.registry.view_versions()
            if r.version == latest[r.view_name]
        ]

    def view_versions(self, name: str) -> list[ViewVersion]:
        """Every version of one feature view, oldest first."""
        head = self._view_row(name)
        return [_view_version(r, head.latest_version) for r in self.ctx.registry.view_versions(name)]

    def get_view(self, ref: str) -> ViewVersion:
        """A view version: ``"name"`` (latest) or ``"name@v2"`` (pinned)."""
        name, version = parse_view_ref(ref)
        head = self._view_row(name)
        wanted = head.latest_version if version is None else version
        row = self.ctx.registry.view_version(name, wanted)
        if row is None:
            raise UnknownViewError(
                f"feature view '{name}' has no version v{wanted}; it has v1 to v{head.latest_version}"
            )
        return _view_version(row, head.latest_version)

    def _view_row(self, name: str) -> FeatureViewRow:
        row = self.ctx.registry.view(name)
        if row is None:
            names = [r.name for r in self.ctx.registry.views()]
            hint = did_you_mean(name, names) or (" Register it with `featurestore apply`." if not names else "")
            raise UnknownViewError(f"unknown feature view '{name}'." + hint)
        return row

    def list_services(self) -> list[ServiceVersion]:
        """The latest version of every feature service, by name."""
        latest: dict[str, ServiceVersion] = {}
        for row in self.ctx.registry.services():
            latest[row.name] = ServiceVersion(FeatureService.from_dict(row.definition), row.version, row.created_at)
        return list(latest.values())

    def get_service(self, ref: str) -> ServiceVersion:
        """A feature service version: ``"name"`` / ``"service:name"`` (latest) or ``"...@v2"``."""
        parsed = parse_service_ref(ref if ref.startswith(SERVICE_PREFIX) else SERVICE_PREFIX + ref)
        assert parsed is not None
        name, version = parsed
        rows = self.ctx.registry.services(name)
        if not rows:
            names = sorted({r.name for r in self.ctx.registry.services()})
            raise UnknownFeatureError(
                f"unknown feature service '{name}'."
                + (
                    did_you_mean(name, names)
                    or " Define it under feature_services: in features/ and run `featurestore apply`."
                )
            )
        row = rows[-1] if version is None else next((r for r in rows if r.version == version), None)
        if row is None:
            raise UnknownFeatureError(
                f"feature service '{name}' has no version v{version}; it has v1 to v{rows[-1].version}"
            )
        return ServiceVersion(FeatureService.from_dict(row.definition), row.version, row.created_at)

    def expand_services(self, refs: Sequence[str] | str) -> list[tuple[str, str | None]]:
        """Each reference with the service it came from (``"name@vN"``, or None): a
        ``"service:..."`` entry becomes its service's references."""
        expanded: list[tuple[str, str | None]] = []
        for text in [refs] if isinstance(refs, str) else refs:
            if isinstance(text, str) and parse_service_ref(text) is not None:
                sv = self.get_service(text)
                expanded += [(r, sv.ref) for r in sv.service.features]
            else:
                expanded.append((text, None))
        return expanded

    def resolve_features(
        self, refs: Sequence[str] | str, read: dict[tuple[str, int], ViewVersion] | None = None
    ) -> list[ResolvedFeature]:
        """Resolve ``"view:feature"``, ``"view@v2:feature"``, ``"view:*"`` and
        ``"service:name"`` references (a service stands for its list). `read`, if given, gets each
        view version read, by (name, version), for a caller that needs them next.

        A feature missing from the latest version but present in an older one gets an error
        that names the version to pin, so a dropped or renamed feature never breaks silently.
        """
        resolved: list[ResolvedFeature] = []
        views: dict[str, ViewVersion] = {}  # each view read once, however many of its features are named
        for text, service in self.expand_services(refs):
            ref = FeatureRef.parse(text)
            view_ref = f"{ref.view}@v{ref.version}" if ref.version is not None else ref.view
            vv = views.get(view_ref)
            if vv is None:
                vv = views[view_ref] = self.get_view(view_ref)
                if read is not None:
                    read[vv.view.name, vv.version] = vv
            names = vv.view.feature_names if ref.feature == "*" else [ref.feature]
            for name in names:
                if name not in vv.view.feature_names:
                    raise UnknownFeatureError(self.missing_feature_message(vv, name, pinned=ref.version is not None))
                dtype = vv.view.feature(name).dtype
                resolved.append(
                    ResolvedFeature(
                        f"{vv.view.name}@v{vv.version}:{name}", vv.view.name, vv.version, name, dtype, service
                    )
                )
        return resolved

    def check_features(self, vv: ViewVersion, names: Sequence[str], *, pinned: bool) -> None:
        """Raise UnknownFeatureError for a name that is not a feature of `vv`."""
        for name in names:
            if name not in vv.view.feature_names:
                raise UnknownFeatureError(self.missing_feature_message(vv, name, pinned=pinned))

    def missing_feature_message(self, vv: ViewVersion, name: str, *, pinned: bool) -> str:
        """Why `name` is not a feature of `vv`, naming the version that has it or a close name."""
        which = f"v{vv.version}" + ("" if pinned else " (latest)")
        message = f"feature view '{vv.view.name}' {which} has no feature '{name}'."
        holders = [o.version for o in self.view_versions(vv.view.name) if name in o.view.feature_names]
        if holders:
            return message + f" It is in v{holders[-1]}: pin it as '{vv.view.name}@v{holders[-1]}:{name}'."
        return message + did_you_mean(name, vv.view.feature_names)


def _view_version(row: FeatureViewVersionRow, latest: int) -> ViewVersion:
    return ViewVersion(
        view=FeatureView.from_dict(row.definition),
        version=row.version,
        join_keys=dict(row.join_keys),
        table=row.table_name,
        latest=row.version == latest,
        created_at=row.created_at,
    )
