//! Settings: defaults, precedence, and every bad value naming its setting.

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn base() -> Vec<(&'static str, &'static str)> {
    vec![
        ("HUNTER_PARTNER_CENTER_TENANT_ID", "contoso.onmicrosoft.com"),
        ("HUNTER_PARTNER_CENTER_CLIENT_ID", "client-1"),
        ("HOME", "/home/op"),
    ]
}

fn error_for(extra: &[(&str, &str)]) -> String {
    let mut pairs = base();
    pairs.extend_from_slice(extra);
    Settings::from_sources(None, &env(&pairs))
        .unwrap_err()
        .to_string()
}

#[test]
fn defaults_apply() {
    let settings = Settings::from_sources(None, &env(&base())).unwrap();
    assert_eq!(settings.sync.interval, Duration::from_secs(600));
    assert_eq!(
        settings.sync.full_sweep_interval,
        Some(Duration::from_secs(86_400))
    );
    let tenant = settings.partner_center.tenant(None).unwrap();
    assert_eq!(tenant.name, "contoso.onmicrosoft.com");
    assert_eq!(
        tenant.token_cache,
        PathBuf::from("/home/op/.local/state/hunter/token-cache.json")
    );
    assert_eq!(settings.partner_center.api_url.as_str(), Defaults::API_URL);
    assert!(settings.partner_center.enabled);
    assert_eq!(settings.clickhouse.database, "hunter");
    let mut dev = base();
    dev.push(("HUNTER_ENVIRONMENT", "development"));
    assert_eq!(
        Settings::from_sources(None, &env(&dev))
            .unwrap()
            .sync
            .interval,
        Duration::from_secs(30)
    );
}

#[test]
fn enrich_defaults_are_one_set() {
    // `EnrichSettings::default` (the enricher's, for tools and tests) is what an empty
    // configuration gives, so the two cannot drift apart again.
    let loaded = Settings::from_sources(None, &env(&base())).unwrap().enrich;
    let default = EnrichSettings::default();
    assert_eq!(loaded.dns_server, default.dns_server);
    assert_eq!(loaded.dns_timeout, default.dns_timeout);
    assert_eq!(loaded.mx_cache_ttl, default.mx_cache_ttl);
    assert_eq!(loaded.usd_rates, default.usd_rates);
    assert_eq!(default.dns_timeout, Duration::from_millis(500));
    assert_eq!(default.mx_cache_ttl, Duration::from_secs(3_600));
}

#[test]
fn bad_values_name_the_setting() {
    assert!(
        error_for(&[("HUNTER_SYNC_INTERVAL_SECS", "soon")]).contains("HUNTER_SYNC_INTERVAL_SECS")
    );
    assert!(
        error_for(&[("HUNTER_PARTNER_CENTER_ENABLED", "maybe")])
            .contains("HUNTER_PARTNER_CENTER_ENABLED")
    );
    assert!(
        error_for(&[("HUNTER_PARTNER_CENTER_API_URL", "not a url")])
            .contains("HUNTER_PARTNER_CENTER_API_URL")
    );
    assert!(error_for(&[("HUNTER_API_LISTEN", "localhost")]).contains("HUNTER_API_LISTEN"));
    assert!(error_for(&[("HUNTER_KAFKA_BROKERS", "nohost")]).contains("HUNTER_KAFKA_BROKERS"));
    assert!(
        error_for(&[("HUNTER_KAFKA_TOPIC_PREFIX", "a b")]).contains("HUNTER_KAFKA_TOPIC_PREFIX")
    );
    assert!(
        error_for(&[("HUNTER_CLICKHOUSE_DATABASE", "x;drop")])
            .contains("HUNTER_CLICKHOUSE_DATABASE")
    );
    assert!(
        error_for(&[("HUNTER_ENRICH_USD_RATES", "EUR:1.1")]).contains("HUNTER_ENRICH_USD_RATES")
    );
    assert!(error_for(&[("HUNTER_ENRICH_DNS_SERVER", "dns")]).contains("HUNTER_ENRICH_DNS_SERVER"));
    let missing = Settings::from_sources(None, &env(&[("HUNTER_PARTNER_CENTER_CLIENT_ID", "c")]))
        .unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("HUNTER_PARTNER_CENTER_TENANT_ID"),
        "{missing}"
    );
}

#[test]
fn several_tenants_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hunter.toml");
    std::fs::write(
            &path,
            "[partner_center]\nclient_id = \"shared-client\"\n\n[[partner_center.tenants]]\nname = \"contoso\"\ntenant_id = \"contoso.example\"\n\n[[partner_center.tenants]]\nname = \"fabrikam\"\ntenant_id = \"fabrikam.example\"\nclient_id = \"own-client\"\ntoken_cache = \"/tmp/fabrikam.json\"\n",
        )
        .unwrap();
    let settings = Settings::from_sources(
        Some(&path),
        &env(&[("HUNTER_TOKEN_CACHE", "/var/lib/hunter/cache.json")]),
    )
    .unwrap();
    let pc = &settings.partner_center;
    assert_eq!(pc.tenants.len(), 2);
    let contoso = pc.tenant(Some("contoso")).unwrap();
    assert_eq!(contoso.client_id, "shared-client");
    assert_eq!(
        contoso.token_cache,
        PathBuf::from("/var/lib/hunter/cache-contoso.json")
    );
    assert_eq!(pc.tenant(Some("fabrikam")).unwrap().client_id, "own-client");
    assert!(
        pc.tenant(None)
            .unwrap_err()
            .to_string()
            .contains("several tenants")
    );
    assert!(
        pc.tenant(Some("nope"))
            .unwrap_err()
            .to_string()
            .contains("contoso, fabrikam")
    );

    std::fs::write(
        &path,
        "[[partner_center.tenants]]\nname = \"a b\"\ntenant_id = \"t\"\nclient_id = \"c\"\n",
    )
    .unwrap();
    let error = Settings::from_sources(Some(&path), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("partner_center.tenants[0].name"), "{error}");
}

#[test]
fn a_disabled_source_needs_no_credentials() {
    let settings =
        Settings::from_sources(None, &env(&[("HUNTER_PARTNER_CENTER_ENABLED", "false")])).unwrap();
    assert!(!settings.partner_center.enabled);
}

#[test]
fn file_values_and_env_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hunter.toml");
    std::fs::write(
            &path,
            "[partner_center]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s3cr3t-value\"\n[sync]\ninterval_secs = 45\n",
        )
        .unwrap();
    let settings = Settings::from_sources(Some(&path), &env(&[("HOME", "/h")])).unwrap();
    assert_eq!(settings.sync.interval, Duration::from_secs(45));
    let overridden = Settings::from_sources(
        Some(&path),
        &env(&[("HUNTER_SYNC_INTERVAL_SECS", "7"), ("HOME", "/h")]),
    )
    .unwrap();
    assert_eq!(overridden.sync.interval, Duration::from_secs(7));
    assert!(
        !format!("{settings:?}").contains("s3cr3t-value"),
        "secrets never reach Debug output"
    );

    std::fs::write(&path, "[sync]\nintervall_secs = 45\n").unwrap();
    let error = Settings::from_sources(Some(&path), &env(&base()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("intervall_secs"), "{error}");
}

// ---- Kafka security ----------------------------------------------------------------------

#[test]
fn kafka_security_combinations_fail_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let not_pem = dir.path().join("ca.txt");
    std::fs::write(&not_pem, "hello").unwrap();
    let ca = ca.display().to_string();
    let not_pem = not_pem.display().to_string();
    let missing_file = dir.path().join("nope.pem").display().to_string();
    let sasl_ssl = ("HUNTER_KAFKA_SECURITY_PROTOCOL", "sasl_ssl");
    let scram = ("HUNTER_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512");
    let user = ("HUNTER_KAFKA_SASL_USERNAME", "hunter");
    let password = ("HUNTER_KAFKA_SASL_PASSWORD", "pw-SENTINEL-123");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("HUNTER_KAFKA_SECURITY_PROTOCOL", "tls")],
            "HUNTER_KAFKA_SECURITY_PROTOCOL",
        ),
        (vec![sasl_ssl], "HUNTER_KAFKA_SASL_MECHANISM"),
        (
            vec![sasl_ssl, ("HUNTER_KAFKA_SASL_MECHANISM", "GSSAPI")],
            "HUNTER_KAFKA_SASL_MECHANISM",
        ),
        (vec![sasl_ssl, scram], "HUNTER_KAFKA_SASL_USERNAME"),
        (vec![sasl_ssl, scram, user], "HUNTER_KAFKA_SASL_PASSWORD"),
        // Settings the protocol would ignore.
        (vec![scram, user, password], "HUNTER_KAFKA_SASL_MECHANISM"),
        (vec![password], "HUNTER_KAFKA_SASL_PASSWORD"),
        (
            vec![("HUNTER_KAFKA_SSL_CA_LOCATION", ca.as_str())],
            "HUNTER_KAFKA_SSL_CA_LOCATION",
        ),
        (
            vec![
                ("HUNTER_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
                scram,
                user,
                password,
                ("HUNTER_KAFKA_SSL_CA_LOCATION", ca.as_str()),
            ],
            "HUNTER_KAFKA_SSL_CA_LOCATION",
        ),
        // TLS files that are not there or not what they should be.
        (
            vec![
                sasl_ssl,
                scram,
                user,
                password,
                ("HUNTER_KAFKA_SSL_CA_LOCATION", missing_file.as_str()),
            ],
            "HUNTER_KAFKA_SSL_CA_LOCATION",
        ),
        (
            vec![
                ("HUNTER_KAFKA_SECURITY_PROTOCOL", "ssl"),
                ("HUNTER_KAFKA_SSL_CA_LOCATION", not_pem.as_str()),
            ],
            "HUNTER_KAFKA_SSL_CA_LOCATION",
        ),
        (
            vec![
                ("HUNTER_KAFKA_SECURITY_PROTOCOL", "ssl"),
                ("HUNTER_KAFKA_SSL_CERTIFICATE_LOCATION", ca.as_str()),
            ],
            "HUNTER_KAFKA_SSL_KEY_LOCATION",
        ),
        (
            vec![
                ("HUNTER_KAFKA_SECURITY_PROTOCOL", "ssl"),
                ("HUNTER_KAFKA_SSL_KEY_PASSWORD", "k"),
            ],
            "HUNTER_KAFKA_SSL_KEY_PASSWORD",
        ),
        // OAUTHBEARER takes the OAuth client, not a password.
        (
            vec![sasl_ssl, ("HUNTER_KAFKA_SASL_MECHANISM", "OAUTHBEARER")],
            "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
        ),
        (
            vec![
                sasl_ssl,
                ("HUNTER_KAFKA_SASL_MECHANISM", "OAUTHBEARER"),
                ("HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_ID", "app"),
                ("HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", "s"),
            ],
            "HUNTER_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
        ),
        (
            vec![
                sasl_ssl,
                ("HUNTER_KAFKA_SASL_MECHANISM", "OAUTHBEARER"),
                user,
            ],
            "HUNTER_KAFKA_SASL_USERNAME",
        ),
        (
            vec![
                sasl_ssl,
                scram,
                user,
                password,
                ("HUNTER_KAFKA_SASL_OAUTHBEARER_SCOPE", "x"),
            ],
            "HUNTER_KAFKA_SASL_OAUTHBEARER_SCOPE",
        ),
    ];
    for (pairs, setting) in cases {
        let error = error_for(&pairs);
        assert!(error.contains(setting), "{pairs:?}: {error}");
        assert!(!error.contains("pw-SENTINEL"), "{error}");
    }

    // A whole SASL_SSL configuration, and an OAUTHBEARER one.
    let mut pairs = base();
    pairs.extend_from_slice(&[
        sasl_ssl,
        ("HUNTER_KAFKA_SASL_MECHANISM", "scram-sha-512"),
        user,
        password,
        ("HUNTER_KAFKA_SSL_CA_LOCATION", ca.as_str()),
    ]);
    let settings = Settings::from_sources(None, &env(&pairs)).unwrap();
    let security = &settings.kafka.security;
    assert_eq!(security.protocol, KafkaSecurityProtocol::SaslSsl);
    assert!(matches!(
        &security.sasl,
        Some(KafkaSasl::Password { mechanism: SaslMechanism::ScramSha512, username, password })
            if username == "hunter" && password.expose() == "pw-SENTINEL-123"
    ));
    assert_eq!(security.tls.ca_location.as_deref(), Some(Path::new(&ca)));
    assert!(!format!("{settings:?}").contains("pw-SENTINEL"));
    let mut pairs = base();
    pairs.extend_from_slice(&[
        sasl_ssl,
        ("HUNTER_KAFKA_SASL_MECHANISM", "OAUTHBEARER"),
        ("HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_ID", "app"),
        (
            "HUNTER_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
            "oauth-SENTINEL",
        ),
        (
            "HUNTER_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
            "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        ),
        (
            "HUNTER_KAFKA_SASL_OAUTHBEARER_SCOPE",
            "https://ns.servicebus.windows.net/.default",
        ),
    ]);
    let settings = Settings::from_sources(None, &env(&pairs)).unwrap();
    assert_eq!(
        settings
            .kafka
            .security
            .sasl
            .as_ref()
            .map(KafkaSasl::mechanism),
        Some(SaslMechanism::OAuthBearer)
    );
    assert!(!format!("{settings:?}").contains("oauth-SENTINEL"));
    // Plaintext stays the default.
    let plain = Settings::from_sources(None, &env(&base())).unwrap();
    assert_eq!(
        plain.kafka.security.protocol,
        KafkaSecurityProtocol::Plaintext
    );
    assert!(plain.kafka.security.sasl.is_none());
}

#[test]
fn kafka_properties_tune_but_never_override_what_hunter_owns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hunter.toml");
    let load = |text: &str| {
        std::fs::write(&path, text).unwrap();
        Settings::from_sources(Some(&path), &env(&base()))
    };
    let settings = load(
            "[kafka]\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"$ConnectionString\"\nsasl_password = \"Endpoint=sb://x/;SharedAccessKey=file-SENTINEL\"\n\n[kafka.properties]\n\"linger.ms\" = 20\n\"ssl.endpoint.identification.algorithm\" = \"https\"\n\"socket.keepalive.enable\" = true\n\"ssl.keystore.password\" = \"ks-SENTINEL\"\n",
        )
        .unwrap();
    let properties: Vec<(&str, &str)> = settings.kafka.properties.iter().collect();
    assert!(properties.contains(&("linger.ms", "20")), "{properties:?}");
    assert!(properties.contains(&("socket.keepalive.enable", "true")));
    let described = settings.kafka.properties.describe();
    assert!(described.contains("linger.ms=20"), "{described}");
    assert!(
        described.contains("ssl.keystore.password=[redacted]"),
        "{described}"
    );
    let debug = format!("{settings:?}");
    assert!(!debug.contains("SENTINEL"), "{debug}");
    assert!(matches!(
        &settings.kafka.security.sasl,
        Some(KafkaSasl::Password { mechanism: SaslMechanism::Plain, username, .. }) if username == "$ConnectionString"
    ));

    for (property, words) in [
        ("acks", "cannot be overridden"),
        ("enable.idempotence", "idempotent"),
        ("enable.auto.offset.store", "cannot be overridden"),
        ("isolation.level", "cannot be overridden"),
        ("sasl.password", "HUNTER_KAFKA_SASL_PASSWORD"),
        ("Security.Protocol", "HUNTER_KAFKA_SECURITY_PROTOCOL"),
    ] {
        let error = load(&format!(
            "[kafka.properties]\n\"{property}\" = \"value-SENTINEL\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(&format!("kafka.properties.\"{property}\"")) && error.contains(words),
            "{error}"
        );
        assert!(!error.contains("value-SENTINEL"), "{error}");
    }
    let unknown = load("[kafka.properties]\n\"lingr.ms\" = \"secret-SENTINEL\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("kafka.properties.\"lingr.ms\""),
        "{unknown}"
    );
    assert!(!unknown.contains("secret-SENTINEL"), "{unknown}");
    let invalid = load("[kafka.properties]\n\"linger.ms\" = \"soon-SENTINEL\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        invalid.contains("kafka.properties.\"linger.ms\""),
        "{invalid}"
    );
    assert!(!invalid.contains("soon-SENTINEL"), "{invalid}");
    let table = load("[kafka.properties.\"linger.ms\"]\nx = 1\n")
        .unwrap_err()
        .to_string();
    assert!(table.contains("kafka.properties.\"linger.ms\""), "{table}");
}

#[test]
fn env_vars_lists_every_variable_read() {
    // Every file of the module that reads settings (not the list itself, nor these tests),
    // each split on its own so one file's quotes cannot shift another's.
    let files = [
        include_str!("mod.rs"),
        include_str!("partner_center.rs"),
        include_str!("kafka.rs"),
        include_str!("registry.rs"),
        include_str!("clickhouse.rs"),
        include_str!("security.rs"),
        include_str!("api.rs"),
        include_str!("sync.rs"),
        include_str!("sink.rs"),
        include_str!("enrich.rs"),
        include_str!("notify.rs"),
        include_str!("pc_webhooks.rs"),
    ];
    // A new section file must join the list above.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let on_disk = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name != "tests.rs" && name != "vars.rs"
        })
        .count();
    assert_eq!(
        on_disk,
        files.len(),
        "a file of {} is not scanned here",
        dir.display()
    );
    let read: std::collections::BTreeSet<&str> = files
        .iter()
        .flat_map(|code| code.split('"').skip(1).step_by(2))
        .filter(|s| s.starts_with("HUNTER_") && s.len() > "HUNTER_".len())
        .collect();
    for name in &read {
        assert!(
            ENV_VARS.contains(name),
            "{name} is read but not in ENV_VARS"
        );
    }
    for name in ENV_VARS {
        assert!(
            read.contains(name) || ["HUNTER_CONFIG", "HUNTER_LOG_FORMAT"].contains(name),
            "{name} is in ENV_VARS but the config module does not read it"
        );
    }
    assert!(include_str!("../telemetry.rs").contains("\"HUNTER_LOG_FORMAT\""));
    assert!(include_str!("../../../src/cli.rs").contains("env = \"HUNTER_CONFIG\""));
}
// --- ClickHouse users and TLS ---

#[test]
fn clickhouse_reader_and_ca() {
    let settings = Settings::from_sources(None, &env(&base())).unwrap();
    assert_eq!(settings.clickhouse.reader_user, None);
    assert_eq!(settings.clickhouse.ca_location, None);
    assert_eq!(
        settings.clickhouse.reader_max_rows_to_read,
        Defaults::CLICKHOUSE_READER_MAX_ROWS_TO_READ
    );

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let mut pairs = base();
    let ca_text = ca.display().to_string();
    pairs.extend_from_slice(&[
        ("HUNTER_CLICKHOUSE_READER_USER", "hunter_api"),
        ("HUNTER_CLICKHOUSE_READER_PASSWORD", "reader-pass-phrase"),
        ("HUNTER_CLICKHOUSE_CA_LOCATION", ca_text.as_str()),
        ("HUNTER_CLICKHOUSE_READER_MAX_ROWS_TO_READ", "0"),
    ]);
    let settings = Settings::from_sources(None, &env(&pairs)).unwrap();
    let ch = &settings.clickhouse;
    assert_eq!(ch.reader_user.as_deref(), Some("hunter_api"));
    assert_eq!(
        ch.reader_password.as_ref().map(Secret::expose),
        Some("reader-pass-phrase")
    );
    assert_eq!(ch.ca_location.as_deref(), Some(ca.as_path()));
    assert_eq!(ch.reader_max_rows_to_read, 0);
    assert!(!format!("{settings:?}").contains("reader-pass-phrase"));

    let error = error_for(&[("HUNTER_CLICKHOUSE_READER_PASSWORD", "x")]);
    assert!(error.contains("HUNTER_CLICKHOUSE_READER_USER"), "{error}");
    let error = error_for(&[("HUNTER_CLICKHOUSE_CA_LOCATION", "/nonexistent/ca.pem")]);
    assert!(error.contains("HUNTER_CLICKHOUSE_CA_LOCATION"), "{error}");
    let not_pem = dir.path().join("key.txt");
    std::fs::write(&not_pem, "hello").unwrap();
    let error = error_for(&[(
        "HUNTER_CLICKHOUSE_CA_LOCATION",
        not_pem.display().to_string().as_str(),
    )]);
    assert!(
        error.contains("HUNTER_CLICKHOUSE_CA_LOCATION") && error.contains("no PEM"),
        "{error}"
    );
    let error = error_for(&[("HUNTER_CLICKHOUSE_READER_MAX_ROWS_TO_READ", "many")]);
    assert!(
        error.contains("HUNTER_CLICKHOUSE_READER_MAX_ROWS_TO_READ"),
        "{error}"
    );

    std::fs::write(
            dir.path().join("hunter.toml"),
            format!(
                "[clickhouse]\nreader_user = \"api\"\nreader_password = \"pw-from-file\"\nca_location = \"{ca_text}\"\nreader_max_rows_to_read = 5\n"
            ),
        )
        .unwrap();
    let settings =
        Settings::from_sources(Some(&dir.path().join("hunter.toml")), &env(&base())).unwrap();
    assert_eq!(settings.clickhouse.reader_user.as_deref(), Some("api"));
    assert_eq!(settings.clickhouse.reader_max_rows_to_read, 5);
    assert_eq!(
        settings.clickhouse.ca_location.as_deref(),
        Some(ca.as_path())
    );
}

// --- security settings (docs/security.md) ---

#[test]
fn api_tokens_are_trimmed_and_must_be_strong() {
    let good = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let mut pairs = base();
    let padded = format!("  {good}\n");
    pairs.push(("HUNTER_API_TOKEN", &padded));
    let settings = Settings::from_sources(None, &env(&pairs)).unwrap();
    assert_eq!(settings.api.token.unwrap().expose(), good);
    for (setting, placeholder) in [
        ("HUNTER_API_TOKEN", "change-me-to-a-long-random-token"),
        ("HUNTER_API_TOKEN", "replace-with-a-long-random-token"),
        (
            "HUNTER_API_READ_TOKEN",
            "replace-with-another-long-random-token",
        ),
        (
            "HUNTER_API_TOKEN",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
        ("HUNTER_API_READ_TOKEN", "0123456789abcdef"),
    ] {
        let error = error_for(&[(setting, placeholder)]);
        assert!(error.contains(setting), "{error}");
        assert!(error.contains("openssl rand -hex 32"), "{error}");
        assert!(!error.contains(placeholder), "{error}");
    }
    // From the file too, named by its key, and trimmed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hunter.toml");
    std::fs::write(
        &path,
        "[api]\ntoken = \"changeme-changeme-changeme-123456\"\n",
    )
    .unwrap();
    let error = Settings::from_sources(Some(&path), &env(&base()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("api.token"), "{error}");
    std::fs::write(&path, format!("[api]\nread_token = \" {good} \"\n")).unwrap();
    let settings = Settings::from_sources(Some(&path), &env(&base())).unwrap();
    assert_eq!(settings.api.read_token.unwrap().expose(), good);
    // Placeholder passwords and client secrets are refused too.
    let error = error_for(&[("HUNTER_CLICKHOUSE_PASSWORD", "replace-me")]);
    assert!(error.contains("HUNTER_CLICKHOUSE_PASSWORD"), "{error}");
    let error = error_for(&[("HUNTER_PARTNER_CENTER_CLIENT_SECRET", "changeme")]);
    assert!(
        error.contains("HUNTER_PARTNER_CENTER_CLIENT_SECRET"),
        "{error}"
    );
}

#[test]
fn plain_http_sign_in_needs_loopback_or_the_switch() {
    for setting in [
        "HUNTER_PARTNER_CENTER_AUTHORITY_URL",
        "HUNTER_PARTNER_CENTER_API_URL",
    ] {
        let error = error_for(&[(setting, "http://login.example.com")]);
        assert!(error.contains(setting), "{error}");
        assert!(error.contains("HUNTER_ALLOW_INSECURE_HTTP"), "{error}");
        let mut pairs = base();
        pairs.push((setting, "http://simulator:18080"));
        pairs.push(("HUNTER_ALLOW_INSECURE_HTTP", "true"));
        assert!(Settings::from_sources(None, &env(&pairs)).is_ok());
        let mut pairs = base();
        pairs.push((setting, "http://127.0.0.1:18080"));
        assert!(Settings::from_sources(None, &env(&pairs)).is_ok());
    }
    let error = error_for(&[(
        "HUNTER_PARTNER_CENTER_AUTHORITY_URL",
        "http://user:hunter2pw@login.example.com",
    )]);
    assert!(!error.contains("hunter2pw"), "{error}");
    assert!(
        error_for(&[("HUNTER_ALLOW_INSECURE_HTTP", "perhaps")])
            .contains("HUNTER_ALLOW_INSECURE_HTTP")
    );
}

#[test]
fn the_token_cache_defaults_to_the_state_directory() {
    let mut pairs = base();
    pairs.push(("XDG_STATE_HOME", "/state"));
    let settings = Settings::from_sources(None, &env(&pairs)).unwrap();
    assert_eq!(
        settings.partner_center.tenants[0].token_cache,
        PathBuf::from("/state/hunter/token-cache.json")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hunter.toml");
    std::fs::write(
        &path,
        "[[partner_center.tenants]]\nname = \"fabrikam\"\ntenant_id = \"f\"\nclient_id = \"c\"\n",
    )
    .unwrap();
    let settings = Settings::from_sources(Some(&path), &env(&[("HOME", "/home/op")])).unwrap();
    assert_eq!(
        settings.partner_center.tenants[0].token_cache,
        PathBuf::from("/home/op/.local/state/hunter/token-cache-fabrikam.json")
    );
    let error = Settings::from_sources(
        None,
        &env(&[
            ("HUNTER_PARTNER_CENTER_TENANT_ID", "t"),
            ("HUNTER_PARTNER_CENTER_CLIENT_ID", "c"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("HUNTER_TOKEN_CACHE"), "{error}");
}

// --- Schema Registry settings ---------------------------------------------------------------

#[test]
fn schema_registry_credentials_and_ca_are_checked_at_start() {
    let url = (
        "HUNTER_SCHEMA_REGISTRY_URL",
        "https://registry.example:8081",
    );
    let error = error_for(&[url, ("HUNTER_SCHEMA_REGISTRY_USERNAME", "key")]);
    assert!(error.contains("HUNTER_SCHEMA_REGISTRY_PASSWORD"), "{error}");
    let error = error_for(&[url, ("HUNTER_SCHEMA_REGISTRY_PASSWORD", "p4ss-w0rd")]);
    assert!(error.contains("HUNTER_SCHEMA_REGISTRY_USERNAME"), "{error}");
    assert!(!error.contains("p4ss-w0rd"), "{error}");
    let error = error_for(&[
        ("HUNTER_SCHEMA_REGISTRY_USERNAME", "key"),
        ("HUNTER_SCHEMA_REGISTRY_PASSWORD", "p4ss-w0rd"),
    ]);
    assert!(error.contains("HUNTER_SCHEMA_REGISTRY_URL"), "{error}");
    let error = error_for(&[
        url,
        ("HUNTER_SCHEMA_REGISTRY_CA_LOCATION", "/nonexistent/ca.pem"),
    ]);
    assert!(
        error.contains("HUNTER_SCHEMA_REGISTRY_CA_LOCATION"),
        "{error}"
    );
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let error = error_for(&[
        url,
        (
            "HUNTER_SCHEMA_REGISTRY_CA_LOCATION",
            not_pem.to_str().unwrap(),
        ),
    ]);
    assert!(error.contains("holds no PEM certificate"), "{error}");

    let mut pairs = base();
    pairs.extend([
        url,
        ("HUNTER_SCHEMA_REGISTRY_USERNAME", "key"),
        ("HUNTER_SCHEMA_REGISTRY_PASSWORD", "p4ss-w0rd"),
    ]);
    let settings = Settings::from_sources(None, &env(&pairs)).unwrap();
    assert_eq!(settings.schema_registry.username.as_deref(), Some("key"));
    assert_eq!(
        settings
            .schema_registry
            .password
            .as_ref()
            .map(Secret::expose),
        Some("p4ss-w0rd")
    );
    assert!(!format!("{settings:?}").contains("p4ss-w0rd"));
    // The file's [schema_registry] section, the environment winning.
    let file = dir.path().join("hunter.toml");
    std::fs::write(
            &file,
            "[kafka]\nschema_registry_url = \"https://r.example\"\n[schema_registry]\nusername = \"file-key\"\npassword = \"file-secret\"\n",
        )
        .unwrap();
    let settings = Settings::from_sources(Some(&file), &env(&base())).unwrap();
    assert_eq!(
        settings.schema_registry.username.as_deref(),
        Some("file-key")
    );
    let settings = Settings::from_sources(Some(&file), &env(&pairs)).unwrap();
    assert_eq!(settings.schema_registry.username.as_deref(), Some("key"));
}

// --- the settings table (vars.rs) ---

const TABLE_START: &str = "<!-- settings table: generated from pipeline/core/src/config/vars.rs (UPDATE_README=1 cargo test -p hunter-core --lib readme) -->\n";
const TABLE_END: &str = "<!-- end of the settings table -->";

#[test]
fn the_readme_settings_table_is_generated_from_the_table() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme
        .find(TABLE_START)
        .expect("README has the table's start marker")
        + TABLE_START.len();
    let end = readme[start..]
        .find(TABLE_END)
        .expect("README has the table's end marker")
        + start;
    let expected = settings_table_markdown();
    if readme[start..end] != expected {
        if std::env::var_os("UPDATE_README").is_some() {
            let updated = format!("{}{expected}{}", &readme[..start], &readme[end..]);
            std::fs::write(&path, updated).unwrap();
        } else {
            panic!(
                "README.md's settings table is not the one vars.rs makes; run \
                 UPDATE_README=1 cargo test -p hunter-core --lib readme"
            );
        }
    }
}

#[test]
fn every_file_key_of_the_table_is_a_key_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hunter.toml");
    for setting in SETTINGS {
        let Some(key) = setting.file_key else {
            continue;
        };
        // A value of the wrong type for most keys: the file parser must still know the key.
        let text = match key.rsplit_once('.') {
            Some((section, field)) => format!("[{section}]\n{field} = \"x\"\n"),
            None => format!("{key} = \"x\"\n"),
        };
        std::fs::write(&path, text).unwrap();
        if let Err(error) = Settings::from_sources(Some(&path), &env(&base())) {
            let error = error.to_string();
            assert!(!error.contains("unknown field"), "{key}: {error}");
        }
    }
    assert_eq!(
        SETTINGS
            .iter()
            .filter(|s| s.file_key.is_none())
            .map(|s| s.variable)
            .collect::<Vec<_>>(),
        ["HUNTER_CONFIG", "HUNTER_LOG_FORMAT"]
    );
}

#[test]
fn the_table_shows_the_defaults_the_code_applies() {
    let shown = |variable: &str| {
        SETTINGS
            .iter()
            .find(|s| s.variable == variable)
            .unwrap_or_else(|| panic!("{variable} is in the table"))
            .default
    };
    for (variable, value) in [
        (
            "HUNTER_PARTNER_CENTER_API_URL",
            Defaults::API_URL.to_string(),
        ),
        (
            "HUNTER_PARTNER_CENTER_AUTHORITY_URL",
            Defaults::AUTHORITY_URL.to_string(),
        ),
        ("HUNTER_PARTNER_CENTER_SCOPE", Defaults::SCOPE.to_string()),
        (
            "HUNTER_PARTNER_CENTER_PAGE_SIZE",
            Defaults::PAGE_SIZE.to_string(),
        ),
        ("HUNTER_KAFKA_BROKERS", Defaults::KAFKA_BROKERS.to_string()),
        (
            "HUNTER_CLICKHOUSE_URL",
            Defaults::CLICKHOUSE_URL.to_string(),
        ),
        (
            "HUNTER_CLICKHOUSE_DATABASE",
            Defaults::CLICKHOUSE_DATABASE.to_string(),
        ),
        (
            "HUNTER_CLICKHOUSE_READER_MAX_ROWS_TO_READ",
            Defaults::CLICKHOUSE_READER_MAX_ROWS_TO_READ.to_string(),
        ),
        ("HUNTER_API_LISTEN", Defaults::API_LISTEN.to_string()),
        (
            "HUNTER_API_REQUEST_TIMEOUT_SECS",
            Defaults::API_REQUEST_TIMEOUT_SECS.to_string(),
        ),
        ("HUNTER_API_CACHE_MS", Defaults::API_CACHE_MS.to_string()),
        (
            "HUNTER_SYNC_INTERVAL_SECS",
            Defaults::SYNC_INTERVAL_PRODUCTION_SECS.to_string(),
        ),
        (
            "HUNTER_SYNC_OVERLAP_SECS",
            Defaults::OVERLAP_SECS.to_string(),
        ),
        (
            "HUNTER_SYNC_POLL_BUDGET_SECS",
            Defaults::POLL_BUDGET_SECS.to_string(),
        ),
        (
            "HUNTER_SYNC_FULL_SWEEP_SECS",
            Defaults::FULL_SWEEP_SECS.to_string(),
        ),
        (
            "HUNTER_SYNC_PAGES_IN_FLIGHT",
            Defaults::PAGES_IN_FLIGHT.to_string(),
        ),
        (
            "HUNTER_SINK_BATCH_ROWS",
            Defaults::SINK_BATCH_ROWS.to_string(),
        ),
        (
            "HUNTER_SINK_BATCH_MAX_WAIT_MS",
            Defaults::SINK_BATCH_MILLIS.to_string(),
        ),
        (
            "HUNTER_SINK_INSERT_TIMEOUT_MS",
            Defaults::SINK_INSERT_TIMEOUT_MS.to_string(),
        ),
        (
            "HUNTER_ENRICH_DNS_TIMEOUT_MS",
            Defaults::DNS_TIMEOUT_MS.to_string(),
        ),
        (
            "HUNTER_ENRICH_MX_CACHE_SECS",
            Defaults::MX_CACHE_SECS.to_string(),
        ),
    ] {
        assert!(
            shown(variable).starts_with(&format!("`{value}`")),
            "{variable}: the table says {:?}, the code applies {value}",
            shown(variable)
        );
    }
    assert!(shown("HUNTER_SYNC_INTERVAL_SECS").contains(&format!(
        "`{}` with `HUNTER_ENVIRONMENT=development`",
        Defaults::SYNC_INTERVAL_DEVELOPMENT_SECS
    )));
}

#[test]
fn the_sink_insert_timeout_defaults_to_a_minute_and_is_never_zero() {
    let settings = Settings::from_sources(None, &env(&base())).unwrap();
    assert_eq!(settings.sink.insert_timeout, Duration::from_secs(60));
    let mut set = base();
    set.push(("HUNTER_SINK_INSERT_TIMEOUT_MS", "2500"));
    assert_eq!(
        Settings::from_sources(None, &env(&set))
            .unwrap()
            .sink
            .insert_timeout,
        Duration::from_millis(2_500)
    );
    for bad in ["0", "soon"] {
        let error = error_for(&[("HUNTER_SINK_INSERT_TIMEOUT_MS", bad)]);
        assert!(error.contains("HUNTER_SINK_INSERT_TIMEOUT_MS"), "{error}");
    }
}

#[test]
fn the_referrals_writer_is_auto_unless_named_and_a_wrong_one_is_refused() {
    let settings = Settings::from_sources(None, &env(&base())).unwrap();
    assert_eq!(settings.sink.referrals_writer, ReferralsWriter::Auto);
    for (value, writer) in [
        ("processor", ReferralsWriter::Processor),
        ("Sink", ReferralsWriter::Sink),
        ("auto", ReferralsWriter::Auto),
    ] {
        let mut set = base();
        set.push(("HUNTER_SINK_REFERRALS_WRITER", value));
        let settings = Settings::from_sources(None, &env(&set)).unwrap();
        assert_eq!(settings.sink.referrals_writer, writer, "{value}");
    }
    let error = error_for(&[("HUNTER_SINK_REFERRALS_WRITER", "both")]);
    assert!(
        error.contains("HUNTER_SINK_REFERRALS_WRITER") && error.contains("auto, sink or processor"),
        "{error}"
    );
}

// --- named API tokens (docs/writeback.md) ---

#[test]
fn named_api_tokens_have_roles_and_the_single_tokens_keep_working() {
    let admin = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let alice = "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b";
    let bob = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmE+/w==";
    let tokens = format!("alice={alice}:sales, bob={bob}:read");
    let mut pairs = base();
    pairs.push(("HUNTER_API_TOKEN", admin));
    pairs.push(("HUNTER_API_TOKENS", &tokens));
    let settings = Settings::from_sources(None, &env(&pairs)).unwrap();
    let named: Vec<(String, TokenRole)> = settings
        .api
        .named_tokens
        .iter()
        .map(|t| (t.name.clone(), t.role))
        .collect();
    assert_eq!(
        named,
        [
            ("alice".to_owned(), TokenRole::Sales),
            ("bob".to_owned(), TokenRole::Read),
            ("admin".to_owned(), TokenRole::Admin),
        ]
    );
    assert_eq!(settings.api.named_tokens[1].token.expose(), bob);
    assert!(!format!("{:?}", settings.api).contains(alice), "a Secret");

    for (value, expect) in [
        (format!("alice={alice}"), "no role"),
        (format!("alice={alice}:boss"), "read, sales or admin"),
        (
            "alice=change-me-to-a-long-random-token:sales".to_owned(),
            "token of `alice`",
        ),
        (format!("alice={alice}:sales,alice={bob}:read"), "twice"),
        (
            format!("alice={alice}:sales,carol={alice}:read"),
            "same token",
        ),
        (format!("{alice}:sales"), "name=token:role"),
        (format!("a b={alice}:sales"), "the name"),
    ] {
        let error = error_for(&[("HUNTER_API_TOKENS", value.as_str())]);
        assert!(error.contains("HUNTER_API_TOKENS"), "{error}");
        assert!(error.contains(expect), "{value}: {error}");
        assert!(!error.contains(alice) && !error.contains(bob), "{error}");
    }
}

// --- the API's read model (docs/api-read-model.md) ---
#[test]
fn the_api_read_model_is_on_by_default_and_its_setting_is_validated() {
    let on = Settings::from_sources(None, &env(&base())).unwrap();
    assert!(on.api.read_model);
    for (value, expected) in [
        ("off", false),
        ("on", true),
        ("false", false),
        ("TRUE", true),
    ] {
        let mut pairs = base();
        pairs.push(("HUNTER_API_READ_MODEL", value));
        let settings = Settings::from_sources(None, &env(&pairs)).unwrap();
        assert_eq!(settings.api.read_model, expected, "{value}");
    }
    let error = error_for(&[("HUNTER_API_READ_MODEL", "sometimes")]);
    assert!(error.contains("HUNTER_API_READ_MODEL"), "{error}");
}

#[test]
fn the_read_models_rows_are_on_by_default_and_their_setting_is_validated() {
    let on = Settings::from_sources(None, &env(&base())).unwrap();
    assert!(on.api.read_model_rows);
    let mut pairs = base();
    pairs.push(("HUNTER_API_READ_MODEL_ROWS", "off"));
    let off = Settings::from_sources(None, &env(&pairs)).unwrap();
    assert!(!off.api.read_model_rows);
    assert!(off.api.read_model, "the model itself stays on");
    let error = error_for(&[("HUNTER_API_READ_MODEL_ROWS", "sometimes")]);
    assert!(error.contains("HUNTER_API_READ_MODEL_ROWS"), "{error}");
}

// --- the source's pages in flight (docs/partner-center-api.md, "Paging") ---

#[test]
fn pages_in_flight_default_to_four_and_stay_within_one_to_thirty_two() {
    let settings = Settings::from_sources(None, &env(&base())).unwrap();
    assert_eq!(settings.sync.pages_in_flight, 4);
    for (value, expected) in [("1", 1), ("32", 32)] {
        let mut set = base();
        set.push(("HUNTER_SYNC_PAGES_IN_FLIGHT", value));
        let settings = Settings::from_sources(None, &env(&set)).unwrap();
        assert_eq!(settings.sync.pages_in_flight, expected);
    }
    for bad in ["0", "33", "many", "-1"] {
        let error = error_for(&[("HUNTER_SYNC_PAGES_IN_FLIGHT", bad)]);
        assert!(
            error.contains("HUNTER_SYNC_PAGES_IN_FLIGHT"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn producer_compression_is_none_by_default_and_set_by_variable_or_file() {
    let settings = Settings::from_sources(None, &env(&base())).unwrap();
    assert_eq!(settings.kafka.compression, KafkaCompression::None);
    for (value, expected) in [
        ("lz4", KafkaCompression::Lz4),
        ("GZIP", KafkaCompression::Gzip),
        (" snappy ", KafkaCompression::Snappy),
        ("none", KafkaCompression::None),
    ] {
        let mut pairs = base();
        pairs.push(("HUNTER_KAFKA_COMPRESSION", value));
        let settings = Settings::from_sources(None, &env(&pairs)).unwrap();
        assert_eq!(settings.kafka.compression, expected, "{value}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hunter.toml");
    std::fs::write(&path, "[kafka]\ncompression = \"lz4\"\n").unwrap();
    let settings = Settings::from_sources(Some(&path), &env(&base())).unwrap();
    assert_eq!(settings.kafka.compression, KafkaCompression::Lz4);
    let mut pairs = base();
    pairs.push(("HUNTER_KAFKA_COMPRESSION", "none"));
    let settings = Settings::from_sources(Some(&path), &env(&pairs)).unwrap();
    assert_eq!(
        settings.kafka.compression,
        KafkaCompression::None,
        "the variable wins"
    );
}

#[test]
fn an_unknown_or_missing_codec_is_refused_naming_the_setting() {
    let error = error_for(&[("HUNTER_KAFKA_COMPRESSION", "zstd")]);
    assert!(error.contains("HUNTER_KAFKA_COMPRESSION"), "{error}");
    assert!(error.contains("not compiled"), "{error}");
    let error = error_for(&[("HUNTER_KAFKA_COMPRESSION", "brotli")]);
    assert!(error.contains("HUNTER_KAFKA_COMPRESSION"), "{error}");
    assert!(error.contains("none, gzip, snappy or lz4"), "{error}");
}
