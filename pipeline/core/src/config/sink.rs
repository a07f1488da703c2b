//! `[sink]`: how the sink batches rows for ClickHouse.

use super::*;

#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// Rows per ClickHouse insert at most.
    pub batch_rows: usize,
    /// Longest a row waits for its batch.
    pub batch_max_wait: Duration,
    /// Longest one insert may take, sending the rows and waiting for ClickHouse's answer. Past
    /// it the insert counts as failed (class `timeout`) and the stream stalls and retries it, as
    /// for a refused insert: a server that accepts the request and never answers (hung,
    /// partitioned) does not hold the stream forever.
    pub insert_timeout: Duration,
    /// Who writes the `referrals` table (docs/clickhouse.md, "Who writes `referrals`").
    pub referrals_writer: ReferralsWriter,
}

/// Who writes the `referrals` table: the sink from a second read of the referral topic, or the
/// processor from the referrals it reads anyway (its offsets then move only after the broker
/// has the lead and ClickHouse the referral row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferralsWriter {
    /// The processor, unless the sink's referral group has committed offsets (a deployment
    /// that ran before the processor could write the table keeps the sink), decided by each
    /// role at its start.
    Auto,
    /// The sink, reading the referral topic in its own group (`hunter-sink-referrals`).
    Sink,
    /// The processor; the sink does not read the referral topic.
    Processor,
}

impl ReferralsWriter {
    pub fn as_str(self) -> &'static str {
        match self {
            ReferralsWriter::Auto => "auto",
            ReferralsWriter::Sink => "sink",
            ReferralsWriter::Processor => "processor",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSink {
    pub(super) batch_rows: Option<usize>,
    pub(super) batch_max_wait_ms: Option<u64>,
    pub(super) insert_timeout_ms: Option<u64>,
    pub(super) referrals_writer: Option<String>,
}

/// Reads `[sink]` and its variables.
pub(super) fn sink_settings(src: &Source<'_>, sink: FileSink) -> Result<SinkSettings, ConfigError> {
    let batch_rows = src
        .parse("HUNTER_SINK_BATCH_ROWS", sink.batch_rows, "a whole number")?
        .unwrap_or(Defaults::SINK_BATCH_ROWS);
    if batch_rows == 0 {
        return Err(ConfigError::Invalid {
            setting: "HUNTER_SINK_BATCH_ROWS".into(),
            message: "must be at least 1".into(),
        });
    }
    let batch_max_wait_ms = src
        .parse(
            "HUNTER_SINK_BATCH_MAX_WAIT_MS",
            sink.batch_max_wait_ms,
            "a whole number of milliseconds",
        )?
        .unwrap_or(Defaults::SINK_BATCH_MILLIS);
    let insert_timeout_ms = src
        .parse(
            "HUNTER_SINK_INSERT_TIMEOUT_MS",
            sink.insert_timeout_ms,
            "a whole number of milliseconds",
        )?
        .unwrap_or(Defaults::SINK_INSERT_TIMEOUT_MS);
    if insert_timeout_ms == 0 {
        return Err(ConfigError::Invalid {
            setting: "HUNTER_SINK_INSERT_TIMEOUT_MS".into(),
            message: "must be at least 1 (milliseconds)".into(),
        });
    }
    let referrals_writer = match src.text(
        "HUNTER_SINK_REFERRALS_WRITER",
        sink.referrals_writer,
        "sink.referrals_writer",
    ) {
        None => ReferralsWriter::Auto,
        Some((value, setting)) => match value.trim().to_ascii_lowercase().as_str() {
            "auto" => ReferralsWriter::Auto,
            "sink" => ReferralsWriter::Sink,
            "processor" => ReferralsWriter::Processor,
            _ => {
                return Err(ConfigError::Invalid {
                    setting,
                    message: format!("{value:?} is not auto, sink or processor"),
                });
            }
        },
    };
    Ok(SinkSettings {
        referrals_writer,
        batch_rows,
        batch_max_wait: Duration::from_millis(batch_max_wait_ms.max(1)),
        insert_timeout: Duration::from_millis(insert_timeout_ms),
    })
}
