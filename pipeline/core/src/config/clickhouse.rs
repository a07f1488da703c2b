//! `[clickhouse]`: the server, the database, the writer and the API's reader, TLS trust.

use super::*;

#[derive(Debug, Clone)]
pub struct ClickHouseSettings {
    /// The HTTP interface (`http://` or `https://`).
    pub url: Url,
    /// Created by `hunter migrate`.
    pub database: String,
    /// The writer (`hunter migrate`, the sink): `HUNTER_CLICKHOUSE_USER`; `None` is ClickHouse's
    /// `default` user.
    pub user: Option<String>,
    /// The writer's password (`HUNTER_CLICKHOUSE_PASSWORD`).
    pub password: Option<Secret>,
    // --- ClickHouse users and TLS (docs/clickhouse.md) ---
    /// The API's read-only user (`HUNTER_CLICKHOUSE_READER_USER`); `None`: the API reads as the
    /// writer, with a warning at start (deployments from before the split keep working).
    pub reader_user: Option<String>,
    /// The reader's password (`HUNTER_CLICKHOUSE_READER_PASSWORD`).
    pub reader_password: Option<Secret>,
    /// A PEM file of CA certificates trusted for an `https://` URL besides the system's
    /// (`HUNTER_CLICKHOUSE_CA_LOCATION`), for a server whose certificate a private CA signed.
    pub ca_location: Option<PathBuf>,
    /// `max_rows_to_read` of every API query (`HUNTER_CLICKHOUSE_READER_MAX_ROWS_TO_READ`);
    /// 0 leaves the reader's profile value.
    pub reader_max_rows_to_read: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileClickHouse {
    pub(super) url: Option<String>,
    pub(super) database: Option<String>,
    pub(super) user: Option<String>,
    pub(super) password: Option<Secret>,
    pub(super) reader_user: Option<String>,
    pub(super) reader_password: Option<Secret>,
    pub(super) ca_location: Option<PathBuf>,
    pub(super) reader_max_rows_to_read: Option<u64>,
}

/// Reads `[clickhouse]` and its variables.
pub(super) fn clickhouse_settings(
    src: &Source<'_>,
    clickhouse: FileClickHouse,
) -> Result<ClickHouseSettings, ConfigError> {
    let env = src.env;
    let clickhouse_url = match src.text("HUNTER_CLICKHOUSE_URL", clickhouse.url, "clickhouse.url") {
        None => Url::parse(Defaults::CLICKHOUSE_URL).expect("default is a URL"),
        Some((value, setting)) => parse_url(&setting, &value)?,
    };
    let database = src
        .text(
            "HUNTER_CLICKHOUSE_DATABASE",
            clickhouse.database,
            "clickhouse.database",
        )
        .map(|(v, s)| (v.trim().to_owned(), s))
        .unwrap_or_else(|| (Defaults::CLICKHOUSE_DATABASE.to_owned(), String::new()));
    if database.0.is_empty()
        || !database
            .0
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        || database.0.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(ConfigError::Invalid {
            setting: if database.1.is_empty() {
                "HUNTER_CLICKHOUSE_DATABASE".into()
            } else {
                database.1
            },
            message: format!(
                "{:?} is not a plain identifier (letters, digits, '_')",
                database.0
            ),
        });
    }
    let clickhouse_extras = ClickHouseExtras {
        reader_user: clickhouse.reader_user,
        reader_password: clickhouse.reader_password,
        ca_location: clickhouse.ca_location,
        reader_max_rows_to_read: clickhouse.reader_max_rows_to_read,
    };
    let clickhouse = ClickHouseSettings {
        url: clickhouse_url,
        database: database.0,
        user: src
            .text("HUNTER_CLICKHOUSE_USER", clickhouse.user, "clickhouse.user")
            .map(|(v, _)| v),
        password: match env
            .get("HUNTER_CLICKHOUSE_PASSWORD")
            .filter(|v| !v.is_empty())
        {
            Some(value) => Some(Secret::new(value.clone())),
            None => clickhouse.password,
        },
        reader_user: None,
        reader_password: None,
        ca_location: None,
        reader_max_rows_to_read: Defaults::CLICKHOUSE_READER_MAX_ROWS_TO_READ,
    };
    let clickhouse = clickhouse_users_and_tls(src, clickhouse, clickhouse_extras)?;
    Ok(clickhouse)
}

/// The ClickHouse settings of the file that `clickhouse_users_and_tls` reads.
pub(super) struct ClickHouseExtras {
    pub(super) reader_user: Option<String>,
    pub(super) reader_password: Option<Secret>,
    pub(super) ca_location: Option<PathBuf>,
    pub(super) reader_max_rows_to_read: Option<u64>,
}

/// The API's reader, the CA file and the reader's limits (docs/clickhouse.md). A reader password
/// without a reader user is refused (it would silently be the writer's); the CA file must hold
/// at least one PEM certificate, checked here so a typo fails at start with the setting named.
pub(super) fn clickhouse_users_and_tls(
    src: &Source<'_>,
    mut clickhouse: ClickHouseSettings,
    file: ClickHouseExtras,
) -> Result<ClickHouseSettings, ConfigError> {
    clickhouse.reader_user = src
        .text(
            "HUNTER_CLICKHOUSE_READER_USER",
            file.reader_user,
            "clickhouse.reader_user",
        )
        .map(|(value, _)| value.trim().to_owned())
        .filter(|value| !value.is_empty());
    clickhouse.reader_password = match src
        .env
        .get("HUNTER_CLICKHOUSE_READER_PASSWORD")
        .filter(|v| !v.is_empty())
    {
        Some(value) => Some(Secret::new(value.clone())),
        None => file.reader_password,
    };
    if clickhouse.reader_password.is_some() && clickhouse.reader_user.is_none() {
        return Err(ConfigError::Missing {
            setting: "HUNTER_CLICKHOUSE_READER_USER".into(),
            message: "the reader's password (HUNTER_CLICKHOUSE_READER_PASSWORD) is set, \
                      not the user it belongs to"
                .into(),
        });
    }
    if let Some((value, setting)) = src.text(
        "HUNTER_CLICKHOUSE_CA_LOCATION",
        file.ca_location.map(|p| p.display().to_string()),
        "clickhouse.ca_location",
    ) {
        let path = PathBuf::from(value.trim());
        let text = std::fs::read(&path).map_err(|error| ConfigError::Invalid {
            setting: setting.clone(),
            message: format!("cannot read {}: {error}", path.display()),
        })?;
        if !String::from_utf8_lossy(&text).contains("-----BEGIN CERTIFICATE-----") {
            return Err(ConfigError::Invalid {
                setting,
                message: format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                ),
            });
        }
        clickhouse.ca_location = Some(path);
    }
    clickhouse.reader_max_rows_to_read = src
        .parse(
            "HUNTER_CLICKHOUSE_READER_MAX_ROWS_TO_READ",
            file.reader_max_rows_to_read,
            "a whole number of rows (0: the reader's profile decides)",
        )?
        .unwrap_or(Defaults::CLICKHOUSE_READER_MAX_ROWS_TO_READ);
    Ok(clickhouse)
}
