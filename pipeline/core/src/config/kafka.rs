//! `[kafka]`: the brokers, the topic prefix, the Schema Registry's URL, and the security block:
//! TLS, SASL and further librdkafka properties for every Kafka client.

use super::*;

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Prepended to every topic name (tests use it to isolate runs).
    pub topic_prefix: String,
    /// Confluent-compatible registry; `None` means single-object encoding.
    pub schema_registry_url: Option<Url>,
    /// TLS and SASL for every Kafka client (`HUNTER_KAFKA_SECURITY_PROTOCOL` and friends).
    pub security: KafkaSecurity,
    /// Further librdkafka properties from `[kafka.properties]`, checked at start.
    pub properties: KafkaProperties,
    /// `compression.type` of every producer (`HUNTER_KAFKA_COMPRESSION`).
    pub compression: KafkaCompression,
}

// ---- Producer compression (HUNTER_KAFKA_COMPRESSION) ------------------------------------------

/// The codec every Hunter producer compresses its batches with (`compression.type`).
///
/// The default is `none`, measured on tansu 0.6.0 (the local stack's broker, BENCHMARKS.md
/// "Compression"): tansu's sqlite storage decompresses every batch it is sent, stores each record
/// uncompressed, and compresses again with the same codec for every fetch, so compression only
/// costs it (and the producer) CPU and saves no disk. A broker that keeps batches as produced
/// (Apache Kafka, MSK, Confluent Cloud, Redpanda) saves disk and network with `lz4`; Azure Event
/// Hubs documents `gzip`. zstd is not compiled into Hunter's librdkafka, so it is refused here.
/// `"compression.type"` in `[kafka.properties]`, applied last, still overrides this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaCompression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
}

impl KafkaCompression {
    /// librdkafka's name of the codec.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaCompression::None => "none",
            KafkaCompression::Gzip => "gzip",
            KafkaCompression::Snappy => "snappy",
            KafkaCompression::Lz4 => "lz4",
        }
    }

    fn parse(setting: &str, value: &str) -> Result<Self, ConfigError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(KafkaCompression::None),
            "gzip" => Ok(KafkaCompression::Gzip),
            "snappy" => Ok(KafkaCompression::Snappy),
            "lz4" => Ok(KafkaCompression::Lz4),
            "zstd" => Err(ConfigError::Invalid {
                setting: setting.to_owned(),
                message:
                    "zstd is not compiled into Hunter's librdkafka: use none, gzip, snappy or lz4"
                        .into(),
            }),
            _ => Err(ConfigError::Invalid {
                setting: setting.to_owned(),
                message: format!("{value:?} is not a codec: use none, gzip, snappy or lz4"),
            }),
        }
    }
}

impl KafkaSettings {
    /// The topic names with the configured prefix.
    pub fn topics(&self) -> crate::kafka::Topics {
        crate::kafka::Topics::with_prefix(&self.topic_prefix)
    }
}
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileKafka {
    pub(super) brokers: Option<String>,
    pub(super) topic_prefix: Option<String>,
    pub(super) schema_registry_url: Option<String>,
    // Kafka security (see `KafkaSecurity`).
    pub(super) security_protocol: Option<String>,
    pub(super) sasl_mechanism: Option<String>,
    pub(super) sasl_username: Option<String>,
    pub(super) sasl_password: Option<Secret>,
    pub(super) sasl_oauthbearer_client_id: Option<String>,
    pub(super) sasl_oauthbearer_client_secret: Option<Secret>,
    pub(super) sasl_oauthbearer_token_endpoint_url: Option<String>,
    pub(super) sasl_oauthbearer_scope: Option<String>,
    pub(super) ssl_ca_location: Option<String>,
    pub(super) ssl_certificate_location: Option<String>,
    pub(super) ssl_key_location: Option<String>,
    pub(super) ssl_key_password: Option<Secret>,
    #[serde(default)]
    pub(super) properties: std::collections::BTreeMap<String, toml::Value>,
    pub(super) compression: Option<String>,
}

/// Reads `[kafka]` and its variables (the security block below included).
pub(super) fn kafka_settings(
    src: &Source<'_>,
    kafka: FileKafka,
) -> Result<KafkaSettings, ConfigError> {
    let (kafka_security, kafka_properties) = kafka_security(src, &kafka)?;
    let brokers = src
        .text("HUNTER_KAFKA_BROKERS", kafka.brokers, "kafka.brokers")
        .map(|(v, s)| (v.trim().to_owned(), s));
    let brokers = match brokers {
        None => Defaults::KAFKA_BROKERS.to_owned(),
        Some((value, setting)) => {
            if value.is_empty() || value.split(',').any(|b| !b.trim().contains(':')) {
                return Err(ConfigError::Invalid {
                    setting,
                    message: format!("{value:?} is not a host:port list"),
                });
            }
            value
        }
    };
    let topic_prefix = src
        .text(
            "HUNTER_KAFKA_TOPIC_PREFIX",
            kafka.topic_prefix,
            "kafka.topic_prefix",
        )
        .map(|(v, _)| v)
        .unwrap_or_default();
    if let Some(bad) = topic_prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ConfigError::Invalid {
            setting: "HUNTER_KAFKA_TOPIC_PREFIX".into(),
            message: format!(
                "{bad:?} is not allowed in a topic name (letters, digits, '.', '_', '-')"
            ),
        });
    }
    let schema_registry_url = match src.text(
        "HUNTER_SCHEMA_REGISTRY_URL",
        kafka.schema_registry_url,
        "kafka.schema_registry_url",
    ) {
        None => None,
        Some((value, setting)) => Some(parse_url(&setting, &value)?),
    };
    let compression = match src.text(
        "HUNTER_KAFKA_COMPRESSION",
        kafka.compression,
        "kafka.compression",
    ) {
        None => KafkaCompression::default(),
        Some((value, setting)) => KafkaCompression::parse(&setting, &value)?,
    };
    Ok(KafkaSettings {
        brokers,
        topic_prefix,
        schema_registry_url,
        security: kafka_security,
        properties: kafka_properties,
        compression,
    })
}

// ---- Kafka security: TLS, SASL and further librdkafka properties ----------------------------

/// `security.protocol`: how every Kafka client reaches the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaSecurityProtocol {
    /// No TLS, no authentication (the local stack).
    #[default]
    Plaintext,
    /// TLS, no SASL (optionally a client certificate).
    Ssl,
    /// SASL without TLS: the credentials cross the network unencrypted with PLAIN.
    SaslPlaintext,
    /// SASL over TLS: what hosted Kafka services require.
    SaslSsl,
}

impl KafkaSecurityProtocol {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaSecurityProtocol::Plaintext => "plaintext",
            KafkaSecurityProtocol::Ssl => "ssl",
            KafkaSecurityProtocol::SaslPlaintext => "sasl_plaintext",
            KafkaSecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
    pub fn uses_tls(self) -> bool {
        matches!(
            self,
            KafkaSecurityProtocol::Ssl | KafkaSecurityProtocol::SaslSsl
        )
    }
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            KafkaSecurityProtocol::SaslPlaintext | KafkaSecurityProtocol::SaslSsl
        )
    }
}

/// `sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// User name and password as they are (Azure Event Hubs: `$ConnectionString`).
    Plain,
    ScramSha256,
    /// Amazon MSK's SCRAM.
    ScramSha512,
    /// OAuth 2 client credentials, fetched and refreshed by librdkafka (`method=oidc`).
    OAuthBearer,
}

impl SaslMechanism {
    /// librdkafka's (and Kafka's) name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// The credentials SASL presents.
#[derive(Debug, Clone)]
pub enum KafkaSasl {
    /// PLAIN or SCRAM: `HUNTER_KAFKA_SASL_USERNAME` and `HUNTER_KAFKA_SASL_PASSWORD`.
    Password {
        mechanism: SaslMechanism,
        username: String,
        password: Secret,
    },
    /// OAUTHBEARER with librdkafka's OIDC client-credentials flow.
    OAuthBearer {
        client_id: String,
        client_secret: Secret,
        token_endpoint_url: Url,
        /// Space-separated scopes; `None` asks for the token endpoint's default.
        scope: Option<String>,
    },
}

impl KafkaSasl {
    pub fn mechanism(&self) -> SaslMechanism {
        match self {
            KafkaSasl::Password { mechanism, .. } => *mechanism,
            KafkaSasl::OAuthBearer { .. } => SaslMechanism::OAuthBearer,
        }
    }
}

/// TLS files; all optional (the system trust store verifies the broker without a CA file).
#[derive(Debug, Clone, Default)]
pub struct KafkaTls {
    /// PEM file (or directory) of the CA(s) that sign the brokers' certificates.
    pub ca_location: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that authenticate clients by certificate.
    pub certificate_location: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_location: Option<PathBuf>,
    /// Passphrase of an encrypted private key.
    pub key_password: Option<Secret>,
}

/// How every Kafka client (producers, consumers, admin, lag and metadata readers) connects.
/// Validated as a whole at start: a setting that the protocol would ignore is an error, not a
/// surprise.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    pub protocol: KafkaSecurityProtocol,
    /// `Some` exactly when the protocol uses SASL.
    pub sasl: Option<KafkaSasl>,
    /// Empty unless the protocol uses TLS.
    pub tls: KafkaTls,
}

/// Further librdkafka properties from the file's `[kafka.properties]` (the escape hatch Kafka
/// Connect users expect), already checked: librdkafka knows each one, and none overrides a
/// setting Hunter owns ([`crate::kafka::PROTECTED_PROPERTIES`]). Values are kept as secrets:
/// `Debug` and [`KafkaProperties::describe`] show only those whose name says nothing secret.
#[derive(Clone, Default)]
pub struct KafkaProperties(Vec<(String, Secret)>);

impl KafkaProperties {
    /// Name and value of each property, for the client configuration.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.expose()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `name=value, …` for the start-up log, secret values as `[redacted]`.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(name, value)| {
                if crate::kafka::is_secret_property(name) {
                    format!("{name}=[redacted]")
                } else {
                    format!("{name}={}", value.expose())
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KafkaProperties({})", self.describe())
    }
}

/// A secret setting: the environment variable if set (and not empty), else the file's value.
pub(super) fn secret_setting(
    env: &HashMap<String, String>,
    env_name: &str,
    file_value: Option<Secret>,
) -> Option<Secret> {
    env.get(env_name)
        .filter(|v| !v.is_empty())
        .map(|v| Secret::new(v.clone()))
        .or(file_value)
        .filter(|s| !s.expose().is_empty())
}

/// A TLS file setting: the file (or, for the CA, a directory or librdkafka's `probe`) must exist
/// and hold what its name says, so a typo fails here rather than as a handshake error later.
pub(super) fn tls_file(
    src: &Source<'_>,
    env_name: &str,
    file_value: Option<String>,
    file_name: &str,
    expect: &str,
) -> Result<Option<(PathBuf, String)>, ConfigError> {
    let Some((value, setting)) = src
        .text(env_name, file_value, file_name)
        .map(|(v, s)| (v.trim().to_owned(), s))
        .filter(|(v, _)| !v.is_empty())
    else {
        return Ok(None);
    };
    if env_name == "HUNTER_KAFKA_SSL_CA_LOCATION" && value == "probe" {
        return Ok(Some((PathBuf::from(value), setting)));
    }
    let path = PathBuf::from(&value);
    let metadata = std::fs::metadata(&path).map_err(|e| ConfigError::Invalid {
        setting: setting.clone(),
        message: format!("{value}: {e}"),
    })?;
    if metadata.is_dir() {
        if env_name == "HUNTER_KAFKA_SSL_CA_LOCATION" {
            return Ok(Some((path, setting)));
        }
        return Err(ConfigError::Invalid {
            setting,
            message: format!("{value} is a directory, not a PEM file"),
        });
    }
    let text = std::fs::read(&path).map_err(|e| ConfigError::Invalid {
        setting: setting.clone(),
        message: format!("{value} is not readable: {e}"),
    })?;
    if !String::from_utf8_lossy(&text).contains(expect) {
        return Err(ConfigError::Invalid {
            setting,
            message: format!("{value} holds no PEM \"{expect}\" block"),
        });
    }
    Ok(Some((path, setting)))
}

/// `HUNTER_KAFKA_SECURITY_PROTOCOL` and the settings that go with it, and `[kafka.properties]`.
pub(super) fn kafka_security(
    src: &Source<'_>,
    file: &FileKafka,
) -> Result<(KafkaSecurity, KafkaProperties), ConfigError> {
    let env = src.env;
    let protocol = match src.text(
        "HUNTER_KAFKA_SECURITY_PROTOCOL",
        file.security_protocol.clone(),
        "kafka.security_protocol",
    ) {
        None => KafkaSecurityProtocol::Plaintext,
        Some((value, setting)) => {
            match value.trim().to_ascii_lowercase().replace('-', "_").as_str() {
                "plaintext" => KafkaSecurityProtocol::Plaintext,
                "ssl" => KafkaSecurityProtocol::Ssl,
                "sasl_plaintext" => KafkaSecurityProtocol::SaslPlaintext,
                "sasl_ssl" => KafkaSecurityProtocol::SaslSsl,
                _ => {
                    return Err(ConfigError::Invalid {
                        setting,
                        message: format!(
                            "{value:?} is not plaintext, ssl, sasl_plaintext or sasl_ssl"
                        ),
                    });
                }
            }
        }
    };
    let mechanism = match src.text(
        "HUNTER_KAFKA_SASL_MECHANISM",
        file.sasl_mechanism.clone(),
        "kafka.sasl_mechanism",
    ) {
        None => None,
        Some((value, setting)) => {
            let mechanism = match value.trim().to_ascii_uppercase().replace('_', "-").as_str() {
                "PLAIN" => SaslMechanism::Plain,
                "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
                "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
                "OAUTHBEARER" => SaslMechanism::OAuthBearer,
                _ => {
                    return Err(ConfigError::Invalid {
                        setting,
                        message: format!(
                            "{value:?} is not PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"
                        ),
                    });
                }
            };
            Some((mechanism, setting))
        }
    };
    let text = |env_name: &str, value: &Option<String>, file_name: &str| {
        src.text(env_name, value.clone(), file_name)
            .map(|(v, s)| (v.trim().to_owned(), s))
            .filter(|(v, _)| !v.is_empty())
    };
    let username = text(
        "HUNTER_KAFKA_SASL_USERNAME",
        &file.sasl_username,
        "kafka.sasl_username",
    );
    let password = secret_setting(
        env,
        "HUNTER_KAFKA_SASL_PASSWORD",
        file.sasl_password.clone(),
    );
    let client_id = text(
        "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
        &file.sasl_oauthbearer_client_id,
        "kafka.sasl_oauthbearer_client_id",
    );
    let client_secret = secret_setting(
        env,
        "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
        file.sasl_oauthbearer_client_secret.clone(),
    );
    let token_endpoint_url = text(
        "HUNTER_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
        &file.sasl_oauthbearer_token_endpoint_url,
        "kafka.sasl_oauthbearer_token_endpoint_url",
    );
    let scope = text(
        "HUNTER_KAFKA_SASL_OAUTHBEARER_SCOPE",
        &file.sasl_oauthbearer_scope,
        "kafka.sasl_oauthbearer_scope",
    );

    // Settings the chosen protocol or mechanism would silently ignore are mistakes.
    let given = |present: bool, name: &str| present.then(|| name.to_owned());
    let password_settings = [
        given(username.is_some(), "HUNTER_KAFKA_SASL_USERNAME"),
        given(password.is_some(), "HUNTER_KAFKA_SASL_PASSWORD"),
    ];
    let oauth_settings = [
        given(
            client_id.is_some(),
            "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
        ),
        given(
            client_secret.is_some(),
            "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
        ),
        given(
            token_endpoint_url.is_some(),
            "HUNTER_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
        ),
        given(scope.is_some(), "HUNTER_KAFKA_SASL_OAUTHBEARER_SCOPE"),
    ];
    let sasl = if !protocol.uses_sasl() {
        let stray = mechanism
            .as_ref()
            .map(|(_, setting)| setting.clone())
            .into_iter()
            .chain(password_settings.iter().flatten().cloned())
            .chain(oauth_settings.iter().flatten().cloned())
            .next();
        if let Some(setting) = stray {
            return Err(ConfigError::Invalid {
                setting,
                message: format!(
                    "is set but HUNTER_KAFKA_SECURITY_PROTOCOL is {}, which does not authenticate: use sasl_ssl (or sasl_plaintext)",
                    protocol.as_str()
                ),
            });
        }
        None
    } else {
        let Some((mechanism, _)) = mechanism else {
            return Err(ConfigError::Missing {
                setting: "HUNTER_KAFKA_SASL_MECHANISM".into(),
                message: format!(
                    "security protocol {} authenticates with SASL: set PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER",
                    protocol.as_str()
                ),
            });
        };
        if mechanism == SaslMechanism::OAuthBearer {
            if let Some(setting) = password_settings.iter().flatten().next() {
                return Err(ConfigError::Invalid {
                    setting: setting.clone(),
                    message: "is not used with OAUTHBEARER (the OAuth client id and secret are)"
                        .into(),
                });
            }
            let missing = |name: &str, what: &str| ConfigError::Missing {
                setting: name.into(),
                message: format!("OAUTHBEARER needs {what}"),
            };
            let (client_id, _) = client_id.ok_or_else(|| {
                missing(
                    "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
                    "the OAuth client id",
                )
            })?;
            let client_secret = client_secret.ok_or_else(|| {
                missing(
                    "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
                    "the OAuth client secret",
                )
            })?;
            let (url, setting) = token_endpoint_url.ok_or_else(|| {
                missing(
                    "HUNTER_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
                    "the token endpoint URL (e.g. https://login.microsoftonline.com/TENANT/oauth2/v2.0/token)",
                )
            })?;
            Some(KafkaSasl::OAuthBearer {
                client_id,
                client_secret,
                token_endpoint_url: parse_url(&setting, &url)?,
                scope: scope.map(|(scope, _)| scope),
            })
        } else {
            if let Some(setting) = oauth_settings.iter().flatten().next() {
                return Err(ConfigError::Invalid {
                    setting: setting.clone(),
                    message: format!("is only used with OAUTHBEARER, not {}", mechanism.as_str()),
                });
            }
            let (username, _) = username.ok_or_else(|| ConfigError::Missing {
                setting: "HUNTER_KAFKA_SASL_USERNAME".into(),
                message: format!("SASL {} needs a user name", mechanism.as_str()),
            })?;
            let password = password.ok_or_else(|| ConfigError::Missing {
                setting: "HUNTER_KAFKA_SASL_PASSWORD".into(),
                message: format!("SASL {} needs a password", mechanism.as_str()),
            })?;
            Some(KafkaSasl::Password {
                mechanism,
                username,
                password,
            })
        }
    };

    let ca = tls_file(
        src,
        "HUNTER_KAFKA_SSL_CA_LOCATION",
        file.ssl_ca_location.clone(),
        "kafka.ssl_ca_location",
        "-----BEGIN CERTIFICATE-----",
    )?;
    let certificate = tls_file(
        src,
        "HUNTER_KAFKA_SSL_CERTIFICATE_LOCATION",
        file.ssl_certificate_location.clone(),
        "kafka.ssl_certificate_location",
        "-----BEGIN CERTIFICATE-----",
    )?;
    let key = tls_file(
        src,
        "HUNTER_KAFKA_SSL_KEY_LOCATION",
        file.ssl_key_location.clone(),
        "kafka.ssl_key_location",
        "PRIVATE KEY-----",
    )?;
    let key_password = secret_setting(
        env,
        "HUNTER_KAFKA_SSL_KEY_PASSWORD",
        file.ssl_key_password.clone(),
    );
    let tls_settings = [
        ca.as_ref().map(|(_, s)| s.clone()),
        certificate.as_ref().map(|(_, s)| s.clone()),
        key.as_ref().map(|(_, s)| s.clone()),
        given(key_password.is_some(), "HUNTER_KAFKA_SSL_KEY_PASSWORD"),
    ];
    if !protocol.uses_tls()
        && let Some(setting) = tls_settings.iter().flatten().next()
    {
        return Err(ConfigError::Invalid {
            setting: setting.clone(),
            message: format!(
                "is set but HUNTER_KAFKA_SECURITY_PROTOCOL is {}, which does not use TLS: use ssl or sasl_ssl",
                protocol.as_str()
            ),
        });
    }
    match (&certificate, &key) {
        (Some(_), None) => {
            return Err(ConfigError::Missing {
                setting: "HUNTER_KAFKA_SSL_KEY_LOCATION".into(),
                message: "a client certificate needs its private key".into(),
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::Missing {
                setting: "HUNTER_KAFKA_SSL_CERTIFICATE_LOCATION".into(),
                message: "a private key needs its client certificate".into(),
            });
        }
        _ => {}
    }
    if key_password.is_some() && key.is_none() {
        return Err(ConfigError::Invalid {
            setting: "HUNTER_KAFKA_SSL_KEY_PASSWORD".into(),
            message: "is set without HUNTER_KAFKA_SSL_KEY_LOCATION".into(),
        });
    }
    let security = KafkaSecurity {
        protocol,
        sasl,
        tls: KafkaTls {
            ca_location: ca.map(|(path, _)| path),
            certificate_location: certificate.map(|(path, _)| path),
            key_location: key.map(|(path, _)| path),
            key_password,
        },
    };
    Ok((security, kafka_properties(&file.properties)?))
}

/// `[kafka.properties]`: any librdkafka property but the ones Hunter owns, each checked by
/// librdkafka itself. An error names the property and never shows its value (it may be secret).
pub(super) fn kafka_properties(
    file: &std::collections::BTreeMap<String, toml::Value>,
) -> Result<KafkaProperties, ConfigError> {
    let mut properties = Vec::new();
    for (name, value) in file {
        let name = name.trim();
        let setting = format!("kafka.properties.{name:?}");
        let value = match value {
            toml::Value::String(text) => text.clone(),
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Float(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            _ => {
                return Err(ConfigError::Invalid {
                    setting,
                    message: "must be a string, a number or true/false".into(),
                });
            }
        };
        if let Some((_, instead)) = crate::kafka::PROTECTED_PROPERTIES
            .iter()
            .find(|(protected, _)| protected.eq_ignore_ascii_case(name))
        {
            return Err(ConfigError::Invalid {
                setting,
                message: format!(
                    "Hunter sets this property itself and it cannot be overridden here: {instead}"
                ),
            });
        }
        let mut probe = rdkafka::ClientConfig::new();
        probe.set(name, &value);
        if let Err(error) = probe.create_native_config() {
            let reason = match error {
                rdkafka::error::KafkaError::ClientConfig(_, description, _, _) => description,
                _ => "librdkafka refused it".to_owned(),
            };
            return Err(ConfigError::Invalid {
                setting,
                message: format!("librdkafka refused it: {reason}"),
            });
        }
        properties.push((name.to_owned(), Secret::new(value)));
    }
    Ok(KafkaProperties(properties))
}
