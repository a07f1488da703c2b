//! `hunter webhooks register | status | unregister`: Partner Center's webhook registration
//! (`{api}/webhooks/registration`) for each tenant, with the tenant's sign-in and the source's
//! API base (docs/partner-center-webhooks.md).
//!
//! The registered callback is `HUNTER_PARTNER_CENTER_WEBHOOK_URL` with `token` (the secret) and
//! `tenant` (the tenant's name) added, for `referral-created` and `referral-updated`, with
//! `signatureTokenToMsSignatureHeader` so Partner Center's own signature travels in
//! `x-ms-signature`. `register` is idempotent: an identical registration is left alone, another
//! one is replaced (PUT). Output never shows the secret (`token=[redacted]`). `status` exits
//! non-zero when a tenant's registration is missing or is not this deployment's callback.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hunter_core::config::{Settings, TenantSettings};
use hunter_partner_center::auth::TokenProvider;
use hunter_partner_center::client::{
    ClientSettings, PartnerCenterClient, REFERRAL_EVENTS, WebhookRegistration,
};
use url::Url;

use crate::cli::WebhooksCommand;
use crate::roles::source::auth_settings;

/// The callback URL registered for `tenant`: the configured URL with `token` and `tenant`.
pub fn callback_url(settings: &Settings, tenant: &str) -> anyhow::Result<Url> {
    let webhooks = &settings.pc_webhooks;
    let mut url = webhooks.callback_url.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "missing HUNTER_PARTNER_CENTER_WEBHOOK_URL: the public URL of \
             POST /api/v1/partner-center/webhooks that Partner Center is to call"
        )
    })?;
    let secret = webhooks.secret.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "missing HUNTER_PARTNER_CENTER_WEBHOOK_SECRET: the api accepts no webhook without it \
             (make one with `openssl rand -hex 32`, set it for the api and here)"
        )
    })?;
    url.query_pairs_mut()
        .append_pair("token", secret.expose())
        .append_pair("tenant", tenant);
    Ok(url)
}

fn client(settings: &Settings, tenant: &TenantSettings) -> anyhow::Result<PartnerCenterClient> {
    let pc = &settings.partner_center;
    let tokens = Arc::new(TokenProvider::new(auth_settings(pc, tenant)));
    PartnerCenterClient::new(
        ClientSettings {
            api_url: pc.api_url.clone(),
            request_timeout: Duration::from_secs(30),
            max_attempts: 3,
            ..ClientSettings::default()
        },
        tokens,
    )
    .with_context(|| format!("partner center client for tenant {}", tenant.name))
}

fn wanted(settings: &Settings, tenant: &str) -> anyhow::Result<WebhookRegistration> {
    Ok(WebhookRegistration {
        subscriber_id: None,
        webhook_url: callback_url(settings, tenant)?.to_string(),
        webhook_events: REFERRAL_EVENTS.iter().map(|e| (*e).to_owned()).collect(),
        signature_token_to_ms_signature_header: Some(true),
    })
}

/// Whether `current` is this deployment's registration (same URL, both referral events).
fn matches(current: &WebhookRegistration, wanted: &WebhookRegistration) -> bool {
    current.webhook_url == wanted.webhook_url
        && REFERRAL_EVENTS
            .iter()
            .all(|event| current.webhook_events.iter().any(|e| e == event))
}

fn events(registration: &WebhookRegistration) -> String {
    registration.webhook_events.join(", ")
}

pub async fn run(settings: &Settings, command: WebhooksCommand) -> anyhow::Result<()> {
    let pc = &settings.partner_center;
    let tenant_name = match &command {
        WebhooksCommand::Register { tenant }
        | WebhooksCommand::Status { tenant }
        | WebhooksCommand::Unregister { tenant } => tenant.clone(),
    };
    let tenants: Vec<&TenantSettings> = match tenant_name.as_deref() {
        Some(name) => vec![pc.tenant(Some(name))?],
        None => pc.tenants.iter().collect(),
    };
    anyhow::ensure!(
        !tenants.is_empty(),
        "no partner center tenant is configured (HUNTER_PARTNER_CENTER_TENANT_ID / HUNTER_PARTNER_CENTER_TENANTS)"
    );
    let mut failures = Vec::new();
    for tenant in tenants {
        let client = client(settings, tenant)?;
        let name = &tenant.name;
        match &command {
            WebhooksCommand::Register { .. } => {
                let wanted = wanted(settings, name)?;
                let current = client
                    .webhook_registration()
                    .await
                    .with_context(|| format!("tenant {name}: reading the webhook registration"))?;
                match current {
                    Some(current) if matches(&current, &wanted) => {
                        println!(
                            "tenant {name}: already registered: {} for {}",
                            current.redacted_url(),
                            events(&current)
                        );
                    }
                    current => {
                        let replace = current.is_some();
                        let done = client
                            .register_webhook(&wanted, replace)
                            .await
                            .with_context(|| format!("tenant {name}: registering the webhook"))?;
                        if let Some(old) = current {
                            println!("tenant {name}: replaced {}", old.redacted_url());
                        }
                        println!(
                            "tenant {name}: registered {} for {}{}",
                            done.redacted_url(),
                            events(&done),
                            done.subscriber_id
                                .as_deref()
                                .map(|id| format!(" (subscriber {id})"))
                                .unwrap_or_default()
                        );
                    }
                }
            }
            WebhooksCommand::Status { .. } => {
                let current = client
                    .webhook_registration()
                    .await
                    .with_context(|| format!("tenant {name}: reading the webhook registration"))?;
                let wanted = wanted(settings, name).ok();
                match (current, wanted) {
                    (None, _) => {
                        println!(
                            "tenant {name}: not registered; run `hunter webhooks register` (the poll alone keeps leads fresh to HUNTER_SYNC_INTERVAL_SECS)"
                        );
                        failures.push(name.clone());
                    }
                    (Some(current), Some(wanted)) if matches(&current, &wanted) => {
                        println!(
                            "tenant {name}: registered: {} for {} (this deployment's callback)",
                            current.redacted_url(),
                            events(&current)
                        );
                    }
                    (Some(current), wanted) => {
                        let why = if wanted.is_none() {
                            "HUNTER_PARTNER_CENTER_WEBHOOK_URL or _SECRET is not set here, so it cannot be compared"
                        } else {
                            "not this deployment's callback (another URL or token, or events missing); run `hunter webhooks register` to replace it"
                        };
                        println!(
                            "tenant {name}: registered: {} for {}: {why}",
                            current.redacted_url(),
                            events(&current)
                        );
                        failures.push(name.clone());
                    }
                }
            }
            WebhooksCommand::Unregister { .. } => {
                let removed = client
                    .delete_webhook_registration()
                    .await
                    .with_context(|| format!("tenant {name}: removing the webhook registration"))?;
                if removed {
                    println!(
                        "tenant {name}: webhook registration removed (the poll keeps leads fresh)"
                    );
                } else {
                    println!("tenant {name}: no webhook registration to remove");
                }
            }
        }
    }
    anyhow::ensure!(
        failures.is_empty(),
        "webhooks not registered as configured for tenant(s): {}",
        failures.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(extra: &[(&str, &str)]) -> Settings {
        let mut env: HashMap<String, String> = [
            ("HUNTER_PARTNER_CENTER_TENANT_ID", "contoso.example"),
            (
                "HUNTER_PARTNER_CENTER_CLIENT_ID",
                "11111111-2222-4333-8444-555555555555",
            ),
            ("HOME", "/nonexistent"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Settings::from_sources(None, &env).unwrap()
    }

    #[test]
    fn the_callback_carries_the_secret_and_the_tenant_and_needs_both_settings() {
        let secret = "3f9c2a7e41b05d86c1e7a9f0b2d4c6e8";
        let full = settings(&[
            ("HUNTER_PARTNER_CENTER_WEBHOOK_SECRET", secret),
            (
                "HUNTER_PARTNER_CENTER_WEBHOOK_URL",
                "https://hunter.example.com/api/v1/partner-center/webhooks",
            ),
        ]);
        let url = callback_url(&full, "default").unwrap();
        assert_eq!(
            url.as_str(),
            format!(
                "https://hunter.example.com/api/v1/partner-center/webhooks?token={secret}&tenant=default"
            )
        );
        let registration = wanted(&full, "default").unwrap();
        assert!(!registration.redacted_url().contains(secret));
        assert!(matches(&registration, &registration));
        let mut other = registration.clone();
        other.webhook_events.pop();
        assert!(!matches(&other, &registration), "an event missing");
        let error = callback_url(
            &settings(&[("HUNTER_PARTNER_CENTER_WEBHOOK_SECRET", secret)]),
            "d",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("HUNTER_PARTNER_CENTER_WEBHOOK_URL"),
            "{error}"
        );
        let error = callback_url(
            &settings(&[(
                "HUNTER_PARTNER_CENTER_WEBHOOK_URL",
                "https://hunter.example.com/api/v1/partner-center/webhooks",
            )]),
            "d",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("HUNTER_PARTNER_CENTER_WEBHOOK_SECRET"),
            "{error}"
        );
    }
}
