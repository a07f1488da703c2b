//! `[enrich]`: the processor's MX lookups and exchange rates.

use super::*;

#[derive(Debug, Clone)]
pub struct EnrichSettings {
    /// DNS server for MX lookups; `None` uses the system's resolver configuration.
    pub dns_server: Option<SocketAddr>,
    /// Per-lookup timeout: past it the provider is `unknown` and the stream goes on.
    pub dns_timeout: Duration,
    /// How long an MX answer is cached per domain.
    pub mx_cache_ttl: Duration,
    /// Currency code to USD per unit; a currency without a rate gets no USD value.
    pub usd_rates: std::collections::BTreeMap<String, f64>,
}

impl Default for EnrichSettings {
    /// What an empty configuration gives: the system resolver, [`Defaults::DNS_TIMEOUT_MS`] per
    /// lookup, MX answers kept [`Defaults::MX_CACHE_SECS`], no exchange rates (USD is always 1).
    fn default() -> Self {
        Self {
            dns_server: None,
            dns_timeout: Duration::from_millis(Defaults::DNS_TIMEOUT_MS),
            mx_cache_ttl: Duration::from_secs(Defaults::MX_CACHE_SECS),
            usd_rates: std::collections::BTreeMap::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileEnrich {
    pub(super) dns_server: Option<String>,
    pub(super) dns_timeout_ms: Option<u64>,
    pub(super) mx_cache_secs: Option<u64>,
    #[serde(default)]
    pub(super) usd_rates: std::collections::BTreeMap<String, f64>,
}

/// Reads `[enrich]` and its variables.
pub(super) fn enrich_settings(
    src: &Source<'_>,
    enrich: FileEnrich,
) -> Result<EnrichSettings, ConfigError> {
    let env = src.env;
    let dns_server = match src.text(
        "HUNTER_ENRICH_DNS_SERVER",
        enrich.dns_server,
        "enrich.dns_server",
    ) {
        None => None,
        Some((value, setting)) => {
            Some(
                value
                    .trim()
                    .parse::<SocketAddr>()
                    .map_err(|_| ConfigError::Invalid {
                        setting,
                        message: format!("{value:?} is not an address like 127.0.0.1:53"),
                    })?,
            )
        }
    };
    let dns_timeout_ms = src
        .parse(
            "HUNTER_ENRICH_DNS_TIMEOUT_MS",
            enrich.dns_timeout_ms,
            "a whole number of milliseconds",
        )?
        .unwrap_or(Defaults::DNS_TIMEOUT_MS);
    let mx_cache_secs = src
        .parse(
            "HUNTER_ENRICH_MX_CACHE_SECS",
            enrich.mx_cache_secs,
            "a whole number of seconds",
        )?
        .unwrap_or(Defaults::MX_CACHE_SECS);
    let mut usd_rates = std::collections::BTreeMap::new();
    for (code, rate) in enrich.usd_rates {
        usd_rates.insert(code.trim().to_ascii_uppercase(), rate);
    }
    if let Some(text) = env.get("HUNTER_ENRICH_USD_RATES").filter(|v| !v.is_empty()) {
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let parsed = item.split_once('=').and_then(|(code, rate)| {
                Some((
                    code.trim().to_ascii_uppercase(),
                    rate.trim().parse::<f64>().ok()?,
                ))
            });
            match parsed {
                Some((code, rate)) => {
                    usd_rates.insert(code, rate);
                }
                None => {
                    return Err(ConfigError::Invalid {
                        setting: "HUNTER_ENRICH_USD_RATES".into(),
                        message: format!("{item:?} is not CODE=RATE (e.g. EUR=1.08)"),
                    });
                }
            }
        }
    }
    if let Some((code, rate)) = usd_rates.iter().find(|(code, rate)| {
        code.len() != 3
            || !code.chars().all(|c| c.is_ascii_uppercase())
            || !rate.is_finite()
            || **rate <= 0.0
    }) {
        return Err(ConfigError::Invalid {
            setting: "enrich.usd_rates / HUNTER_ENRICH_USD_RATES".into(),
            message: format!("{code}={rate}: codes are 3 letters, rates positive numbers"),
        });
    }
    Ok(EnrichSettings {
        dns_server,
        dns_timeout: Duration::from_millis(dns_timeout_ms.max(1)),
        mx_cache_ttl: Duration::from_secs(mx_cache_secs),
        usd_rates,
    })
}
