//! `[sync]`: how often the source polls, how far back, for how long, and the full sweeps.

use super::*;

#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Time between scheduled polls.
    pub interval: Duration,
    /// How far behind the cursor each poll starts again, for late commits and clock skew.
    pub overlap: Duration,
    /// Longest one poll may take; past it the poll fails as `timeout` and the cursor stays.
    pub poll_budget: Duration,
    /// Time between full sweeps (polls without the updatedDateTime filter); `None`: never.
    pub full_sweep_interval: Option<Duration>,
    /// Pages one poll keeps in flight at most: read, published and not yet acknowledged by
    /// the broker. `1` waits for each page's acknowledgements before reading the next; more
    /// reads ahead while earlier pages are acknowledged (the cursor still moves only once
    /// every record before it is acknowledged). Memory: this many pages of records.
    pub pages_in_flight: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSync {
    pub(super) interval_secs: Option<u64>,
    pub(super) overlap_secs: Option<u64>,
    pub(super) poll_budget_secs: Option<u64>,
    pub(super) full_sweep_secs: Option<u64>,
    pub(super) pages_in_flight: Option<u64>,
}

/// Reads `[sync]` and its variables; the interval's default depends on the `environment`.
pub(super) fn sync_settings(
    src: &Source<'_>,
    sync: FileSync,
    environment: Environment,
) -> Result<SyncSettings, ConfigError> {
    let default_interval = match environment {
        Environment::Production => Defaults::SYNC_INTERVAL_PRODUCTION_SECS,
        Environment::Development => Defaults::SYNC_INTERVAL_DEVELOPMENT_SECS,
    };
    let interval_secs = src
        .parse(
            "HUNTER_SYNC_INTERVAL_SECS",
            sync.interval_secs,
            "a whole number of seconds",
        )?
        .unwrap_or(default_interval);
    if interval_secs == 0 {
        return Err(ConfigError::Invalid {
            setting: "HUNTER_SYNC_INTERVAL_SECS".into(),
            message: "must be at least 1 second".into(),
        });
    }
    let overlap_secs = src
        .parse(
            "HUNTER_SYNC_OVERLAP_SECS",
            sync.overlap_secs,
            "a whole number of seconds",
        )?
        .unwrap_or(Defaults::OVERLAP_SECS);
    let poll_budget_secs = src
        .parse(
            "HUNTER_SYNC_POLL_BUDGET_SECS",
            sync.poll_budget_secs,
            "a whole number of seconds",
        )?
        .unwrap_or(Defaults::POLL_BUDGET_SECS);
    if poll_budget_secs == 0 {
        return Err(ConfigError::Invalid {
            setting: "HUNTER_SYNC_POLL_BUDGET_SECS".into(),
            message: "must be at least 1 second".into(),
        });
    }
    let full_sweep_secs = src
        .parse(
            "HUNTER_SYNC_FULL_SWEEP_SECS",
            sync.full_sweep_secs,
            "a whole number of seconds (0 turns sweeps off)",
        )?
        .unwrap_or(Defaults::FULL_SWEEP_SECS);
    let pages_in_flight = src
        .parse(
            "HUNTER_SYNC_PAGES_IN_FLIGHT",
            sync.pages_in_flight,
            "a whole number of pages",
        )?
        .unwrap_or(Defaults::PAGES_IN_FLIGHT as u64);
    if !(1..=Defaults::MAX_PAGES_IN_FLIGHT as u64).contains(&pages_in_flight) {
        return Err(ConfigError::Invalid {
            setting: "HUNTER_SYNC_PAGES_IN_FLIGHT".into(),
            message: format!(
                "{pages_in_flight} is outside 1..={} (1 waits for each page's acknowledgements \
                 before reading the next)",
                Defaults::MAX_PAGES_IN_FLIGHT
            ),
        });
    }
    Ok(SyncSettings {
        interval: Duration::from_secs(interval_secs),
        overlap: Duration::from_secs(overlap_secs),
        poll_budget: Duration::from_secs(poll_budget_secs),
        full_sweep_interval: (full_sweep_secs > 0).then(|| Duration::from_secs(full_sweep_secs)),
        pages_in_flight: pages_in_flight as usize,
    })
}
