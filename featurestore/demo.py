"""The demo: a store built from synthetic customers and a year of their card transactions.

It shows every capability the store has, in the order a team meets them: create a store with
a master key kept outside it in closed mode, write definitions, review and approve the example
data policy (only approved content is enforced; an unapproved edit changes nothing),
ingest personal data that is hashed and generalized before it reaches disk, see reads refused
without an allowed purpose, see bad input refused with nothing written, change a view's schema
(v2) while v1 stays readable, travel back in ingestion time, build a point-in-time training
set that rebuilds exactly, serve online lookups that agree with it, and verify the audit log.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute below)
import pyarrow.parquet as pq

from .config import CONFIG_FILE
from .dp_queries import DpRelease
from .errors import ConfigError, DefinitionError, IngestionError, PolicyViolation
from .privacy.keys import generate_master_key
from .store import FeatureStore

Echo = Callable[[str], None]

DEFINITIONS_V1 = """\
# Definitions of the demo store. `featurestore plan` shows what `apply` would change.
entities:
  - name: customer
    description: A retail bank customer.
    join_keys:
      customer_id: string

feature_views:
  - name: customer_profile
    entity: customer
    description: Slow-moving facts about a customer, one row per profile change.
    owner: growth-analytics@example.com
    timestamp_field: event_timestamp
    features:
      email: {type: string, description: "keyed hash of the normalized email (policy customer-data)"}
      birth_date: {type: date, description: "birth year (generalized by policy)"}
      postcode: {type: string, description: "first two characters (generalized by policy)"}
      country: string
      segment: {type: string, description: "retail, premium or business"}
      signup_date: date

  - name: customer_spend_daily
    entity: customer
    description: Card spend per customer and day, known at the end of that day.
    owner: risk-features@example.com
    ttl: 30d
    tags: {domain: payments}
    features:
      txn_count: int64
      spend_total: float64
      spend_max: float64
"""

# v2 of customer_profile adds the customer's tenure (its history is carried forward); a feature
# service names what the fraud model reads, for training and serving alike.
DEFINITIONS_V2 = (
    DEFINITIONS_V1.replace(
        "      signup_date: date\n",
        '      signup_date: date\n      tenure_days: {type: int64, description: "days since signup"}\n',
    )
    + """
feature_services:
  - name: fraud_model_v1
    owner: risk-features@example.com
    description: What the big-spender model reads.
    features: [customer_profile:segment, customer_profile:tenure_days, customer_spend_daily:spend_total, customer_spend_daily:txn_count]
"""
)

COUNTRIES = ["DE", "FR", "NL", "ES", "IT", "PL", "SE", "IE"]
SEGMENTS = ["retail", "retail", "retail", "premium", "business"]
FIRST = ["anna", "ben", "chloe", "david", "emma", "felix", "greta", "hugo", "ines", "jonas"]
LAST = ["schmidt", "martin", "jansen", "garcia", "rossi", "nowak", "berg", "murphy"]


@dataclass(frozen=True)
class DemoData:
    """The synthetic sources: customers (with PII) and their transactions."""

    customers: pa.Table
    transactions: pa.Table


def make_data(n_customers: int, *, seed: int = 7, end: datetime | None = None) -> DemoData:
    """Realistic synthetic customers (ids, emails, birth dates, postcodes...) and the year of
    transactions up to `end` (default: now, to the second)."""
    rng = random.Random(seed)
    end = (end or datetime.now(UTC)).replace(microsecond=0)
    start = end - timedelta(days=365)
    ids, emails, births, countries, segments, signups, profile_ts, postcodes = [], [], [], [], [], [], [], []
    t_ids, t_ts, t_amounts, t_merchants = [], [], [], []
    for i in range(n_customers):
        cid = f"C{i + 1:06d}"
        first, last = rng.choice(FIRST), rng.choice(LAST)
        signup = (end - timedelta(days=rng.randrange(365 * 3))).date()
        ids.append(cid)
        emails.append(f" {first.capitalize()}.{last}{rng.randrange(100)}@Example.com")
        postcodes.append(f"{rng.randrange(10, 99)}{rng.randrange(100, 999)}")
        births.append(date(1950, 1, 1) + timedelta(days=rng.randrange(365 * 55)))
        countries.append(rng.choice(COUNTRIES))
        segments.append(rng.choice(SEGMENTS))
        signups.append(signup)
        profile_ts.append(max(start, datetime(signup.year, signup.month, signup.day, tzinfo=UTC)))
        scale = {"retail": 40.0, "premium": 120.0, "business": 300.0}[segments[-1]]
        for _ in range(rng.randrange(10, 90)):
            t_ids.append(cid)
            t_ts.append(start + timedelta(seconds=rng.randrange(365 * 86400 - 86400)))
            t_amounts.append(round(rng.lognormvariate(0, 0.8) * scale, 2))
            t_merchants.append(rng.choice(["grocery", "travel", "fuel", "online", "restaurant"]))
    ts = pa.timestamp("us", tz="UTC")
    customers = pa.table(
        {
            "customer_id": ids,
            "email": emails,
            "birth_date": pa.array(births, pa.date32()),
            "postcode": postcodes,
            "phone": [f"+49 151 {rng.randrange(10**7, 10**8)}" for _ in ids],
            "country": countries,
            "segment": segments,
            "signup_date": pa.array(signups, pa.date32()),
            "event_timestamp": pa.array(profile_ts, ts),
        }
    )
    transactions = pa.table(
        {
            "customer_id": t_ids,
            "txn_timestamp": pa.array(t_ts, ts),
            "amount": t_amounts,
            "merchant_category": t_merchants,
        }
    )
    return DemoData(customers, transactions)


def daily_spend(transactions: pa.Table) -> pa.Table:
    """Spend per customer and day, stamped at the end of the day (when it becomes known)."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("txn", transactions)
        return con.sql(
            """
            SELECT customer_id,
                   (date_trunc('day', txn_timestamp) + INTERVAL 1 DAY) AS event_timestamp,
                   count(*)::BIGINT AS txn_count,
                   round(sum(amount), 2) AS spend_total,
                   max(amount) AS spend_max
            FROM txn GROUP BY ALL ORDER BY event_timestamp, customer_id
            """
        ).to_arrow_table()
    finally:
        con.close()


def training_spine(transactions: pa.Table, *, rows: int, seed: int = 11) -> pa.Table:
    """Entity rows for training: sampled payments, with the label 'amount over 150'."""
    rng = random.Random(seed)
    picked = pa.array(sorted(rng.sample(range(transactions.num_rows), rows)), pa.int64())
    sample = transactions.take(picked)
    amounts = sample.column("amount").to_pylist()
    return pa.table(
        {
            "customer_id": sample.column("customer_id"),
            "event_timestamp": sample.column("txn_timestamp"),
            "amount_over_150": pa.array([a > 150 for a in amounts]),
        }
    )


def example_policy() -> str:
    """The text of the example policy shipped with the package (``policies/customer-data.yaml``)."""
    from importlib import resources

    try:
        return (resources.files("featurestore.example_policies") / "customer-data.yaml").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover - an unusual source layout
        return (Path(__file__).resolve().parents[1] / "policies" / "customer-data.yaml").read_text(encoding="utf-8")


def _approver_key(private_file: Path) -> Path:
    """Make the demo approver's Ed25519 key pair: the private key (mode 600) at `private_file`, the
    public key beside it (returned, for ``add_approver``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    fd = os.open(private_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    public = private_file.with_suffix(".pub.pem")
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return public


def run_demo(
    directory: str | Path,
    *,
    customers: int = 2000,
    force: bool = False,
    echo: Echo | None = None,
    clock: Callable[[], datetime] | None = None,
) -> FeatureStore:
    """Build the demo store in `directory` and narrate each step through `echo` (quiet if None).

    The master key goes to ``<directory>.master.key`` beside the store (mode 600), never inside
    it. Returns the open store; the caller closes it.
    """
    say: Echo = echo or (lambda _text: None)
    root = Path(directory)
    key_file = root.parent / f"{root.name}.master.key"
    approver_key = root.parent / f"{root.name}.legal-approver.pem"
    if root.exists() and any(root.iterdir()):
        if not force:
            raise ConfigError(f"{root} is not empty; pass --force to replace a demo store there")
        if not (root / CONFIG_FILE).exists():
            raise ConfigError(f"{root} is not empty and holds no feature store; refusing to delete it")
        shutil.rmtree(root)
        key_file.unlink(missing_ok=True)
        approver_key.unlink(missing_ok=True)

    say(f"[bold]1. Create a store[/bold] in {root}")
    FeatureStore.init(root).close()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(generate_master_key() + "\n")
    config = root / CONFIG_FILE
    config.write_text(
        config.read_text(encoding="utf-8")
        .replace("master_key_file: null", f"master_key_file: {key_file.resolve()}")
        .replace("require_policy: false", "require_policy: true")
        .replace("signed_approvals: false", "signed_approvals: true"),
        encoding="utf-8",
    )
    store = FeatureStore(root, clock=clock, actor="demo-engineer")
    say(f"   {CONFIG_FILE}, features/, policies/, registry.db (SQLite, migrated), offline.duckdb")
    say(f"   master key in {key_file} (mode 600, outside the store); data keys are stored wrapped under it")
    say("   closed mode is on (governance.require_policy: true): every feature view needs an approved policy")
    say(
        "   signed approvals are on (governance.signed_approvals: true): an approval counts only when signed by a "
        "registered approver's Ed25519 key"
    )

    say("[bold]2. Write definitions[/bold] to features/customers.yaml and the example policy to policies/")
    (root / "features" / "customers.yaml").write_text(DEFINITIONS_V1, encoding="utf-8")
    policy_file = root / "policies" / "customer-data.yaml"
    policy_file.write_text(example_policy(), encoding="utf-8")
    try:
        store.apply()
    except DefinitionError as exc:
        say(f"   apply is refused until legal approves: {exc.errors[0].message.split('; review')[0]}")

    data = make_data(customers)
    say("[bold]3. Legal reviews and approves the policy[/bold] (featurestore policy plan / approve)")
    for line in store.plan_policy(policy_file)[2:6]:
        say(f"   plan: {line}")
    public_key = _approver_key(approver_key)
    printed = store.add_approver("A. Counsel", "legal", public_key)
    public_key.unlink()
    say(
        f"   A. Counsel is registered as legal with key {printed} (featurestore approvers add); her private key "
        f"is {approver_key}, outside the store"
    )
    store.approve_policy(policy_file, by="A. Counsel", role="legal", ticket="LEGAL-412", key=approver_key)
    say(
        "   approved and signed by A. Counsel (legal): the registry keeps the exact text, its SHA-256 and her signature, "
        "checked every time the policy in force is loaded"
    )
    for line in str(store.plan()).splitlines():
        say(f"   {line}")
    store.apply()
    say("   applied (every column of the governed views is classified, or apply would refuse)")

    say(
        f"[bold]4. Ingest[/bold] {data.customers.num_rows:,} synthetic customers and "
        f"{data.transactions.num_rows:,} transactions over a year"
    )
    try:
        store.ingest("customer_profile", data.customers)
    except IngestionError as exc:
        say(f"   refused, nothing written: {str(exc).splitlines()[1].strip()}")
    profile = data.customers.drop_columns(["phone"])
    r = store.ingest("customer_profile", profile)
    say(f"   customer_profile@v{r.version}: {r.rows:,} rows from Arrow, batch {r.batch_id}")
    stored = store.read(
        "customer_profile", features=["email", "birth_date", "postcode"], purpose="fraud_detection"
    ).slice(0, 1)
    raw = data.customers.slice(0, 1)
    say(
        f"   raw  {raw.column('customer_id')[0]} | {raw.column('email')[0].as_py().strip()} | {raw.column('birth_date')[0]} | {raw.column('postcode')[0]}"
    )
    say(
        f"   disk {stored.column('customer_id')[0].as_py()[:22]}... | {stored.column('email')[0].as_py()[:22]}... | "
        f"{stored.column('birth_date')[0]} | {stored.column('postcode')[0]}"
    )
    daily = daily_spend(data.transactions)
    with tempfile.TemporaryDirectory() as tmp:
        parquet = Path(tmp) / "spend_daily.parquet"
        pq.write_table(daily, parquet)
        r = store.ingest("customer_spend_daily", parquet)
    say(f"   customer_spend_daily@v{r.version}: {r.rows:,} rows from Parquet, batch {r.batch_id}")
    first_spend = r

    say("[bold]5. Reads need an allowed purpose[/bold]")
    for purpose in (None, "marketing"):
        try:
            store.read("customer_spend_daily", purpose=purpose)
        except PolicyViolation as exc:
            say(f"   refused: {exc}")
    allowed = store.read("customer_spend_daily", purpose="fraud_detection")
    say(f"   allowed for fraud_detection: {allowed.num_rows:,} rows (and the read is in the audit log)")
    say(
        f"   refusals are audited too: {len(store.audit_entries(action='refused'))} refused reads so far (who, purpose, view, why)"
    )

    say("[bold]5b. Only approved content is enforced[/bold]: an edit is a draft until legal approves it")
    approved_text = policy_file.read_text(encoding="utf-8")
    policy_file.write_text(
        approved_text.replace(
            "feature_views: [customer_profile, customer_spend_daily]", "feature_views: [customer_spend_daily]"
        )
        + "# edited, not approved\n",
        encoding="utf-8",
    )
    store.ingest("customer_profile", profile.slice(0, 3))
    email = store.read("customer_profile", features=["email"], purpose="fraud_detection").column("email")[-1].as_py()
    say(
        f"   an unapproved edit drops customer_profile from the scope; new rows are still hashed: email {email[:22]}..."
    )
    for st in store.policy_status():
        for file, lines in st.drafts:
            say(f"   policy status: draft {Path(file).name} pending; approving it would say: {lines[-1]}")
    policy_file.write_text(approved_text, encoding="utf-8")
    say("   (file restored: it matches the approved version again)")

    say("[bold]6. Bad input is refused whole[/bold], with where and how to fix it")
    naive = daily.slice(0, 5).cast(daily.schema.set(1, pa.field("event_timestamp", pa.timestamp("us"))))
    try:
        store.ingest("customer_spend_daily", naive)
    except IngestionError as exc:
        say(f"   {exc}")

    say(
        "[bold]7. A schema change makes a new version that keeps the history[/bold]: customer_profile gains tenure_days, "
        "and a feature service names what the fraud model reads"
    )
    (root / "features" / "customers.yaml").write_text(DEFINITIONS_V2, encoding="utf-8")
    for line in str(store.apply()).splitlines():
        say(f"   {line}")
    today = datetime.now(UTC).date()
    tenure = [(today - d).days for d in profile.column("signup_date").to_pylist()]
    r = store.ingest("customer_profile", profile.append_column("tenure_days", pa.array(tenure, pa.int64())))
    say(
        f"   customer_profile@v{r.version}: {r.rows:,} new rows with tenure_days, batch {r.batch_id}; it holds "
        f"{store.read('customer_profile', features=['segment'], purpose='fraud_detection').num_rows:,} rows, v1's included"
    )
    v1 = store.read("customer_profile@v1", features=["country"], purpose="fraud_detection")
    say(
        f"   the pinned ref customer_profile@v1 still reads {v1.num_rows:,} rows with features "
        f"{', '.join(store.get_view('customer_profile@v1').view.feature_names)}"
    )

    say("[bold]8. Time travel on ingestion time[/bold]")
    extra = daily.slice(0, 100)
    r = store.ingest("customer_spend_daily", extra)
    now_rows = store.read("customer_spend_daily", purpose="fraud_detection").num_rows
    then_rows = store.read("customer_spend_daily", as_of=first_spend.ingested_at, purpose="fraud_detection").num_rows
    say(
        f"   customer_spend_daily now has {now_rows:,} rows (batch {r.batch_id} added {r.rows}); "
        f"as of batch {first_spend.batch_id}'s ingestion time it had {then_rows:,}"
    )

    say(
        "[bold]9. A point-in-time training set[/bold]: one row per payment, raw customer ids in, features as known then"
    )
    spine = training_spine(data.transactions, rows=min(5000, data.transactions.num_rows))
    training = store.create_training_set(
        "big_spender_v1",
        spine,
        "service:fraud_model_v1",
        purpose="fraud_detection",
        description="demo: is the next payment over 150?",
    )
    table = store.load_training_set("big_spender_v1", purpose="fraud_detection")
    expired = table.column("spend_total").null_count
    say(
        f"   {training.row_count:,} rows; the raw ids were hashed in-process to join; spend features are null for "
        f"{expired:,} rows whose latest daily spend is older than the 30-day TTL or later than the payment"
    )
    say(
        f"   manifest: service {', '.join(training.services)} -> {', '.join(f['ref'] for f in training.features)}; "
        f"as of {training.as_of.isoformat()}"
    )
    for note in training.notes:
        say(f"   retention: {note['text']}")
    say(
        f"   built under {', '.join(h.split('@')[0] + '@' + h.split('@')[1][:12] + '...' for h in training.policy_hashes)}; "
        f"saved with customer ids as tokens; sha256 {training.content_hash[:16]}..."
    )
    correction = daily.slice(0, 50).set_column(3, "spend_total", pa.array([0.0] * 50))
    store.ingest("customer_spend_daily", correction)
    again = store.reproduce_training_set("big_spender_v1", purpose="fraud_detection")
    say(
        f"   after a correcting batch, reproduce_training_set rebuilds it: hash {'matches' if again.matches else 'DIFFERS'}"
    )
    known = store.get_historical_features(
        spine, ["customer_spend_daily:spend_total"], known_at_prediction_time=True, purpose="fraud_detection"
    )
    say(
        f"   known_at_prediction_time=True: {known.column('spend_total').null_count:,} null (every row here was "
        "ingested after the payments it describes, so a model serving then could not have seen it)"
    )
    import importlib.util

    if importlib.util.find_spec("deltalake") is None:
        say(
            "[bold]9b. Beyond one machine: the lake store[/bold]: skipped, deltalake is not installed "
            "(pip install 'featurestore\\[lake]')"
        )
    else:
        from .demo_lake import lake_step

        refs = ["customer_spend_daily:spend_total", "customer_spend_daily:txn_count"]
        before_fix = store.get_historical_features(
            spine, refs, as_of=first_spend.ingested_at, purpose="fraud_detection"
        )
        lake_step(root, key_file, DEFINITIONS_V1, example_policy(), daily, spine, before_fix, say, clock)

    say("[bold]10. Online serving[/bold]: materialize the latest values, look them up with raw ids")
    for m in store.materialize():
        say(
            f"   {m.view}@v{m.version}: {m.entities:,} entities {'copied' if m.full else 'updated'} to the online store"
        )
    ids = [data.customers.column("customer_id")[i].as_py() for i in (0, 1)] + ["C999999"]
    online = store.get_online_features(
        [{"customer_id": c} for c in ids], "service:fraud_model_v1", purpose="fraud_detection"
    )
    for i, customer in enumerate(ids):
        say(
            f"   {customer}: segment {online.values['segment'][i]!r} ({online.statuses['segment'][i]}), "
            f"spend_total {online.values['spend_total'][i]!r} ({online.statuses['spend_total'][i]})"
        )
    say(
        "   (values older than the 30-day TTL or the policy's 30-day online retention come back expired, never stale; "
        "serve over HTTP with `featurestore serve`)"
    )
    pushed_at = datetime.now(UTC) - timedelta(minutes=1)
    push_row = daily.slice(0, 1).set_column(1, "event_timestamp", pa.array([pushed_at], pa.timestamp("us", tz="UTC")))
    push_row = push_row.set_column(push_row.column_names.index("spend_total"), "spend_total", pa.array([999.0]))
    pushed = store.push("customer_spend_daily", push_row, to="both")
    late = push_row.set_column(
        1, "event_timestamp", pa.array([pushed_at - timedelta(hours=1)], pa.timestamp("us", tz="UTC"))
    )
    store.push(
        "customer_spend_daily", late.set_column(late.column_names.index("spend_total"), "spend_total", pa.array([1.0]))
    )
    who = {"customer_id": push_row.column("customer_id")[0].as_py()}
    served = store.get_online_features(who, ["customer_spend_daily:spend_total"], purpose="fraud_detection").values[
        "spend_total"
    ][0]
    say(
        f"   push (to online and offline, batch {pushed.batch_id}): {who['customer_id']} serves spend_total {served!r} at once; "
        "a late push of an older event did not overwrite it"
    )
    report = store.check_consistency(sample=200, purpose="fraud_detection")
    say(
        "   consistency with the point-in-time answer for now: "
        + ", ".join(f"{r.view} {r.checked} checked, {len(r.mismatches)} mismatches" for r in report)
    )

    say("[bold]11. Retention and the right to erasure[/bold] (featurestore retention run / erase / where)")
    dry = store.run_retention(dry_run=True)
    offline_expired = {place: rows for place, rows in dry.removed.items() if rows}
    say(
        "   retention dry run (policy: offline 400 days, online 30, training sets 180): "
        + (
            ", ".join(f"{place} {rows:,}" for place, rows in offline_expired.items())
            or "no offline row is past retention yet"
        )
    )
    done = store.run_retention()
    say(
        "   retention run: "
        + ", ".join(f"{place} {rows:,} rows removed" for place, rows in done.removed.items() if rows)
        + " (values reads were already hiding)"
    )
    subject = spine.column("customer_id")[0].as_py()
    before = store.where("customer", subject)
    say(f"   where is customer {subject}? " + ", ".join(f"{place}: {rows}" for place, rows in before.items()))
    [erased] = store.erase("customer", [subject])
    say(
        f"   erased: request {erased.request_id} {erased.status} (deadline {erased.deadline:%Y-%m-%d}), "
        f"{sum(erased.removed.values()):,} rows removed from {sum(1 for n in erased.removed.values() if n)} places, then compacted"
    )
    after = store.where("customer", subject)
    say(f"   where is customer {subject} now? {', '.join(after) or 'nowhere'}")
    proof = store.verify_erasure("customer", subject)
    say(
        f"   proof: {len(proof.checks)} checks, every table queried and {sum(c.method == 'bytes' for c in proof.checks)} files "
        f"scanned: {'clean' if proof.clean else 'FOUND'}; report {Path(proof.path).name if proof.path else '-'}"
    )
    back = store.ingest(
        "customer_profile",
        profile.filter(pa.compute.equal(profile.column("customer_id"), subject)).append_column(
            "tenure_days", pa.array([0], pa.int64())
        ),
    )
    say(
        f"   a late batch with that customer's row: {back.dropped_erased} row dropped by the tombstone, {back.rows} stored"
    )

    say(
        "[bold]12. Differentially private statistics[/bold] for research, without row access (featurestore dp query / budget)"
    )
    try:
        store.read("customer_profile", purpose="research_statistics")
    except PolicyViolation as exc:
        say(f"   rows are refused: {str(exc).split(' (it has')[0]}")

    def segments(dry_run: bool = False) -> DpRelease:
        return store.dp_query(
            "customer_profile",
            aggregates=["count"],
            group_by=["segment"],
            purpose="research_statistics",
            epsilon=0.5,
            dry_run=dry_run,
        )

    preview = segments(dry_run=True)
    say(
        "   dry run (free): "
        + "; ".join(f"{s.column} +/- {s.accuracy:,.0f} (95%, {s.distribution} noise)" for s in preview.statistics)
    )
    counted = segments()
    say(
        "   customers per segment: "
        + ", ".join(f"{r['segment']} about {r['count']:,}" for r in counted.table.to_pylist())
        if counted.table is not None
        else ""
    )
    say(f"   the same question again: {'the stored release, no new cost' if segments().cached else 'charged again'}")
    spend = store.dp_query(
        "customer_spend_daily", aggregates=["mean:spend_total"], purpose="research_statistics", epsilon=0.5
    )
    if spend.table is not None:
        say(
            f"   mean daily card spend: about {spend.table.column('mean_spend_total')[0].as_py():,.2f} "
            f"(true {pa.compute.mean(daily.column('spend_total')).as_py():,.2f}; at most 5 days per customer, drawn at random)"
        )
    for budget in store.dp_budget(purpose="research_statistics"):
        say(
            f"   budget {budget.purpose}: epsilon {budget.spent:g} spent, {budget.remaining:g} of {budget.budget:g} left "
            f"this {budget.period_days:g}-day period"
        )

    say("[bold]13. The registry's record[/bold]")
    for b in store.list_batches():
        rows = f"{b.rows:,} rows" if b.rows is not None else "no rows"
        say(f"   batch {b.batch_id}: {b.view}@v{b.version} {b.status}, {rows}")
    count, head = store.verify_audit()
    say(f"   audit log: {count} entries, hash chain intact, head {head[:16]}... (featurestore audit show / verify)")
    say(f"Done. Explore with: featurestore views -s {root}   |   featurestore audit show -s {root}")
    return store
