//! The command line. Subcommands and flags are a contract for scripts and docs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "hunter",
    version,
    about = "Partner Center referrals to Kafka, leads to ClickHouse"
)]
pub struct Cli {
    /// TOML config file; `HUNTER_*` environment variables override it.
    #[arg(long, global = true, env = "HUNTER_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a local Partner Center (Referrals API and login authority) from a JSON file.
    Simulate(SimulateArgs),
    /// Sign in to Partner Center and inspect the token cache.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Create the ClickHouse database and tables and the Kafka topics (idempotent).
    Migrate(MigrateArgs),
    /// Check config, sign-in, Partner Center, Kafka, registry, ClickHouse and the last sync run;
    /// print a verdict and a fix for each. Exits non-zero when a check fails.
    Doctor,
    /// Run one role, or every role in this process.
    Run {
        #[arg(value_enum)]
        role: Role,
    },
    /// Dead letters: list them, and replay them to the topic they came from once the cause is
    /// fixed (docs/dead-letters.md).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Rebuild data from Hunter's topics.
    Replay {
        #[command(subcommand)]
        command: ReplayCommand,
    },
    /// Re-read Partner Center now: everything, or what changed since --since; the source runs
    /// it (one at a time per tenant) and this waits with progress until it ends (exit non-zero
    /// when it failed).
    Backfill(BackfillArgs),
    /// Inspect Hunter's Kafka topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Partner Center webhooks: register this deployment's callback so referral changes reach
    /// Hunter in seconds, show the registration, or remove it (docs/partner-center-webhooks.md).
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReplayCommand {
    /// Rebuild ClickHouse tables from the topics (every record each topic holds when the replay
    /// starts), with progress and a final check that every key of the topic is in the table.
    /// Idempotent, and safe while the sink runs.
    Clickhouse {
        /// A table to rebuild (repeatable; default: leads, lead_history and referrals).
        #[arg(long = "table", value_enum)]
        tables: Vec<crate::replay::Table>,
        /// Write into this database (created and migrated first) instead of
        /// HUNTER_CLICKHOUSE_DATABASE.
        #[arg(long)]
        into: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Per topic: partitions, start and end offsets, records held, compaction, the record-size
    /// limit, and every consumer group that committed offsets on it with its lag (Hunter's own
    /// groups and any other the broker lists). Reads only; joins no group.
    Describe {
        /// Print JSON instead of text (for scripts).
        #[arg(long)]
        json: bool,
    },
}

// --- hunter dlq ---------------------------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Dead letters from the `dlq` table, oldest first, with what became of each (pending,
    /// replayed, failed again).
    List(DlqSelect),
    /// Re-publish dead letters to the topic and partition they came from, with their key and
    /// headers and a `hunter-replay-count` header; a record that fails again comes back once
    /// with its count and is not replayed again unless --max-replays is raised.
    Replay(DlqReplayArgs),
}

/// Which dead letters (every condition given must hold).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DlqSelect {
    /// Only those of this stage.
    #[arg(long, value_parser = ["source", "processor", "sink"])]
    pub stage: Option<String>,
    /// Only those received since: an RFC 3339 time (2026-01-31T08:00:00Z) or a duration back
    /// from now (90s, 30m, 24h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many, oldest first.
    #[arg(long, default_value_t = crate::dlq::DEFAULT_LIMIT)]
    pub limit: u32,
    /// Print JSON (one document) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct DlqReplayArgs {
    #[command(flatten)]
    pub select: DlqSelect,
    /// Only these dead letters (PARTITION:OFFSET on the dead-letter topic, as `list` prints);
    /// repeat the flag or separate with commas. Read from the topic even before the sink has
    /// indexed them.
    #[arg(long = "id", value_delimiter = ',', value_parser = crate::dlq::DeadLetterId::from_str_arg)]
    pub ids: Vec<crate::dlq::DeadLetterId>,
    /// Show what would be replayed, and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replays a record may have had: a dead letter whose record was replayed this many times
    /// already is refused (so nothing loops).
    #[arg(long, default_value_t = crate::dlq::DEFAULT_MAX_REPLAYS)]
    pub max_replays: u32,
    /// Replay dead letters that were replayed before, once more.
    #[arg(long)]
    pub again: bool,
}

// --- hunter backfill ----------------------------------------------------------------------------

#[derive(Debug, Clone, Default, clap::Args)]
pub struct BackfillArgs {
    /// Only this tenant (its configured name); default: every configured tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only referrals updated since then: an RFC 3339 time (2026-01-31T08:00:00Z) or a date
    /// (2026-01-31, midnight UTC). Default: everything.
    #[arg(long)]
    pub since: Option<String>,
    /// Print the run id and return at once (follow it with `GET /api/v1/sync/runs/{id}`).
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Default, clap::Args)]
pub struct MigrateArgs {
    /// Print the GRANT statements a DBA runs for Hunter's ClickHouse users (writer, API reader)
    /// and exit, without connecting to anything.
    #[arg(long)]
    pub print_grants: bool,
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// JSON array of Referral resources as the API returns them; re-read when it changes.
    #[arg(long)]
    pub referrals: PathBuf,
    /// Address to listen on, e.g. 127.0.0.1:18080.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Fault rates, e.g. `429:0.1,500:0.05,truncate:0.02`.
    #[arg(long, default_value = "")]
    pub faults: String,
    /// Referrals per page (the API's `$top` cap).
    #[arg(long, default_value_t = 100)]
    pub page_size: usize,
    /// Write N generated demo referrals to the file first (replacing it).
    #[arg(long)]
    pub generate: Option<usize>,
    /// Seed for --generate, faults and mutations (runs are reproducible).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Probability per list request of moving referrals on (new updatedDateTime and eTag,
    /// sometimes a status step); the file is rewritten so it stays the truth.
    #[arg(long, default_value_t = 0.0)]
    pub mutate: f64,
    /// Referrals moved on per mutation (all get the same timestamp: ties).
    #[arg(long, default_value_t = 1)]
    pub mutate_burst: usize,
    /// Keep moved referrals in memory only, not rewriting the file on each mutation (for
    /// large files; `GET /_simulator/referrals` shows the current referrals).
    #[arg(long)]
    pub mutate_in_memory: bool,
    /// Lifetime of the access tokens it issues, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub access_token_lifetime: u64,
    /// Also answer DNS (UDP, MX only) for the generated customers' `<company>.example`
    /// domains on this address, e.g. 127.0.0.1:18053, with a mix of mail providers fixed by
    /// --seed (docs/demo.md); point HUNTER_ENRICH_DNS_SERVER at it.
    #[arg(long)]
    pub dns_listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Device-code sign-in: prints a URL and a code, waits for approval, writes the token cache.
    Login {
        /// The tenant (by its configured name) to sign in for; needed when several are configured.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Account, tenant, access-token expiry, refresh-token age and a verdict; exits non-zero
    /// when a sign-in is needed.
    Status {
        /// Only this tenant (default: every configured tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// `hunter webhooks …` (docs/partner-center-webhooks.md).
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Register HUNTER_PARTNER_CENTER_WEBHOOK_URL (with the secret and the tenant added) for
    /// referral-created and referral-updated; replaces another registration, keeps an identical one.
    Register {
        /// Only this tenant (default: every configured tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Show the registration (the secret redacted); exits non-zero when it is missing or is not
    /// this deployment's callback.
    Status {
        /// Only this tenant (default: every configured tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Remove the registration (the poll alone keeps leads fresh).
    Unregister {
        /// Only this tenant (default: every configured tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    All,
    Source,
    Process,
    Sink,
    Api,
    /// Outgoing webhooks (docs/notifications.md); idles without HUNTER_NOTIFY_TARGETS.
    Notify,
}
