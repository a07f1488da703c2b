//! `[notify]`: outgoing webhooks of the `notify` role (docs/notifications.md).
//!
//! Targets are `name=format:url` items separated by commas (`HUNTER_NOTIFY_TARGETS`). A
//! webhook URL carries its own credential (Teams Workflows signatures, Slack's secret path), so
//! every URL is a [`Secret`]: no error, log line or `Debug` output ever shows one; errors name
//! the target and the setting instead.

use super::*;

/// The body a target receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyFormat {
    /// Hunter's own JSON event (docs/notifications.md, "JSON").
    Json,
    /// A Microsoft Teams message with an Adaptive Card (Workflows "post to a channel when a
    /// webhook request is received", and the older incoming webhooks).
    Teams,
    /// A Slack incoming webhook message with blocks.
    Slack,
}

impl NotifyFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyFormat::Json => "json",
            NotifyFormat::Teams => "teams",
            NotifyFormat::Slack => "slack",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "json" => Some(NotifyFormat::Json),
            "teams" => Some(NotifyFormat::Teams),
            "slack" => Some(NotifyFormat::Slack),
            _ => None,
        }
    }
}

/// One webhook target.
#[derive(Debug, Clone)]
pub struct NotifyTarget {
    /// Letters, digits, `.`, `_`, `-` (up to 64): the `target` column of `notifications` and
    /// the metrics label. Renaming a target makes it a new one (its pending deliveries are
    /// dropped with a warning).
    pub name: String,
    pub format: NotifyFormat,
    /// The webhook URL: a secret (it is the credential), only for the request itself.
    pub url: Secret,
}

#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// Where notifications go; empty: the role records nothing and sends nothing (it warns).
    pub targets: Vec<NotifyTarget>,
    /// A lead change older than this (by Partner Center's `createdDateTime` for a new referral,
    /// `updatedDateTime` for a status change) is history, not news: not notified. Keeps a new
    /// deployment, or a consumer group started over, from announcing every old referral.
    pub max_age: Duration,
    /// Longest one delivery request may take (connect, send, answer).
    pub timeout: Duration,
    /// Attempts per delivery before it is recorded as `failed`.
    pub max_attempts: u32,
    /// The first retry's backoff ceiling; it doubles per attempt (full jitter) up to
    /// [`Self::retry_cap`].
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Deliveries per minute per target at most (a token bucket; bursts of up to 5).
    pub rate_per_minute: u32,
    /// When the daily expiry check runs: minutes after midnight UTC.
    pub daily_at_minutes: u32,
    /// How often the hour-before expiry check runs.
    pub expiry_check_interval: Duration,
    /// The page's address, for a link in each message (`…/?q=<lead id>`); none: no link.
    pub page_url: Option<Url>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileNotify {
    /// `name=format:url,...`, as `HUNTER_NOTIFY_TARGETS`.
    pub(super) targets: Option<Secret>,
    pub(super) max_age_secs: Option<u64>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) max_attempts: Option<u32>,
    pub(super) retry_base_ms: Option<u64>,
    pub(super) retry_cap_ms: Option<u64>,
    pub(super) rate_per_minute: Option<u32>,
    pub(super) daily_at: Option<String>,
    pub(super) expiry_check_secs: Option<u64>,
    pub(super) page_url: Option<String>,
}

/// Parses `name=format:url,...`. The value is never quoted in an error (its URLs are secrets):
/// an error names the item by position or by target name.
pub fn parse_notify_targets(value: &str, setting: &str) -> Result<Vec<NotifyTarget>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        setting: setting.to_owned(),
        message,
    };
    let mut targets: Vec<NotifyTarget> = Vec::new();
    for (index, item) in value.split(',').enumerate() {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let position = index + 1;
        let (name, rest) = item.split_once('=').ok_or_else(|| {
            invalid(format!(
                "item {position} is not name=format:url (format json, teams or slack)"
            ))
        })?;
        let name = name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(invalid(format!(
                "item {position}: a target name is 1 to 64 letters, digits, '.', '_' or '-'"
            )));
        }
        let (format, url) = rest.split_once(':').ok_or_else(|| {
            invalid(format!(
                "target {name}: expected {name}=format:url (format json, teams or slack)"
            ))
        })?;
        let format = NotifyFormat::parse(format.trim()).ok_or_else(|| {
            invalid(format!(
                "target {name}: the format must be json, teams or slack"
            ))
        })?;
        let parsed = Url::parse(url.trim())
            .map_err(|error| invalid(format!("target {name}: the URL does not parse ({error})")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(invalid(format!(
                "target {name}: the URL must be an http or https URL with a host"
            )));
        }
        if targets.iter().any(|target| target.name == name) {
            return Err(invalid(format!("target {name} is named twice")));
        }
        targets.push(NotifyTarget {
            name: name.to_owned(),
            format,
            url: Secret::new(url.trim()),
        });
    }
    Ok(targets)
}

/// `HH:MM` (UTC) as minutes after midnight.
fn parse_time_of_day(value: &str, setting: &str) -> Result<u32, ConfigError> {
    let invalid = || ConfigError::Invalid {
        setting: setting.to_owned(),
        message: format!("{value:?} is not a time of day like 08:00 (UTC)"),
    };
    let (hours, minutes) = value.trim().split_once(':').ok_or_else(invalid)?;
    let hours: u32 = hours.parse().map_err(|_| invalid())?;
    let minutes: u32 = minutes.parse().map_err(|_| invalid())?;
    if hours > 23 || minutes > 59 {
        return Err(invalid());
    }
    Ok(hours * 60 + minutes)
}

/// Reads `[notify]` and its variables.
pub(super) fn notify_settings(
    src: &Source<'_>,
    notify: FileNotify,
) -> Result<NotifySettings, ConfigError> {
    let targets = match src
        .env
        .get("HUNTER_NOTIFY_TARGETS")
        .filter(|v| !v.trim().is_empty())
        .map(|v| (v.to_owned(), "HUNTER_NOTIFY_TARGETS"))
        .or_else(|| {
            notify
                .targets
                .map(|s| (s.expose().to_owned(), "notify.targets"))
        }) {
        Some((value, setting)) => parse_notify_targets(&value, setting)?,
        None => Vec::new(),
    };
    let at_least_one = |setting: &str, value: u64, unit: &str| {
        if value == 0 {
            Err(ConfigError::Invalid {
                setting: setting.to_owned(),
                message: format!("must be at least 1 ({unit})"),
            })
        } else {
            Ok(value)
        }
    };
    let max_age_secs = at_least_one(
        "HUNTER_NOTIFY_MAX_AGE_SECS",
        src.parse(
            "HUNTER_NOTIFY_MAX_AGE_SECS",
            notify.max_age_secs,
            "a whole number of seconds",
        )?
        .unwrap_or(Defaults::NOTIFY_MAX_AGE_SECS),
        "seconds",
    )?;
    let timeout_ms = at_least_one(
        "HUNTER_NOTIFY_TIMEOUT_MS",
        src.parse(
            "HUNTER_NOTIFY_TIMEOUT_MS",
            notify.timeout_ms,
            "a whole number of milliseconds",
        )?
        .unwrap_or(Defaults::NOTIFY_TIMEOUT_MS),
        "milliseconds",
    )?;
    let max_attempts = src
        .parse(
            "HUNTER_NOTIFY_MAX_ATTEMPTS",
            notify.max_attempts,
            "a whole number",
        )?
        .unwrap_or(Defaults::NOTIFY_MAX_ATTEMPTS);
    if !(1..=100).contains(&max_attempts) {
        return Err(ConfigError::Invalid {
            setting: "HUNTER_NOTIFY_MAX_ATTEMPTS".into(),
            message: "must be 1 to 100".into(),
        });
    }
    let retry_base_ms = at_least_one(
        "HUNTER_NOTIFY_RETRY_BASE_MS",
        src.parse(
            "HUNTER_NOTIFY_RETRY_BASE_MS",
            notify.retry_base_ms,
            "a whole number of milliseconds",
        )?
        .unwrap_or(Defaults::NOTIFY_RETRY_BASE_MS),
        "milliseconds",
    )?;
    let retry_cap_ms = src
        .parse(
            "HUNTER_NOTIFY_RETRY_CAP_MS",
            notify.retry_cap_ms,
            "a whole number of milliseconds",
        )?
        .unwrap_or(Defaults::NOTIFY_RETRY_CAP_MS);
    if retry_cap_ms < retry_base_ms {
        return Err(ConfigError::Invalid {
            setting: "HUNTER_NOTIFY_RETRY_CAP_MS".into(),
            message: format!(
                "must be at least HUNTER_NOTIFY_RETRY_BASE_MS ({retry_base_ms} milliseconds)"
            ),
        });
    }
    let rate_per_minute = src
        .parse(
            "HUNTER_NOTIFY_RATE_PER_MINUTE",
            notify.rate_per_minute,
            "a whole number",
        )?
        .unwrap_or(Defaults::NOTIFY_RATE_PER_MINUTE);
    if !(1..=6000).contains(&rate_per_minute) {
        return Err(ConfigError::Invalid {
            setting: "HUNTER_NOTIFY_RATE_PER_MINUTE".into(),
            message: "must be 1 to 6000 (deliveries per minute per target)".into(),
        });
    }
    let daily_at_minutes =
        match src.text("HUNTER_NOTIFY_DAILY_AT", notify.daily_at, "notify.daily_at") {
            Some((value, setting)) => parse_time_of_day(&value, &setting)?,
            None => parse_time_of_day(Defaults::NOTIFY_DAILY_AT, "HUNTER_NOTIFY_DAILY_AT")?,
        };
    let expiry_check_secs = at_least_one(
        "HUNTER_NOTIFY_EXPIRY_CHECK_SECS",
        src.parse(
            "HUNTER_NOTIFY_EXPIRY_CHECK_SECS",
            notify.expiry_check_secs,
            "a whole number of seconds",
        )?
        .unwrap_or(Defaults::NOTIFY_EXPIRY_CHECK_SECS),
        "seconds",
    )?;
    let page_url = match src.text("HUNTER_NOTIFY_PAGE_URL", notify.page_url, "notify.page_url") {
        Some((value, setting)) => Some(parse_url(&setting, &value)?),
        None => None,
    };
    Ok(NotifySettings {
        targets,
        max_age: Duration::from_secs(max_age_secs),
        timeout: Duration::from_millis(timeout_ms),
        max_attempts,
        retry_base: Duration::from_millis(retry_base_ms),
        retry_cap: Duration::from_millis(retry_cap_ms),
        rate_per_minute,
        daily_at_minutes,
        expiry_check_interval: Duration::from_secs(expiry_check_secs),
        page_url,
    })
}

#[cfg(test)]
mod notify_tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<NotifySettings, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        notify_settings(&Source { env: &env }, FileNotify::default())
    }

    #[test]
    fn targets_parse_with_their_format() {
        let parsed = settings(&[(
            "HUNTER_NOTIFY_TARGETS",
            "ops=json:https://hooks.example/a?sig=s3cret, team=teams:https://t.example/b,sales=slack:https://hooks.slack.example/T/B/X",
        )])
        .unwrap();
        let names: Vec<_> = parsed
            .targets
            .iter()
            .map(|t| (t.name.as_str(), t.format))
            .collect();
        assert_eq!(
            names,
            [
                ("ops", NotifyFormat::Json),
                ("team", NotifyFormat::Teams),
                ("sales", NotifyFormat::Slack)
            ]
        );
        assert_eq!(
            parsed.targets[0].url.expose(),
            "https://hooks.example/a?sig=s3cret"
        );
        // The URL is a secret: Debug never shows it.
        assert!(!format!("{parsed:?}").contains("s3cret"));
    }

    #[test]
    fn defaults_without_targets() {
        let parsed = settings(&[]).unwrap();
        assert!(parsed.targets.is_empty());
        assert_eq!(parsed.max_attempts, Defaults::NOTIFY_MAX_ATTEMPTS);
        assert_eq!(parsed.daily_at_minutes, 8 * 60);
    }

    #[test]
    fn bad_targets_name_the_setting_and_never_the_url() {
        for (value, wanted) in [
            ("ops", "item 1 is not name=format:url"),
            ("ops=xml:https://h.example/s3cret", "target ops: the format"),
            (
                "ops=json:ftp://h.example/s3cret",
                "target ops: the URL must be",
            ),
            (
                "ops=json:not a url s3cret",
                "target ops: the URL does not parse",
            ),
            (
                "ops=json:https://a.example/s3cret,ops=json:https://b.example/s3cret",
                "target ops is named twice",
            ),
            ("o p=json:https://a.example/s3cret", "item 1: a target name"),
        ] {
            let error = settings(&[("HUNTER_NOTIFY_TARGETS", value)])
                .unwrap_err()
                .to_string();
            assert!(error.contains("HUNTER_NOTIFY_TARGETS"), "{error}");
            assert!(error.contains(wanted), "{value}: {error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
    }

    #[test]
    fn bad_numbers_and_times_name_the_setting() {
        for (setting, value) in [
            ("HUNTER_NOTIFY_MAX_ATTEMPTS", "0"),
            ("HUNTER_NOTIFY_RATE_PER_MINUTE", "0"),
            ("HUNTER_NOTIFY_TIMEOUT_MS", "0"),
            ("HUNTER_NOTIFY_DAILY_AT", "25:00"),
            ("HUNTER_NOTIFY_DAILY_AT", "8"),
            ("HUNTER_NOTIFY_RETRY_CAP_MS", "1"),
            ("HUNTER_NOTIFY_PAGE_URL", "ftp://x"),
        ] {
            let error = settings(&[(setting, value)]).unwrap_err().to_string();
            assert!(error.contains(setting), "{setting}={value}: {error}");
        }
        assert_eq!(
            settings(&[("HUNTER_NOTIFY_DAILY_AT", "17:45")])
                .unwrap()
                .daily_at_minutes,
            17 * 60 + 45
        );
    }
}
