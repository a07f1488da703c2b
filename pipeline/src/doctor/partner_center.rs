//! Partner Center checks: the feature flag, then per tenant the token cache, the silent refresh
//! and the Referrals API.

use std::sync::Arc;

use hunter_core::config::{Settings, TenantSettings};
use hunter_partner_center::auth::{AuthError, TokenProvider, auth_status};
use hunter_partner_center::client::{ClientSettings, PartnerCenterClient};
use time::OffsetDateTime;

use super::{CHECK_TIMEOUT, Report, Verdict};
use crate::roles;

/// A refresh token this old is a warning: Entra drops it at 90 days without use.
const REFRESH_TOKEN_WARN_DAYS: u64 = 80;

/// Feature flag, then per tenant: token cache, silent refresh, the Referrals API.
pub(super) async fn partner_center(settings: &Settings, report: &mut Report) {
    let pc = &settings.partner_center;
    if !pc.enabled {
        report.fail(
            "feature flag",
            "the source is disabled: no polls are made",
            "set HUNTER_PARTNER_CENTER_ENABLED=true",
        );
        for name in ["token cache", "token refresh", "partner center api"] {
            report.add(name, Verdict::Skip, "the source is disabled");
        }
        return;
    }
    report.add(
        "feature flag",
        Verdict::Ok,
        "HUNTER_PARTNER_CENTER_ENABLED=true",
    );
    if pc.tenants.is_empty() {
        report.fail(
            "tenants",
            "no partner account is configured",
            "set HUNTER_PARTNER_CENTER_TENANT_ID and HUNTER_PARTNER_CENTER_CLIENT_ID",
        );
        return;
    }
    for tenant in &pc.tenants {
        tenant_checks(settings, tenant, report).await;
    }
}

async fn tenant_checks(settings: &Settings, tenant: &TenantSettings, report: &mut Report) {
    let pc = &settings.partner_center;
    let name = |check: &str| {
        if pc.tenants.len() == 1 {
            check.to_owned()
        } else {
            format!("{check} ({})", tenant.name)
        }
    };
    let login = format!("run `hunter auth login --tenant {}`", tenant.name);
    let auth = roles::source::auth_settings(pc, tenant);
    let path = &tenant.token_cache;

    // Present, readable, and private.
    let cache_ok = match std::fs::metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            report.fail(
                name("token cache"),
                format!("{} is missing", path.display()),
                login.clone(),
            );
            false
        }
        Err(error) => {
            report.fail(
                name("token cache"),
                format!("{}: {error}", path.display()),
                "check the path (HUNTER_TOKEN_CACHE) and that hunter's user may read it",
            );
            false
        }
        Ok(metadata) => match (std::fs::File::open(path), cache_mode(&metadata)) {
            (Err(error), _) => {
                report.fail(
                    name("token cache"),
                    format!("{} is not readable: {error}", path.display()),
                    "make hunter's user the owner of the file: chown it, then chmod 600",
                );
                false
            }
            (Ok(_), Some(mode)) if mode & 0o077 != 0 => {
                report.fail(
                    name("token cache"),
                    format!(
                        "{} has mode {mode:o}: others may read the refresh token",
                        path.display()
                    ),
                    format!("chmod 600 {}", path.display()),
                );
                false
            }
            (Ok(_), _) => match auth_status(&auth) {
                Ok(status) if status.needs_login => {
                    report.fail(name("token cache"), status.verdict, login.clone());
                    false
                }
                Ok(status) => {
                    let days = status.refresh_token_age.as_secs() / 86_400;
                    if days >= REFRESH_TOKEN_WARN_DAYS {
                        report.push(
                            name("token cache"),
                            Verdict::Warn,
                            format!("refresh token is {days} days old (Entra drops it at 90)"),
                            Some(login.clone()),
                        );
                    } else {
                        report.add(
                            name("token cache"),
                            Verdict::Ok,
                            format!(
                                "{} (mode 600, refresh token {days} days old)",
                                path.display()
                            ),
                        );
                    }
                    true
                }
                Err(error) => {
                    report.fail(name("token cache"), error.to_string(), login.clone());
                    false
                }
            },
        },
    };
    if !cache_ok {
        report.add(
            name("token refresh"),
            Verdict::Skip,
            "no usable token cache",
        );
        report.add(
            name("partner center api"),
            Verdict::Skip,
            "no usable token cache",
        );
        return;
    }

    let tokens = Arc::new(TokenProvider::new(auth));
    match tokio::time::timeout(CHECK_TIMEOUT, tokens.refresh_now()).await {
        Ok(Ok(_)) => report.add(
            name("token refresh"),
            Verdict::Ok,
            format!("silent refresh against {} succeeded", pc.authority_url),
        ),
        Ok(Err(error)) => {
            let fix = match &error {
                AuthError::SignInRequired { .. } | AuthError::CacheMissing { .. } => login.clone(),
                _ => format!(
                    "check that {} is reachable from here (HUNTER_PARTNER_CENTER_AUTHORITY_URL, proxy, firewall)",
                    pc.authority_url
                ),
            };
            report.fail(name("token refresh"), error.to_string(), fix);
            report.add(name("partner center api"), Verdict::Skip, "no access token");
            return;
        }
        Err(_) => {
            report.fail(
                name("token refresh"),
                format!(
                    "{} did not answer within {CHECK_TIMEOUT:?}",
                    pc.authority_url
                ),
                "check the network path to the login authority",
            );
            report.add(name("partner center api"), Verdict::Skip, "no access token");
            return;
        }
    }

    let client = PartnerCenterClient::new(
        ClientSettings {
            api_url: pc.api_url.clone(),
            page_size: 1,
            request_timeout: CHECK_TIMEOUT,
            max_attempts: 1,
            ..ClientSettings::default()
        },
        tokens,
    );
    let since = OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let answer = match client {
        Ok(client) => client.first_page(Some(since)).await.map(|_| ()),
        Err(error) => Err(error),
    };
    match answer {
        Ok(()) => report.add(
            name("partner center api"),
            Verdict::Ok,
            format!("{}/referrals answered", pc.api_url),
        ),
        Err(error) => {
            let fix = match error.status() {
                Some(401 | 403) => format!(
                    "the signed-in account lacks Partner Center access (Referrals admin or user role); {login}"
                ),
                Some(429) => "the API is rate limiting: wait, and keep HUNTER_SYNC_INTERVAL_SECS at 600 or more".to_owned(),
                _ => format!(
                    "check HUNTER_PARTNER_CENTER_API_URL ({}) and the network path to it",
                    pc.api_url
                ),
            };
            report.fail(name("partner center api"), error.to_string(), fix);
        }
    }
}

#[cfg(unix)]
fn cache_mode(metadata: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(metadata.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn cache_mode(_metadata: &std::fs::Metadata) -> Option<u32> {
    None
}
