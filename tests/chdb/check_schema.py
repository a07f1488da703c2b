#!/usr/bin/env python3
"""Every ClickHouse migration and every analyst view, on a real ClickHouse engine.

    check_schema.py --engine chdb                      current ClickHouse, in-process (chdb-core)
    check_schema.py --engine http --url URL            a server over HTTP (the local 18.16)

In a fresh database it applies `schemas/clickhouse/*.sql` in file-name order, statement by
statement, exactly as `hunter migrate` does (connectors/clickhouse/src/migrations.rs: a `;` at
the end of a line ends a statement, `--` lines are comments, an ADD COLUMN that fails because
the column exists counts as done, a file with `-- requires ClickHouse >= X.Y` is left pending on
an older server), then applies them all a second time (every statement must be
idempotent: `hunter migrate` repairs an interrupted migration by re-running it). Then it inserts
a few rows (naming their columns, as the sink does) into every table, queries every view and
asserts the exact results, runs every SQL example in schemas/clickhouse/README.md, and, on
servers with insert deduplication tokens (22.2+), checks that the tables drop an insert whose
token they have seen (migration 0008). A view
without checks here fails the run, so a new view cannot go untested. Every ClickHouse panel of
the Grafana dashboards (dashboards/*.json) runs too, its plugin macros expanded as in
tests/support/lib.rs (`grafana::expand_clickhouse_macros`); tests/e2e/dashboards.rs checks
their results against what a running Hunter wrote.

Exit status 0 only if everything passed; the first failure is printed with the statement.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO / "schemas" / "clickhouse"

# The table `hunter migrate` records applied migrations in (migrations.rs, `apply`).
MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS hunter_migrations (name String, checksum String, "
    "applied_at DateTime('UTC') DEFAULT now()) ENGINE = MergeTree ORDER BY name"
)


class StatementFailed(Exception):
    pass


def statements(sql: str) -> list[str]:
    """migrations.rs `statements`: `;` at the end of a line ends one; `--` lines are comments."""
    out, current = [], []
    for line in sql.splitlines():
        trimmed = line.strip()
        if trimmed.startswith("--") or not trimmed:
            continue
        current.append(line)
        if trimmed.endswith(";"):
            statement = "\n".join(current).strip().rstrip(";").strip()
            if statement:
                out.append(statement)
            current = []
    rest = "\n".join(current).strip()
    if rest:
        out.append(rest)
    return out


def required_version(sql: str) -> tuple[int, int] | None:
    """migrations.rs `required_version`: a `-- requires ClickHouse >= X.Y` line."""
    for line in sql.splitlines():
        match = re.fullmatch(r"--\s*requires ClickHouse >=\s*(\d+)\.(\d+)\s*", line.strip())
        if match:
            return int(match[1]), int(match[2])
    return None


def version_tuple(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


DEDUPLICATION_TOKENS = (22, 2)


def already_added(statement: str, error: str) -> bool:
    """migrations.rs `already_added`."""
    return "ADD COLUMN" in statement.upper() and (
        "already exists" in error or "DUPLICATE_COLUMN" in error or "Code: 15" in error
    )


class Chdb:
    """Current ClickHouse in this process (the PyPI package chdb-core)."""

    def __init__(self) -> None:
        from chdb import session  # imported here so that `--engine http` needs no chdb

        self.session = session.Session()
        self.version = self.rows("SELECT version() AS v")[0]["v"]

    def _query(self, sql: str, fmt: str, database: str | None):
        try:
            # A session keeps `USE`, as a connection of `hunter migrate` keeps its database.
            self.session.query(f"USE {database or 'default'}", "CSV")
            return self.session.query(sql, fmt)
        except Exception as error:  # chdb raises ChdbError with the server's message
            raise StatementFailed(str(error)) from None

    def execute(self, sql: str, database: str | None = None) -> None:
        self._query(sql, "CSV", database)

    def rows(self, sql: str, database: str | None = None) -> list[dict]:
        return parse_rows(self._query(sql, "JSONEachRow", database).bytes())

    def close(self) -> None:
        self.session.cleanup()


class Http:
    """A ClickHouse server over its HTTP interface (what `hunter migrate` talks to)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.version = self.rows("SELECT version() AS v")[0]["v"]

    def _post(self, sql: str, database: str | None) -> bytes:
        # 18.16 quotes 64-bit integers in JSON by default; current versions do not.
        params = {"output_format_json_quote_64bit_integers": "0"}
        if database:
            params["database"] = database
        url = f"{self.url}/?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, data=sql.encode(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            raise StatementFailed(error.read().decode(errors="replace").strip()) from None

    def execute(self, sql: str, database: str | None = None) -> None:
        self._post(sql, database)

    def rows(self, sql: str, database: str | None = None) -> list[dict]:
        return parse_rows(self._post(f"{sql}\nFORMAT JSONEachRow", database))

    def close(self) -> None:
        pass


def parse_rows(body: bytes) -> list[dict]:
    return [
        json.loads(line, parse_float=Decimal, parse_int=Decimal)
        for line in body.decode().splitlines()
        if line.strip()
    ]


def normalise(value):
    """Numbers compare by value (1.5 == 1.50), whatever the engine printed."""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return Decimal(str(value)).normalize()
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def expect(what: str, got: list[dict], want: list[dict]) -> None:
    got_n = [{k: normalise(v) for k, v in row.items()} for row in got]
    want_n = [{k: normalise(v) for k, v in row.items()} for row in want]
    if got_n != want_n:
        raise AssertionError(f"{what}:\n  got  {got}\n  want {want}")


class Check:
    """One engine and the test database on it."""

    def __init__(self, engine, database: str) -> None:
        self.engine = engine
        self.db = database

    def run(self, sql: str) -> None:
        try:
            self.engine.execute(sql, self.db)
        except StatementFailed as error:
            raise StatementFailed(f"{error}\n  statement: {sql}") from None

    def rows(self, sql: str) -> list[dict]:
        try:
            return self.engine.rows(sql, self.db)
        except StatementFailed as error:
            raise StatementFailed(f"{error}\n  query: {sql}") from None

    def migrate(self) -> tuple[int, list[str]]:
        """Applies every migration's statements in order, in the database; returns how many ran
        and the migrations left pending for a newer server."""
        files = sorted(SCHEMA_DIR.glob("*.sql"))
        assert files, f"no migrations in {SCHEMA_DIR}"
        count, waiting = 0, []
        for path in files:
            sql = path.read_text()
            required = required_version(sql)
            if required and version_tuple(self.engine.version) < required:
                waiting.append(path.name)
                continue
            for statement in statements(sql):
                try:
                    self.engine.execute(statement, self.db)
                except StatementFailed as error:
                    if already_added(statement, str(error)):
                        continue
                    raise StatementFailed(f"{path.name}: {error}\n  statement: {statement}") from None
                count += 1
        return count, waiting

    def insert(self, table: str, columns: list[str], rows: list[tuple], token: str | None = None) -> None:
        values = ",\n".join("(" + ", ".join(sql_literal(v) for v in row) + ")" for row in rows)
        settings = f"SETTINGS insert_deduplication_token = {sql_literal(token)} " if token else ""
        self.run(f"INSERT INTO {table} ({', '.join(columns)}) {settings}VALUES\n{values}")


def sql_literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(sql_literal(v) for v in value) + "]"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


LEAD_COLUMNS = [
    "lead_id", "referral_id", "tenant", "name", "status", "substatus", "company_name",
    "company_domain", "country", "deal_value", "currency", "updated_at", "version",
    "processed_at", "deal_value_usd", "score", "priority", "products", "change_type",
    "previous_status",
]


def lead(lead_id, version, status, substatus, domain, usd, updated, change="created", previous=None):
    return (
        lead_id, f"ref-{lead_id}", "t1", f"Lead {lead_id}", status, substatus,
        f"Company of {lead_id}", domain, "DE", usd, "USD" if usd is not None else None,
        updated, version, updated, usd, 50, "medium", ["Azure"], change, previous,
    )


HISTORY_COLUMNS = [
    "lead_id", "version", "tenant", "status", "substatus", "previous_status", "change_type",
    "deal_value_usd", "score", "updated_at", "processed_at",
]


def history(lead_id, version, status, previous, change, updated):
    return (lead_id, version, "t1", status, None, previous, change, None, 10, updated, updated)


def check_views(check: Check) -> None:
    db = check.db
    # Two versions of lead-1 in separate INSERTs (separate parts), a replayed lead-2, a lead
    # without a domain, one with no value.
    check.insert("leads", LEAD_COLUMNS, [
        lead("lead-1", 1, "New", None, "acme.com", Decimal("100.00"), "2026-01-01 10:00:00"),
        lead("lead-2", 5, "Active", None, "acme.com", Decimal("50.25"), "2026-01-03 00:00:00"),
        lead("lead-3", 1, "New", None, "beta.org", None, "2026-01-01 00:00:00"),
        lead("lead-4", 1, "New", None, None, Decimal("7.00"), "2026-01-01 00:00:00"),
    ])
    check.insert("leads", LEAD_COLUMNS, [
        lead("lead-1", 2, "Closed", "Won", "acme.com", Decimal("150.00"), "2026-01-02 00:00:00",
             "status_changed", "New"),
        lead("lead-2", 5, "Active", None, "acme.com", Decimal("50.25"), "2026-01-03 00:00:00"),
    ])
    check.insert("lead_history", HISTORY_COLUMNS, [
        history("lead-1", 1, "New", None, "created", "2026-01-01 10:00:00"),
        history("lead-2", 5, "Active", None, "created", "2026-01-03 00:00:00"),
    ])
    check.insert("lead_history", HISTORY_COLUMNS, [
        history("lead-1", 2, "Closed", "New", "status_changed", "2026-01-02 00:00:00"),
        history("lead-1", 2, "Closed", "New", "status_changed", "2026-01-02 00:00:00"),
    ])
    check.insert(
        "sync_runs",
        ["run_id", "tenant", "trigger", "status", "started_at", "finished_at", "pages",
         "fetched", "published", "skipped", "dead_lettered", "row_version"],
        [("run-1", "t1", "schedule", "running", "2026-01-01 00:00:00", None, 0, 0, 0, 0, 0, 1),
         ("run-1", "t1", "schedule", "succeeded", "2026-01-01 00:00:00", "2026-01-01 00:00:05",
          2, 40, 39, 1, 0, 2)],
    )
    check.insert(
        "dlq",
        ["dlq_partition", "dlq_offset", "stage", "error_class", "error", "original_topic",
         "original_partition", "original_offset", "payload"],
        [(0, 7, "process", "decode", "bad avro", "partner-center.referrals.v1", 3, 12, "00ff")],
    )
    check.insert(
        "referrals",
        ["referral_id", "tenant", "updated_at", "version", "etag", "raw_json", "fetched_at"],
        [("ref-lead-1", "t1", "2026-01-02 00:00:00", 2, "e2",
          '{"id":"ref-lead-1","salesStage":"Won"}', "2026-01-02 00:00:01")],
    )

    views = {
        row["name"]
        for row in check.rows(
            f"SELECT name FROM system.tables WHERE database = '{db}' AND engine = 'View'"
        )
    }
    checked = {"current_leads", "companies_by_domain", "status_transitions"}
    if views != checked:
        raise AssertionError(f"views in the schema {sorted(views)}, checked here {sorted(checked)}: "
                             "add checks for the new view to tests/chdb/check_schema.py")

    expect("current_leads", check.rows(
        f"SELECT lead_id, version, status, substatus, deal_value_usd, company_domain "
        f"FROM current_leads ORDER BY lead_id"), [
        {"lead_id": "lead-1", "version": 2, "status": "Closed", "substatus": "Won",
         "deal_value_usd": Decimal("150.00"), "company_domain": "acme.com"},
        {"lead_id": "lead-2", "version": 5, "status": "Active", "substatus": None,
         "deal_value_usd": Decimal("50.25"), "company_domain": "acme.com"},
        {"lead_id": "lead-3", "version": 1, "status": "New", "substatus": None,
         "deal_value_usd": None, "company_domain": "beta.org"},
        {"lead_id": "lead-4", "version": 1, "status": "New", "substatus": None,
         "deal_value_usd": Decimal("7.00"), "company_domain": None},
    ])
    # Every column of `leads` is in the view, enriched ones included.
    columns = [r["name"] for r in check.rows(
        f"SELECT name FROM system.columns WHERE database = '{db}' AND table = 'leads'")]
    view_columns = [r["name"] for r in check.rows(
        f"SELECT name FROM system.columns WHERE database = '{db}' AND table = 'current_leads'")]
    if sorted(columns) != sorted(view_columns) or len(columns) < 30:
        raise AssertionError(f"current_leads columns {view_columns} != leads columns {columns}")

    expect("companies_by_domain", check.rows(
        f"SELECT company_domain, leads, pipeline_usd, latest_status, toString(last_updated_at) AS last "
        f"FROM companies_by_domain ORDER BY company_domain"), [
        {"company_domain": "acme.com", "leads": 2, "pipeline_usd": Decimal("200.25"),
         "latest_status": "Active", "last": "2026-01-03 00:00:00"},
        {"company_domain": "beta.org", "leads": 1, "pipeline_usd": None,
         "latest_status": "New", "last": "2026-01-01 00:00:00"},
    ])

    expect("status_transitions", check.rows(
        f"SELECT lead_id, tenant, previous_status, status, toString(changed_at) AS changed "
        f"FROM status_transitions ORDER BY lead_id"), [
        {"lead_id": "lead-1", "tenant": "t1", "previous_status": "New", "status": "Closed",
         "changed": "2026-01-02 00:00:00"},
    ])

    # The tables without a view, read the way the README says.
    expect("sync_runs FINAL", check.rows(
        f"SELECT run_id, status, fetched FROM sync_runs FINAL"),
        [{"run_id": "run-1", "status": "succeeded", "fetched": 40}])
    expect("dlq", check.rows(
        f"SELECT stage, error_class, original_offset FROM dlq FINAL"),
        [{"stage": "process", "error_class": "decode", "original_offset": 12}])

    # Dead-letter re-drive (0009): a dead letter written before the migration reads as never
    # replayed; the queries `hunter dlq list` runs (pipeline/src/dlq.rs), binds filled in.
    check.insert(
        "dlq",
        ["dlq_partition", "dlq_offset", "stage", "error_class", "error", "original_topic",
         "original_partition", "original_offset", "payload", "replay_count", "replay_of"],
        [(0, 9, "processor", "decode", "bad avro", "partner-center.referrals.v1", 3, 14, "00ff",
          1, "0:7")],
    )
    check.insert(
        "dlq_replays",
        ["dlq_partition", "dlq_offset", "replay_count", "topic", "partition", "offset",
         "replayed_at"],
        [(0, 7, 1, "partner-center.referrals.v1", 3, 14, "2026-01-01 00:00:00"),
         (0, 7, 1, "partner-center.referrals.v1", 3, 14, "2026-01-01 00:00:00")],
    )
    listed = check.rows(
        "SELECT dlq_partition, dlq_offset, toInt64(toUInt32(received_at)) AS received_unix, stage, "
        "error_class, error, original_topic, original_partition, original_offset, replay_count, "
        "replay_of FROM dlq FINAL WHERE (stage = 'processor' OR 'processor' = '') "
        "AND received_at >= toDateTime(0) AND (dlq_partition, dlq_offset) IN ((0, 7), (0, 9)) "
        "ORDER BY received_at, dlq_partition, dlq_offset LIMIT 10")
    for row in listed:
        row.pop("received_unix")  # the insert's time
    expect("dlq list", listed,
        [{"dlq_partition": 0, "dlq_offset": 9, "stage": "processor", "error_class": "decode",
          "error": "bad avro", "original_topic": "partner-center.referrals.v1",
          "original_partition": 3, "original_offset": 14, "replay_count": 1, "replay_of": "0:7"}])
    expect("dlq replays", check.rows(
        "SELECT dlq_partition, dlq_offset, count() AS n, toInt64(toUInt32(max(replayed_at))) AS last "
        "FROM dlq_replays FINAL WHERE (dlq_partition, dlq_offset) IN ((0, 7), (0, 9)) "
        "GROUP BY dlq_partition, dlq_offset"),
        [{"dlq_partition": 0, "dlq_offset": 7, "n": 1, "last": 1767225600}])
    expect("dlq failed again", check.rows(
        "SELECT replay_of, dlq_partition, dlq_offset FROM dlq FINAL WHERE has(['0:7', '0:9'], replay_of)"),
        [{"replay_of": "0:7", "dlq_partition": 0, "dlq_offset": 9}])
    expect("dlq before 0009", check.rows(
        "SELECT replay_count, replay_of FROM dlq FINAL WHERE dlq_offset = 7"),
        [{"replay_count": 0, "replay_of": ""}])


def check_deduplication(check: Check) -> None:
    """On 22.2+: a table drops an insert whose token it has seen (0008 set the window), and
    keeps one with a new token, whatever the rows. The sink's retries rely on it."""
    tables = {
        "leads": (LEAD_COLUMNS, lambda i: lead(f"dedup-{i}", 1, "New", None, None, None, "2026-02-01 00:00:00")),
        "lead_history": (HISTORY_COLUMNS, lambda i: history(f"dedup-{i}", 1, "New", None, "created", "2026-02-01 00:00:00")),
    }
    for table, (columns, row) in tables.items():
        check.insert(table, columns, [row(1)], token="hunter-sink-v1|t|0:1-1@1")
        check.insert(table, columns, [row(2)], token="hunter-sink-v1|t|0:1-1@1")  # a retry: dropped
        check.insert(table, columns, [row(1)], token="hunter-sink-v1|t|0:2-2@2")  # new token: kept
        expect(f"{table} after inserts with a repeated token", check.rows(
            f"SELECT lead_id, count() AS n FROM {table} WHERE lead_id LIKE 'dedup-%' "
            f"GROUP BY lead_id ORDER BY lead_id"),
            [{"lead_id": "dedup-1", "n": 2}])
    for table in ["leads", "lead_history", "referrals", "sync_runs", "dlq"]:
        window = check.rows(
            f"SELECT engine_full FROM system.tables WHERE database = '{check.db}' AND name = '{table}'"
        )[0]["engine_full"]
        if "non_replicated_deduplication_window = 1000" not in window:
            raise AssertionError(f"{table} has no deduplication window: {window}")


def expand_panel_macros(sql: str, start: int, end: int, interval_s: int) -> str:
    """The grafana-clickhouse-datasource macros the panels may use (any other is an error)."""
    def time_filter(match: re.Match) -> str:
        column = match.group(1).strip()
        return f"{column} >= toDateTime({start}) AND {column} <= toDateTime({end})"
    sql = re.sub(r"\$__timeFilter\(([^(),]+)\)", time_filter, sql)
    sql = sql.replace("$__interval_s", str(interval_s))
    sql = sql.replace("$__fromTime", f"toDateTime({start})").replace("$__toTime", f"toDateTime({end})")
    if "$__" in sql:
        raise AssertionError(f"unsupported macro in panel SQL:\n{sql}")
    return sql


def check_dashboard_panels(check: Check) -> int:
    """Every ClickHouse panel query of dashboards/*.json runs (on the test data)."""
    count = 0
    for path in sorted((REPO / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                datasource = target.get("datasource") or panel.get("datasource") or {}
                if datasource.get("type") != "grafana-clickhouse-datasource":
                    continue
                sql = expand_panel_macros(target["rawSql"], 0, 4102444800, 86400)
                try:
                    check.rows(sql)
                except StatementFailed as error:
                    raise StatementFailed(f"{path.name}, panel {panel.get('title')!r}: {error}") from None
                count += 1
    if count == 0:
        raise AssertionError("no ClickHouse panels found in dashboards/*.json")
    return count


def check_readme_examples(check: Check) -> int:
    """Every ```sql block of the README runs (in the test database) and returns rows."""
    text = (SCHEMA_DIR / "README.md").read_text()
    count = 0
    for block in re.findall(r"```sql\n(.*?)```", text, flags=re.S):
        for query in statements(block):
            rows = check.rows(query)
            if not rows:
                raise AssertionError(f"README example returned no rows on the test data:\n{query}")
            count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["chdb", "http"], required=True)
    parser.add_argument("--url", help="ClickHouse HTTP URL for --engine http")
    args = parser.parse_args()
    if args.engine == "http" and not args.url:
        parser.error("--engine http needs --url")

    engine = Chdb() if args.engine == "chdb" else Http(args.url)
    database = f"hunter_schema_{uuid.uuid4().hex[:10]}"
    label = f"ClickHouse {engine.version} ({args.engine})"
    check = Check(engine, database)
    try:
        engine.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        check.run(MIGRATIONS_TABLE)
        first, waiting = check.migrate()
        again, _ = check.migrate()
        check_views(check)
        examples = check_readme_examples(check)
        panels = check_dashboard_panels(check)
        tokens = version_tuple(engine.version) >= DEDUPLICATION_TOKENS
        if tokens:
            if waiting:
                raise AssertionError(f"migrations left pending on {engine.version}: {waiting}")
            check_deduplication(check)
        elif waiting != ["0008_insert_deduplication.sql"]:
            raise AssertionError(f"pending on {engine.version}: {waiting}, expected only 0008")
    except (StatementFailed, AssertionError) as error:
        print(f"[schema] FAILED on {label}: {error}", file=sys.stderr)
        return 1
    finally:
        try:
            engine.execute(f"DROP DATABASE IF EXISTS {database}")
        except StatementFailed:
            pass
        engine.close()
    dedup = ("insert deduplication by token checked" if tokens
             else f"pending here (needs a newer server): {', '.join(waiting)}")
    print(f"[schema] {label}: {first} migration statements applied (and again: {again}), "
          f"3 views, {examples} README queries and {panels} dashboard panels checked; {dedup}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
