"""Differentially private aggregates: calibrated noise, contribution bounds, partition selection,
a budget that cannot be overspent (also by racing processes, on SQLite and PostgreSQL), dry runs
and cached releases that cost nothing, and fairness audits without row access."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from featurestore import Entity, FeatureStore, FeatureView, PrivacyBudgetExceeded
from featurestore.errors import FeatureStoreError, PolicyViolation
from featurestore.testing import TEST_KEY_PROVIDER, StepClock

TS = pa.timestamp("us", tz="UTC")
ROOT = Path(__file__).resolve().parents[1]
POLICY = """\
api_version: featurestore.policy/v1
id: loans
version: 1
owner: dpo@example.com
legal_basis: legitimate_interest
effective_from: 2026-01-01
review_by: 2027-01-01
scope: {{feature_views: [applications]}}
classification:
  applicant_id: {{kind: direct_identifier, normalize: text}}
  approved: non_personal
  amount: non_personal
  region: quasi_identifier
  ethnicity: sensitive_attribute
treatments: {{direct_identifier: keyed_hash, quasi_identifier: keep, sensitive_attribute: keep, non_personal: keep}}
purposes:
  allowed:
    credit_model: {{access: [offline]}}
    fairness_audit: {{access: [dp_aggregates]}}
    research: {{access: [dp_aggregates]}}
differential_privacy:
  purposes: [fairness_audit, research]
  budget: {{epsilon: {budget}, delta: 1.0e-5, period: P30D}}
  per_release: {{epsilon: {per_release}}}
  contribution_bounds: {{max_rows_per_subject: {k},{groups} clamp: {{amount: [0, 1000], approved: [0, 1]}}}}
  min_group_size: {min_group}
  public_groups: {{ethnicity: [a, b, c]}}
"""
APPLICANT = Entity(name="applicant", join_keys={"applicant_id": "string"})
APPLICATIONS = FeatureView(
    name="applications",
    entity="applicant",
    features={"approved": "int64", "amount": "float64", "region": "string", "ethnicity": "string"},
)


def rows(
    ids: list[str], *, ethnicity: str = "a", region: str = "north", approved: int = 1, amount: float = 100.0
) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "applicant_id": ids,
            "event_timestamp": pa.array([datetime(2025, 6, 1, tzinfo=UTC)] * n, TS),
            "approved": pa.array([approved] * n, pa.int64()),
            "amount": [amount] * n,
            "region": [region] * n,
            "ethnicity": [ethnicity] * n,
        }
    )


def make(
    tmp_path: Path,
    *,
    budget: float = 4.0,
    per_release: float = 1.0,
    k: int = 5,
    min_group: int = 1,
    registry_url: str | None = None,
    clock: StepClock | None = None,
    groups: int | None = None,
) -> FeatureStore:
    root = tmp_path / "store"
    fs = FeatureStore.init(
        root,
        key_provider=TEST_KEY_PROVIDER,
        registry_url=registry_url,
        clock=clock or StepClock(start=datetime(2025, 6, 10, tzinfo=UTC), step=timedelta(milliseconds=1)),
    )
    (root / "policies" / "loans.yaml").write_text(
        POLICY.format(
            budget=budget,
            per_release=per_release,
            k=k,
            min_group=min_group,
            groups=f" max_groups_per_subject: {groups}," if groups else "",
        )
    )
    fs.apply([APPLICANT, APPLICATIONS])
    fs.approve_policy(root / "policies" / "loans.yaml", by="A. Counsel", role="legal")
    return fs


def test_count_noise_follows_the_calibrated_distribution(tmp_path: Path) -> None:
    with make(tmp_path, budget=10_000.0, per_release=1.0, k=1) as fs:
        fs.ingest("applications", rows([f"p{i}" for i in range(20)]))
        dry = fs.dp_query("applications", aggregates=["count"], purpose="research", epsilon=0.5, dry_run=True)
        [stat] = dry.statistics
        assert stat.distribution == "Integer Laplace" and stat.scale == pytest.approx(2.0)  # sensitivity 1, epsilon 0.5
        draws = [
            fs.dp_query("applications", aggregates=["count"], purpose="research", epsilon=0.5, fresh=True)
            .table.column("count")[0]
            .as_py()
            - 20
            for _ in range(400)
        ]
    p = math.exp(-1 / stat.scale)

    def cdf(k: int) -> float:  # the discrete Laplace distribution P(X = k) = (1 - p) / (1 + p) * p^|k|
        return 1 - p ** (k + 1) / (1 + p) if k >= 0 else p ** (-k) / (1 + p)

    n = len(draws)
    ks = max(
        max(abs(sum(d <= k for d in draws) / n - cdf(k)), abs(sum(d < k for d in draws) / n - cdf(k - 1)))
        for k in range(min(draws), max(draws) + 1)
    )
    assert ks < 2.69 / math.sqrt(n), f"Kolmogorov-Smirnov distance {ks:.3f} (alpha 1e-6)"
    expected_abs = 2 * p / ((1 + p) * (1 - p))
    assert abs(sum(abs(d) for d in draws) / n - expected_abs) < 0.35 * expected_abs


def test_one_entity_moves_a_release_by_no_more_than_its_bound(tmp_path: Path) -> None:
    with make(tmp_path, budget=1e6, per_release=1000.0, k=5) as fs:
        fs.ingest("applications", rows([f"p{i}" for i in range(100)]))
        fs.ingest("applications", rows(["heavy"] * 10_000, amount=1000.0))
        release = fs.dp_query("applications", aggregates=["count", "sum:amount"], purpose="research", epsilon=1000.0)
        [row] = release.table.to_pylist()
        assert 104 <= row["count"] <= 106, "the heavy entity counts at most 5 rows"
        assert abs(row["sum_amount"] - (100 * 100 + 5 * 1000)) <= 150, (
            "noise scale 10: 15 scales of slack; unbounded it would be off by 10M"
        )


def test_private_groups_go_through_partition_selection(tmp_path: Path) -> None:
    with make(tmp_path, budget=1e6, per_release=2.0, k=1) as fs:
        fs.ingest("applications", rows([f"p{i}" for i in range(300)], region="north"))
        fs.ingest("applications", rows(["loner"], region="island"))
        with pytest.raises(PolicyViolation, match=r"group columns region have no public values .* needs a delta"):
            fs.dp_query("applications", aggregates=["count"], group_by=["region"], purpose="research")
        for _ in range(30):
            release = fs.dp_query(
                "applications",
                aggregates=["count"],
                group_by=["region"],
                purpose="research",
                epsilon=2.0,
                delta=1e-7,
                fresh=True,
            )
            regions = release.table.column("region").to_pylist()
            assert "island" not in regions, "a group held by one entity is never released"
            assert regions == ["north"]
        [stat] = release.statistics
        assert stat.threshold is not None and stat.threshold > 1


def test_public_groups_fairness_audit_and_min_group_size(tmp_path: Path) -> None:
    with make(tmp_path, budget=100.0, per_release=10.0, k=1, min_group=20) as fs:
        fs.ingest("applications", rows([f"a{i}" for i in range(200)], ethnicity="a", approved=1))
        fs.ingest("applications", rows([f"b{i}" for i in range(200)], ethnicity="b", approved=0))
        fs.ingest("applications", rows([f"c{i}" for i in range(3)], ethnicity="c"))
        with pytest.raises(PolicyViolation, match="purpose 'fairness_audit' may not have offline access"):
            fs.read("applications", features=["ethnicity"], purpose="fairness_audit")
        audit = fs.dp_query(
            "applications", aggregates=["mean:approved"], group_by=["ethnicity"], purpose="fairness_audit", epsilon=10.0
        )
        got = {r["ethnicity"]: r for r in audit.table.to_pylist()}
        assert set(got) == {"a", "b"} and audit.suppressed_groups == 1, "group c (3 people) is below min_group_size"
        assert got["a"]["mean_approved"] > 0.8 and got["b"]["mean_approved"] < 0.2
        assert audit.table.column_names == ["ethnicity", "count", "mean_approved"], (
            "a grouped release carries its count"
        )


def test_the_budget_cannot_be_overspent_and_dry_runs_and_cached_releases_are_free(tmp_path: Path) -> None:
    clock = StepClock(start=datetime(2025, 6, 10, tzinfo=UTC), step=timedelta(milliseconds=1))
    with make(tmp_path, budget=2.0, per_release=1.0, clock=clock) as fs:
        fs.ingest("applications", rows([f"p{i}" for i in range(50)]))
        query = {"aggregates": ["count"], "purpose": "research"}
        dry = fs.dp_query("applications", **query, epsilon=1.0, dry_run=True)
        assert dry.table is None and dry.spent == 0 and "unknown" in dry.truncation_bias
        assert fs.dp_budget(purpose="research")[0].remaining == 2.0, "a dry run spends nothing"
        first = fs.dp_query("applications", **query, epsilon=1.0)
        again = fs.dp_query("applications", **query, epsilon=1.0)
        assert (first.cached, first.spent, again.cached, again.spent) == (False, 1.0, True, 0.0)
        assert again.table.to_pylist() == first.table.to_pylist(), "the stored release, at no new cost"
        fs.dp_query("applications", aggregates=["count", "mean:amount"], purpose="research", epsilon=0.75)
        [status] = fs.dp_budget(purpose="research")
        assert (status.spent, status.reserved, status.remaining) == (1.75, 0.0, 0.25)
        with pytest.raises(
            PrivacyBudgetExceeded, match=r"epsilon 0.5 asked, 0.25 of 2 left; it refreshes from 2025-07-10"
        ) as info:
            fs.dp_query("applications", aggregates=["sum:amount"], purpose="research", epsilon=0.5)
        assert (info.value.remaining, info.value.spent, info.value.budget) == (0.25, 1.75, 2.0)
        fs.ingest("applications", rows(["late"]))  # new data: the same query is a new release
        with pytest.raises(PrivacyBudgetExceeded):
            fs.dp_query("applications", **query, epsilon=1.0)
        with pytest.raises(
            PolicyViolation, match=r"epsilon 1.5 is not allowed: policy 'loans' allows at most 1.0 per release"
        ):
            fs.dp_query("applications", **query, epsilon=1.5)
        with pytest.raises(PolicyViolation, match="purpose 'credit_model' may not have dp_aggregates access"):
            fs.dp_query("applications", aggregates=["count"], purpose="credit_model")
        with pytest.raises(PolicyViolation, match=r"sum:region needs clamp bounds for 'region'"):
            fs.dp_query("applications", aggregates=["sum:region"], purpose="research")
        with pytest.raises(PolicyViolation, match=r"unknown DP aggregate 'median:amount'"):
            fs.dp_query("applications", aggregates=["median:amount"], purpose="research")
        clock.now = datetime(2025, 7, 11, tzinfo=UTC)  # the 30-day period has passed
        assert fs.dp_budget(purpose="research")[0].remaining == 2.0
        assert fs.dp_query("applications", **query, epsilon=1.0).spent == 1.0
        actions = [e.action for e in fs.audit_entries()]
        assert (
            actions.count("dp_release") == 4 and actions.count("dp_refused") == 2 and actions.count("dp_dry_run") == 1
        )


RACE = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from featurestore import FeatureStore, PrivacyBudgetExceeded
    from featurestore.testing import TEST_KEY_PROVIDER

    store = FeatureStore(sys.argv[1], key_provider=TEST_KEY_PROVIDER, clock=lambda: datetime(2025, 6, 10, tzinfo=UTC))
    ok = refused = 0
    for _ in range(6):
        try:
            store.dp_query("applications", aggregates=["count"], purpose="research", epsilon=0.5, fresh=True)
            ok += 1
        except PrivacyBudgetExceeded as exc:
            assert exc.remaining < 0.5
            refused += 1
    print(ok, refused, flush=True)
    """
)


def _race(root: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(4)
    ]
    outcomes = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        outcomes.append(tuple(int(x) for x in out.split()))
    assert sum(ok for ok, _ in outcomes) == 8, f"a budget of 4.0 pays for exactly eight releases of 0.5: {outcomes}"
    assert sum(refused for _, refused in outcomes) == 16


def test_a_budget_race_between_processes_on_sqlite(tmp_path: Path) -> None:
    with make(tmp_path, budget=4.0, per_release=0.5) as fs:
        fs.ingest("applications", rows([f"p{i}" for i in range(50)]))
    _race(tmp_path / "store")
    with FeatureStore(
        tmp_path / "store", key_provider=TEST_KEY_PROVIDER, clock=lambda: datetime(2025, 6, 10, tzinfo=UTC)
    ) as fs:
        [status] = fs.dp_budget(purpose="research")
        assert (status.spent, status.remaining) == (4.0, 0.0)


@pytest.mark.postgres
def test_a_budget_race_between_processes_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    with make(tmp_path, budget=4.0, per_release=0.5, registry_url=postgres_url) as fs:
        fs.ingest("applications", rows([f"p{i}" for i in range(50)]))
    _race(tmp_path / "store")
    with FeatureStore(
        tmp_path / "store", key_provider=TEST_KEY_PROVIDER, clock=lambda: datetime(2025, 6, 10, tzinfo=UTC)
    ) as fs:
        [status] = fs.dp_budget(purpose="research")
        assert (status.spent, status.remaining) == (4.0, 0.0)


def test_a_dp_aggregate_view_joins_point_in_time_by_its_group(tmp_path: Path) -> None:
    region = Entity(name="region_e", join_keys={"region": "string"})
    stats = FeatureView(name="region_stats", entity="region_e", features={"count": "int64", "mean_amount": "float64"})
    with make(tmp_path, budget=1e6, per_release=1000.0, k=1) as fs:
        policy = fs.root / "policies" / "loans.yaml"  # type: ignore[operator]
        policy.write_text(
            policy.read_text()
            .replace("version: 1", "version: 2")
            .replace(
                "public_groups: {ethnicity: [a, b, c]}", "public_groups: {ethnicity: [a, b, c], region: [north, south]}"
            )
        )
        fs.approve_policy(policy, by="A. Counsel", role="legal")
        fs.apply([APPLICANT, APPLICATIONS, region, stats])  # the aggregate view holds DP releases only: ungoverned here
        may = [datetime(2025, 5, 10, tzinfo=UTC)] * 100
        june = [datetime(2025, 6, 5, tzinfo=UTC)] * 100
        for when, amount in ((may, 100.0), (june, 300.0)):
            data = rows([f"p{i}" for i in range(100)], region="north", amount=amount)
            fs.ingest("applications", data.set_column(1, "event_timestamp", pa.array(when, TS)))
        windows = [
            (datetime(2025, 5, 1, tzinfo=UTC), datetime(2025, 6, 1, tzinfo=UTC)),
            (datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC)),
        ]
        for window in windows:
            release, batch = fs.release_dp_view(
                "region_stats",
                source="applications",
                aggregates=["mean:amount"],
                group_by="region",
                purpose="research",
                window=window,
                epsilon=1000.0,
            )
            assert (batch.rows, release.suppressed_groups, release.spent) == (1, 1, 1000.0), (
                "south (empty) is below min_group_size"
            )
        spine = pa.table(
            {
                "region": ["north", "north", "south"],
                "event_timestamp": pa.array(
                    [
                        datetime(2025, 6, 15, tzinfo=UTC),
                        datetime(2025, 7, 2, tzinfo=UTC),
                        datetime(2025, 7, 2, tzinfo=UTC),
                    ],
                    TS,
                ),
            }
        )
        joined = fs.get_historical_features(spine, ["region_stats:mean_amount", "region_stats:count"])
        means = joined.column("mean_amount").to_pylist()
        assert 99 <= means[0] <= 101 and 299 <= means[1] <= 301, "each entity row gets the window released before it"
        assert all(abs(c - 100) <= 1 for c in joined.column("count").to_pylist()[:2])
        assert joined.column("count")[2].as_py() is None, "a suppressed group has no value to join"
        assert fs.dp_budget(purpose="research")[0].spent == 2000.0
    import base64

    from typer.testing import CliRunner

    from featurestore.cli import app
    from featurestore.testing import TEST_MASTER_KEY

    runner = CliRunner(env={"FEATURESTORE_MASTER_KEY": base64.b64encode(TEST_MASTER_KEY).decode()})
    store = str(tmp_path / "store")
    result = runner.invoke(
        app,
        [
            "dp",
            "release-view",
            "region_stats",
            "--source",
            "applications",
            "--agg",
            "mean:amount",
            "--by",
            "region",
            "--start",
            "2025-06-01T00:00:00Z",
            "--end",
            "2025-06-08T00:00:00Z",
            "--purpose",
            "research",
            "--epsilon",
            "1000",
            "-s",
            store,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Released 1 groups into region_stats@v1 as batch" in result.output and "epsilon 1000 spent" in result.output
    bad = runner.invoke(
        app,
        [
            "dp",
            "release-view",
            "region_stats",
            "--source",
            "applications",
            "--agg",
            "count",
            "--by",
            "region",
            "--start",
            "2025-06-01",
            "--end",
            "2025-06-08T00:00:00Z",
            "--purpose",
            "research",
            "-s",
            store,
        ],
    )
    assert (
        bad.exit_code == 1 and "--start '2025-06-01' has no time zone" in bad.output and "Traceback" not in bad.output
    )
    budget = runner.invoke(app, ["dp", "budget", "--purpose", "research", "-s", store])
    # The CLI runs on the wall clock: the 2025 charges above are out of the 30-day period by now.
    assert (
        "loans/research: epsilon 1000 spent, 0 reserved, 999000 of 1e+06 left per 30 days; refreshes from"
        in budget.output
    )


def test_a_repeated_shape_reuses_its_truncation_only_while_the_data_is_the_same(tmp_path: Path) -> None:
    with make(tmp_path, budget=1e9, per_release=1000.0, k=1) as fs:

        def count() -> int:  # epsilon 1000 with one row per entity: noise scale 0.001, so the count is exact
            release = fs.dp_query(
                "applications",
                aggregates=["count"],
                group_by=["ethnicity"],
                purpose="research",
                epsilon=1000.0,
                fresh=True,
            )
            return int(sum(release.table.column("count").to_pylist()))

        fs.ingest("applications", rows([f"p{i}" for i in range(100)]))
        assert count() == 100
        assert count() == 100, "the same data: the kept truncation gives the same exact counts"
        fs.ingest("applications", rows([f"q{i}" for i in range(50)], ethnicity="b"))
        assert count() == 150, "a new batch is a new data version"
        fs.erase("applicant", ["p1", "p2"], compact=False)
        assert count() == 148, "an erasure deletes rows without a new batch: also a new data version"


@pytest.mark.parametrize("groups", [None, 1, 2])
def test_each_entity_counts_in_at_most_its_groups_bound(tmp_path: Path, groups: int | None) -> None:
    with make(tmp_path, budget=1e9, per_release=1000.0, k=5, groups=groups) as fs:
        fs.ingest("applications", rows([f"p{i}" for i in range(100)], ethnicity="a"))
        for ethnicity in ("a", "b", "c"):
            fs.ingest("applications", rows(["heavy"] * 3, ethnicity=ethnicity))
        for _ in range(5):  # noise scale 0.005: the counts are exact; the groups kept are drawn anew each time
            release = fs.dp_query(
                "applications",
                aggregates=["count"],
                group_by=["ethnicity"],
                purpose="research",
                epsilon=1000.0,
                fresh=True,
            )
            heavy = {
                r["ethnicity"]: r["count"] - (100 if r["ethnicity"] == "a" else 0) for r in release.table.to_pylist()
            }
            touched = sum(1 for n in heavy.values() if n > 0)
            assert sum(heavy.values()) == min(3 * (groups or 3), 5), heavy
            assert touched <= (groups or 3) and all(0 <= n <= 3 for n in heavy.values())
            fs.ingest("applications", rows([f"x{_}"], ethnicity="c"))  # a new data version: a new draw of groups
            fs.erase("applicant", [f"x{_}"], compact=False)


def test_a_groups_bound_lowers_the_partition_selection_threshold(tmp_path: Path) -> None:
    thresholds = []
    for groups in (None, 1):
        with make(tmp_path / str(groups), budget=1e6, per_release=2.0, k=5, groups=groups) as fs:
            [stat] = fs.dp_query(
                "applications",
                aggregates=["count"],
                group_by=["region"],
                purpose="research",
                epsilon=2.0,
                delta=1e-7,
                dry_run=True,
            ).statistics
            thresholds.append(stat.threshold)
    assert thresholds[1] < thresholds[0], thresholds


@pytest.mark.parametrize(
    "query",
    [
        {"aggregates": ["count"], "group_by": ['ethnicity", (SELECT max(amount) FROM fv_applications_v1) AS "x']},
        {"aggregates": ['sum:amount") FROM fv_applications_v1 --']},
        {"aggregates": ["count; SELECT * FROM fv_applications_v1"]},
        {"aggregates": ["count"], "group_by": ["_batch_id"]},
        {"aggregates": ["sum:applicant_id"]},
    ],
)
def test_names_in_a_query_cannot_inject_sql(tmp_path: Path, query: dict[str, list[str]]) -> None:
    """Group and aggregate names reach the truncation's SQL: each must be a feature of the view
    (quoted), an aggregate one of count, sum and mean; anything else is refused before any budget is
    reserved or row read."""
    with make(tmp_path) as fs:
        fs.ingest("applications", rows([f"p{i}" for i in range(5)]))
        with pytest.raises(FeatureStoreError):
            fs.dp_query("applications", purpose="research", epsilon=0.5, **query)  # type: ignore[arg-type]
        assert all(b.spent == 0 for b in fs.dp_budget()), "nothing was charged"
