//! Partner Center's webhook registration, `{api}/webhooks/registration` (GET, POST, PUT,
//! DELETE): where Partner Center posts `referral-created` / `referral-updated` events
//! (docs/partner-center-webhooks.md). Same sign-in, retries and limits as every call of the
//! client. One registration per partner account (tenant): POST creates it, PUT replaces it.

use serde::{Deserialize, Serialize};
use url::Url;

use super::request::{Fetched, Outgoing};
use super::{ClientError, PartnerCenterClient};

/// The events Hunter registers for.
pub const REFERRAL_EVENTS: [&str; 2] = ["referral-created", "referral-updated"];

/// A registration as Partner Center shows and takes it (PascalCase members, as documented).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRegistration {
    /// Set by Partner Center.
    #[serde(
        rename = "SubscriberId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub subscriber_id: Option<String>,
    /// The callback URL; Hunter's carries its shared secret (`token`): never print it whole.
    #[serde(rename = "WebhookUrl")]
    pub webhook_url: String,
    #[serde(rename = "WebhookEvents", default)]
    pub webhook_events: Vec<String>,
    /// `true`: Partner Center sends its signature in `x-ms-signature` rather than in
    /// `Authorization` (docs/partner-center-webhooks.md, "What Partner Center offers").
    #[serde(
        rename = "signatureTokenToMsSignatureHeader",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub signature_token_to_ms_signature_header: Option<bool>,
}

impl WebhookRegistration {
    /// The callback URL with the value of `token` replaced by `[redacted]`, for output.
    pub fn redacted_url(&self) -> String {
        redact_token(&self.webhook_url)
    }
}

/// `url` with the value of its `token` query parameter replaced by `[redacted]`.
pub fn redact_token(url: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        return "[not a url]".to_owned();
    };
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(key, value)| {
            let value = if key == "token" {
                "[redacted]".to_owned()
            } else {
                value.into_owned()
            };
            (key.into_owned(), value)
        })
        .collect();
    if pairs.is_empty() {
        return parsed.to_string();
    }
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

fn decode_registration(fetched: Fetched) -> Result<WebhookRegistration, ClientError> {
    serde_json::from_slice(&fetched.body).map_err(|error| ClientError::Decode {
        message: format!("not a webhook registration: {error}"),
        truncated: false,
    })
}

fn decode_nothing(_: Fetched) -> Result<(), ClientError> {
    Ok(())
}

impl PartnerCenterClient {
    /// `{api}/webhooks/registration`.
    pub fn webhook_registration_url(&self) -> Result<Url, ClientError> {
        let mut url = self.settings().api_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| ClientError::Invalid("api_url cannot have a path".to_owned()))?
            .pop_if_empty()
            .extend(["webhooks", "registration"]);
        Ok(url)
    }

    /// The tenant's registration; `None` when there is none (404).
    pub async fn webhook_registration(&self) -> Result<Option<WebhookRegistration>, ClientError> {
        let url = self.webhook_registration_url()?;
        match self
            .get_with_retries("webhooks", &url, decode_registration)
            .await
        {
            Ok(registration) => Ok(Some(registration)),
            Err(ClientError::Client { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Registers `registration` (POST), or replaces the existing one (`replace`: PUT).
    pub async fn register_webhook(
        &self,
        registration: &WebhookRegistration,
        replace: bool,
    ) -> Result<WebhookRegistration, ClientError> {
        let url = self.webhook_registration_url()?;
        let body = serde_json::to_vec(registration)
            .map_err(|error| ClientError::Invalid(format!("webhook registration: {error}")))?;
        self.send_with_retries(
            "webhooks",
            &url,
            Outgoing::Json {
                put: replace,
                body: &body,
            },
            decode_registration,
        )
        .await
    }

    /// Removes the registration; `false` when there was none (404).
    pub async fn delete_webhook_registration(&self) -> Result<bool, ClientError> {
        let url = self.webhook_registration_url()?;
        match self
            .send_with_retries("webhooks", &url, Outgoing::Delete, decode_nothing)
            .await
        {
            Ok(()) => Ok(true),
            Err(ClientError::Client { status: 404, .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_redacted_and_other_parameters_kept() {
        let shown = redact_token(
            "https://hunter.example.com/api/v1/partner-center/webhooks?token=s3cr3t-value&tenant=contoso",
        );
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("tenant=contoso"), "{shown}");
        assert!(shown.contains("token=%5Bredacted%5D"), "{shown}");
    }

    #[test]
    fn the_registration_reads_and_writes_partner_centers_member_names() {
        let registration: WebhookRegistration = serde_json::from_str(
            r#"{"SubscriberId":"s-1","WebhookUrl":"https://h/x","WebhookEvents":["referral-created"]}"#,
        )
        .unwrap();
        assert_eq!(registration.subscriber_id.as_deref(), Some("s-1"));
        let written = serde_json::to_value(WebhookRegistration {
            subscriber_id: None,
            webhook_url: "https://h/x".into(),
            webhook_events: REFERRAL_EVENTS.iter().map(|e| (*e).to_owned()).collect(),
            signature_token_to_ms_signature_header: Some(true),
        })
        .unwrap();
        assert_eq!(
            written,
            serde_json::json!({
                "WebhookUrl": "https://h/x",
                "WebhookEvents": ["referral-created", "referral-updated"],
                "signatureTokenToMsSignatureHeader": true
            })
        );
    }
}
