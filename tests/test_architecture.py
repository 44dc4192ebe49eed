"""The layout's rules, checked on the source (an import-linter-style contract in a few lines).

1. Only the engines hold connections: outside ``featurestore/offline/`` and the online store
   modules (``online/`` but for the capabilities there: the service, consistency, materialize,
   read audit) no module opens DuckDB, SQLite, Redis or a Delta table, imports APSW, redis,
   sqlite3, deltalake or pyspark (also by ``importlib.import_module`` or ``__import__``), or
   reaches into an engine: a private attribute of the offline engine (through ``ctx.offline``,
   a name bound to it, or a parameter typed as one; also by ``getattr``, ``vars`` or
   ``__dict__``) or of the online service. Everything else goes through the engines' public
   methods, whose every read or write of feature rows takes a Grant.
2. The offline bookkeeping tables (``_fs_batches``, ``_fs_treated_columns``, ...) are written by
   the offline engine alone (also SQL assembled from pieces: f-strings, ``+``, the engine's
   table-name constants).
3. Nothing outside the engine factory asks which engine it has (no ``isinstance`` on an engine).
4. A public ``FeatureStore`` method that returns governed values is classified with the access it
   needs in ``tests/test_enforcement.py``'s METHODS (which runs it under every policy state).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "featurestore"
ENGINE_PACKAGES = ("offline",)
ONLINE_STORES = (
    "online/__init__.py",
    "online/embedded.py",
    "online/redis_store.py",
    "online/opening.py",
    "online/lookup.py",
)
"""The online engine: the stores and their lookup plans. The rest of ``online/`` (the service,
consistency, materialize, read audit) are capabilities and keep the rules."""
CONNECTION_MODULES = {"duckdb", "apsw", "sqlite3", "redis", "deltalake", "pyspark"}
"""Modules whose import outside the engines means a second door to a store (DuckDB outside the
engines is allowed only in-memory over data the caller already holds: see ALLOWED)."""
ALLOWED: dict[tuple[str, str], str] = {
    ("demo.py", "duckdb"): "the demo computes its example source data in memory (no store is opened)",
    ("online/service.py", "duckdb"): "pushed rows are ranked in an in-memory database (no store is opened)",
    ("online/materialize.py", "duckdb"): "the SQL of pushed rows runs on the service's in-memory database",
}
IMPORTERS = {"__import__", "import_module", "importlib.import_module"}
ENGINE_ANNOTATIONS = ("OfflineEngine", "OfflineStore", "LakeOfflineStore", "OnlineStore")
"""A parameter typed as one of these holds an engine."""
WRITE_VERBS = ("INSERT ", "UPDATE ", "DELETE ", "CREATE TABLE", "DROP TABLE", "ALTER TABLE", "TRUNCATE")
ENGINE_TYPES = {"OfflineStore", "LakeOfflineStore", "SQLiteOnlineStore", "RedisOnlineStore"}
BOOKKEEPING = ("_fs_batches", "_fs_treated_columns", "_fs_carried", "_fs_store", "_fs_lake_tables")
GOVERNED_RETURNS = ("pa.Table", "OnlineResponse", "DpRelease", "Reproduction", "ConsistencyReport")
"""Return types that carry feature values."""
RELEASED_THROUGH = {"release_dp_view": "dp_query (its refusals are tested there)"}


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(ROOT)), ast.parse(path.read_text(), str(path))) for path in sorted(ROOT.rglob("*.py"))
    ]


def _outside_engines(relative: str) -> bool:
    return relative.split("/")[0] not in ENGINE_PACKAGES and relative not in ONLINE_STORES


def _engine_constants() -> dict[str, str]:
    """The engines' module-level string constants (``BATCHES_TABLE = "_fs_batches"``, ...), by name."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "offline").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                found.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return found


ENGINE_CONSTANTS = _engine_constants()


def _texts(tree: ast.Module) -> list[tuple[ast.AST, str]]:
    """Every string the module writes, with pieces resolved: constants, f-strings and ``+`` of
    strings, names bound to string constants (in the module, or the engines' such as BATCHES_TABLE)."""
    names = dict(ENGINE_CONSTANTS)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            names.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})

    def text(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, str) else str(node.value)
        if isinstance(node, ast.Name | ast.Attribute):
            key = node.id if isinstance(node, ast.Name) else node.attr
            return names.get(key)
        if isinstance(node, ast.FormattedValue):
            return text(node.value) or "{?}"
        if isinstance(node, ast.JoinedStr):
            return "".join(text(v) or "{?}" for v in node.values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = text(node.left), text(node.right)
            return None if left is None and right is None else (left or "{?}") + (right or "{?}")
        return None

    return [
        (node, t)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant | ast.JoinedStr | ast.BinOp) and (t := text(node)) is not None
    ]


def _engine_names(tree: ast.Module) -> set[str]:
    """Names that hold an engine: bound to ``ctx.offline`` (or another such name), or parameters
    typed as an engine."""
    names: set[str] = {"offline"}
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            if any(t in ast.unparse(node.annotation) for t in ENGINE_ANNOTATIONS):
                names.add(node.arg)
    for _ in range(2):  # an alias of an alias
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign | ast.NamedExpr) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if _is_engine(ast.unparse(node.value), names):
                    names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def _is_engine(owner: str, names: set[str]) -> bool:
    return owner.endswith((".offline", "online.store", "online._store")) or owner in names


def _violations(relative: str, tree: ast.Module) -> list[str]:
    found: list[str] = []
    engines = _engine_names(tree)
    for node in ast.walk(tree):
        where = f"featurestore/{relative}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call) and ast.unparse(node.func) in IMPORTERS and node.args:
            name = node.args[0].value if isinstance(node.args[0], ast.Constant) else None
            top = name.split(".")[0] if isinstance(name, str) else ""
            if top in CONNECTION_MODULES and (relative, top) not in ALLOWED:
                found.append(f"{where}: imports {name} by a call (connections belong to the engines)")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "vars"):
            owner = ast.unparse(node.args[0]) if node.args else ""
            attr = node.args[1].value if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) else None
            private = node.func.id == "vars" or not isinstance(attr, str) or attr.startswith("_")
            if _is_engine(owner, engines) and private:
                found.append(f"{where}: {ast.unparse(node)} reaches into an engine")
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top in CONNECTION_MODULES and (relative, top) not in ALLOWED:
                    found.append(f"{where}: imports {name} (connections belong to the engines)")
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.endswith(("duckdb_store", "lake_store"))
            ):
                for alias in node.names:
                    if alias.name in ENGINE_TYPES and relative not in ("opening.py",):
                        found.append(f"{where}: imports the engine class {alias.name} (use the OfflineEngine protocol)")
        elif isinstance(node, ast.Attribute):
            chain = ast.unparse(node)
            owner = ast.unparse(node.value)
            if chain.endswith((".connect", "._connect", "._try_connect", ".try_connect")) and _is_engine(
                owner, engines
            ):
                found.append(f"{where}: {chain} opens the offline store outside offline/")
            if chain.endswith((".engine.connect", ".engine.begin", ".engine.raw_connection")) and not (
                relative.startswith("registry/")
            ):
                found.append(f"{where}: {chain} opens the registry's database outside registry/ (ask Registry)")
            if node.attr.startswith("_") and (not node.attr.startswith("__") or node.attr == "__dict__"):
                if _is_engine(owner, engines):
                    found.append(f"{where}: {chain} reaches into an engine")
                elif owner == "online" or owner.endswith(".online"):
                    found.append(f"{where}: {chain} reaches into the online service (its store is private to it)")
            if node.attr in ("store", "_store") and (owner == "online" or owner.endswith(".online")):
                found.append(f"{where}: {chain} reaches through the online service to its store")
            if node.attr == "lake" and _is_engine(owner, engines):
                found.append(f"{where}: {chain} reaches into the lake engine")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            types = ast.unparse(node.args[1]) if len(node.args) > 1 else ""
            if any(t in types for t in ENGINE_TYPES):
                found.append(f"{where}: isinstance on an engine ({types}); add a method to the engine protocol")
    for node, text in _texts(tree):
        upper = text.upper()
        if any(t.upper() in upper for t in BOOKKEEPING) and any(verb in upper for verb in WRITE_VERBS):
            where = f"featurestore/{relative}:{getattr(node, 'lineno', 0)}"
            found.append(f"{where}: writes an offline bookkeeping table (the engine is its one writer)")
    return sorted(set(found))


def test_only_the_engines_hold_connections_and_write_bookkeeping() -> None:
    problems = [p for relative, tree in _modules() if _outside_engines(relative) for p in _violations(relative, tree)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        "import duckdb\ncon = duckdb.connect('x')\n",
        "import apsw\n",
        "from redis import Redis\n",
        "def f(ctx):\n    with ctx.offline.connect(read_only=True) as con:\n        pass\n",
        "def f(registry):\n    with registry.engine.connect() as conn:\n        pass\n",
        "def f(ctx):\n    return ctx.offline._connect(read_only=True)\n",
        "def f(self):\n    return self.ctx.offline._tables_on(None)\n",
        "def f(self):\n    return self.online.store.read('t', [])\n",
        "def f(self):\n    return self.ctx.offline.lake.root\n",
        "def f(offline):\n    return isinstance(offline, LakeOfflineStore)\n",
        "from .offline.duckdb_store import OfflineStore\n",
        "SQL = 'INSERT INTO _fs_treated_columns VALUES (?, ?, ?, ?)'\n",
        "SQL = 'delete from _fs_batches where batch_id = 1'\n",
        # ways round the rules above that a next developer would plausibly write
        "duckdb = __import__('duckdb')\n",
        "import importlib\napsw = importlib.import_module('apsw')\n",
        "from importlib import import_module\nimport_module('sqlite3')\n",
        "import deltalake\n",
        "from pyspark.sql import SparkSession\n",
        "def f(ctx):\n    return getattr(ctx.offline, '_connect')(read_only=True)\n",
        "def f(ctx):\n    return ctx.offline.__dict__['_memory']\n",
        "def f(ctx):\n    return vars(ctx.offline)['_memory']\n",
        "def f(self):\n    offline = self.ctx.offline\n    return offline._batch_records_on(None)\n",
        "def f(self):\n    store = self.ctx.offline\n    return store._memory.execute('SELECT 1')\n",
        "def f(engine: OfflineEngine):\n    return engine._granted_sql(None)\n",
        "def f(self):\n    return self.online._opened().read('t', [])\n",
        "def f(self):\n    self.lineage.online._plans.clear()\n",
        "T = 'batches'\nSQL = f'INSERT INTO _fs_{T} VALUES (1)'\n",
        "SQL = 'UPDATE ' + '_fs_batches' + ' SET row_count = 0'\n",
        "from .offline.duckdb_store import BATCHES_TABLE\nSQL = f'DELETE FROM {BATCHES_TABLE} WHERE batch_id = 1'\n",
        "SQL = 'DROP TABLE _fs_carried'\n",
    ],
)
def test_the_contract_catches_each_kind_of_back_door(source: str) -> None:
    """Each rule fails on the code it forbids (a check that cannot fail is no check)."""
    assert _violations("capability.py", ast.parse(source)), source


def test_engine_modules_themselves_are_free_to_connect() -> None:
    assert not _outside_engines("offline/duckdb_store.py") and not _outside_engines("online/embedded.py")
    assert _outside_engines("erasure.py") and _outside_engines("store.py")
    # the capabilities in online/ are no engines: they keep the rules
    assert all(_outside_engines(f"online/{m}.py") for m in ("service", "consistency", "materialize", "read_audit"))
    assert _violations(
        "online/consistency.py", ast.parse("def f(ctx):\n    return ctx.offline._connect(read_only=True)\n")
    )


@pytest.mark.parametrize(
    "source",
    [
        "def f(ctx):\n    return ctx.offline.query(grant, 'SELECT 1')\n",
        "def f(self):\n    offline = self.ctx.offline\n    return offline.path\n",
        "def f(self):\n    return self.online.present_keys(grant, vv, [])\n",
        "SQL = f'SELECT count(*) FROM {BATCHES_TABLE}'\n",
        "def f(self):\n    return self._store\n",
        "import importlib\nimportlib.import_module('featurestore.cli')\n",
    ],
)
def test_the_contract_lets_public_use_through(source: str) -> None:
    """What the rules must not catch: public engine methods, reading bookkeeping, one's own privates."""
    assert not _violations("capability.py", ast.parse(source)), source


def test_every_public_method_returning_feature_values_is_classified() -> None:
    from tests.test_enforcement import METHODS

    tree = ast.parse((ROOT / "store.py").read_text())
    store = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FeatureStore")
    returning = {
        f.name: ast.unparse(f.returns)
        for f in store.body
        if isinstance(f, ast.FunctionDef) and not f.name.startswith("_") and f.returns is not None
    }
    governed = {name for name, returns in returning.items() if any(t in returns for t in GOVERNED_RETURNS)}
    assert {"read", "get_historical_features", "get_online_features", "dp_query"} <= governed, "the scan sees them"
    unclassified = sorted(name for name in governed if METHODS.get(name) is None and name not in RELEASED_THROUGH)
    assert not unclassified, (
        f"these public methods return feature values but METHODS in tests/test_enforcement.py gives them no "
        f"access to check: {unclassified}"
    )


# --- floors: every import goes down a floor or stays on its own, and no two folders import each other

FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("faces", ("__init__", "cli", "server", "demo", "demo_lake", "example", "terminal", "testing")),
    ("facade", ("store", "capabilities", "opening", "doctor")),
    (
        "capabilities",
        (
            "catalog",
            "ingestion",
            "push",
            "historical",
            "training_sets",
            "online.service",
            "online.consistency",
            "online.materialize",
            "online.read_audit",
            "erasure",
            "erasure_proof",
            "lineage",
            "holds",
            "retention",
            "compaction",
            "dp_queries",
            "reidentification",
            "policy_workflow",
            "treat_existing",
            "recovery",
            "settling",
        ),
    ),
    ("context", ("context",)),
    ("engines", ("offline", "online")),
    ("decisions", ("governance",)),
    ("registry", ("registry", "audit")),
    ("policy", ("policy",)),
    ("privacy", ("privacy",)),
    (
        "leaves",
        (
            "errors",
            "types",
            "durations",
            "yamlpos",
            "redaction",
            "faults",
            "sources",
            "entity_frames",
            "definitions",
            "feature_services",
            "refs",
            "versions",
            "config",
            "apply_plan",
            "phones",
        ),
    ),
]
"""Top to bottom. A module belongs to the most specific entry naming it (``online.service`` before
``online``); a new module must be placed here (the test says so)."""


def _module_name(relative: str) -> str:
    name = relative.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__") if name != "__init__" else name


def _floor(module: str) -> int:
    best: tuple[int, int] | None = None
    for index, (_name, members) in enumerate(FLOORS):
        for member in members:
            if module == member or module.startswith(member + "."):
                if best is None or len(member) > best[1]:
                    best = (index, len(member))
    if best is None:
        raise AssertionError(
            f"featurestore/{module}: place the module on a floor in FLOORS (tests/test_architecture.py)"
        )
    return best[0]


def _imports(relative: str, tree: ast.Module) -> set[str]:
    """Modules of featurestore a module imports (at run time, in functions, or for type checking)."""
    here = _module_name(relative).split(".")
    package = here if relative.endswith("__init__.py") else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = f"{target}.{alias.name}" if target else alias.name
                found.add(candidate if (ROOT / (candidate.replace(".", "/") + ".py")).exists() else target)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("featurestore."):
            found.add(node.module.removeprefix("featurestore."))  # type: ignore[union-attr]
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("featurestore.") for a in node.names if a.name.startswith("featurestore.")}
    return {m for m in found if m and m != "migrations" and not m.startswith("migrations.")}


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[0] if len(parts) > 1 or (ROOT / parts[0]).is_dir() else module


def test_no_import_climbs_a_floor_and_no_two_folders_import_each_other() -> None:
    climbs: list[str] = []
    folders: set[tuple[str, str]] = set()
    for relative, tree in _modules():
        here = _module_name(relative)
        for target in _imports(relative, tree):
            if target == "__init__" or target == here:
                continue
            if _floor(target) < _floor(here):
                climbs.append(f"featurestore/{relative} imports {target}, a floor up ({FLOORS[_floor(target)][0]})")
            if _folder(here) != _folder(target):
                folders.add((_folder(here), _folder(target)))
    both = sorted({tuple(sorted(pair)) for pair in folders if (pair[1], pair[0]) in folders})
    assert not climbs, "\n".join(climbs)
    assert not both, f"folders that import each other: {both}"


def test_the_floors_order_what_they_should() -> None:
    assert _floor("online.service") < _floor("online.embedded") < _floor("governance.access") < _floor("privacy.keys")
    assert _floor("store") < _floor("erasure") < _floor("context") < _floor("offline.duckdb_store")
    with pytest.raises(AssertionError, match="place the module on a floor"):
        _floor("brand_new_module")


def test_no_import_cycle_between_modules() -> None:
    """No module imports itself round a loop (imports in functions and for type checking count)."""
    graph = {_module_name(rel): {t for t in _imports(rel, tree) if t != "__init__"} for rel, tree in _modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_architecture_md_draws_the_floors_the_test_checks() -> None:
    """Each module of FLOORS is named on its floor's row of ARCHITECTURE.md's table (no drift)."""
    rows = {
        line.split("|")[1].strip(): line
        for line in (ROOT.parent / "ARCHITECTURE.md").read_text().splitlines()
        if line.startswith("| ") and line.count("|") >= 4
    }
    missing = [
        f"{floor}: {member}"
        for floor, members in FLOORS
        for member in members
        if f"`{member.replace('.', '/')}`" not in rows.get(floor, "")
        and f"`{member.replace('.', '/')}/`" not in rows.get(floor, "")
    ]
    assert not missing, f"ARCHITECTURE.md's table does not name these on their floor: {missing}"
