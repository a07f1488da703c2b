//! Glue between the `oauth2` crate and Microsoft Entra ID's v2 endpoints.
//!
//! What does not fit `oauth2` as shipped, and how it is bridged here:
//!
//! - Entra's error replies carry `error_codes` (`[700082]`), the only stable way to tell "refresh
//!   token idle for 90 days" from "no consent" (both are `invalid_grant`). `oauth2`'s
//!   `StandardErrorResponse` drops them, so [`EntraErrorResponse`] keeps them.
//! - The device code poll loop (`DeviceAccessTokenRequest::request_async`) is hard-wired to
//!   `StandardErrorResponse<DeviceCodeErrorResponseType>` whatever error type the client has, so a
//!   terminal poll error (for example `invalid_client` / AADSTS7000218 when public client flows are
//!   off) arrives without its codes. [`AuthorityHttp`] remembers the last non-200 body (error
//!   bodies hold no secret) and [`classify`] re-reads it with [`EntraErrorResponse`].
//! - A 5xx or 429 from the authority is not an OAuth error: `oauth2` reports it as a parse error
//!   or "empty error response" without the status. [`AuthorityHttp`] keeps the status so such
//!   failures become retryable [`AuthError::Network`] errors.
//! - Entra says `authorization_declined` where RFC 8628 says `access_denied`; both are terminal
//!   in `oauth2`'s loop and both map to [`AuthError::SignInRequired`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use oauth2::basic::{
    BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AsyncHttpClient, EndpointNotSet, EndpointSet, ErrorResponse, ExtraDeviceAuthorizationFields,
    ExtraTokenFields, HttpClientError, HttpRequest, HttpResponse, RequestTokenError,
    StandardRevocableToken, StandardTokenResponse,
};
use serde::{Deserialize, Deserializer, Serialize};

use super::{AuthError, Secret};

/// The error body of Entra's token and devicecode endpoints, keeping `error_codes`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct EntraErrorResponse {
    /// OAuth error, e.g. `invalid_grant`, `authorization_pending`.
    pub error: String,
    /// Human text (`AADSTS700082: ...`). Logged for operators, never branched on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// Numeric AADSTS codes: what we branch on together with `error`.
    #[serde(
        default,
        deserialize_with = "lenient_codes",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub error_codes: Vec<u64>,
    /// Finer reason some replies add (`bad_token`, `consent_required`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suberror: Option<String>,
    /// Entra's trace id: quote it in a support case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Entra's correlation id: quote it in a support case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl fmt::Display for EntraErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error)?;
        for code in &self.error_codes {
            write!(f, " AADSTS{code}")?;
        }
        Ok(())
    }
}

impl ErrorResponse for EntraErrorResponse {}

/// Accepts `[70016]`, `["70016"]` or garbage (ignored): codes are a hint, not a contract.
fn lenient_codes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
    let raw = Option::<Vec<serde_json::Value>>::deserialize(deserializer)?.unwrap_or_default();
    Ok(raw
        .iter()
        .filter_map(|value| match value {
            serde_json::Value::Number(number) => number.as_u64(),
            serde_json::Value::String(text) => text.trim().parse().ok(),
            _ => None,
        })
        .collect())
}

/// Fields of Entra's token reply beyond RFC 6749.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct EntraTokenFields {
    /// OpenID Connect id token (when `openid` was requested): only read for the account name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<Secret>,
}

impl ExtraTokenFields for EntraTokenFields {}

pub(crate) type EntraTokenResponse = StandardTokenResponse<EntraTokenFields, BasicTokenType>;

/// Fields of Entra's device code reply beyond RFC 8628.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct EntraDeviceFields {
    /// Ready-made text telling the operator where to go and which code to enter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ExtraDeviceAuthorizationFields for EntraDeviceFields {}

/// An `oauth2` client typed for Entra, with the token and device authorization endpoints set.
pub(crate) type EntraClient = oauth2::Client<
    EntraErrorResponse,
    EntraTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Status and body of the last non-200 reply from the authority.
pub(crate) type Failure = (u16, Vec<u8>);

/// The HTTP client handed to `oauth2`: reqwest without redirects, remembering the last failure.
pub(crate) struct AuthorityHttp {
    client: reqwest::Client,
    last_failure: Mutex<Option<Failure>>,
}

impl AuthorityHttp {
    pub(crate) fn new() -> Result<Self, AuthError> {
        let client = reqwest::Client::builder()
            // A redirect from a token endpoint is never legitimate and would carry form bodies
            // with refresh tokens to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("hunter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| {
                AuthError::Protocol(format!("cannot build an http client: {error}"))
            })?;
        Ok(Self {
            client,
            last_failure: Mutex::new(None),
        })
    }

    /// The last non-200 reply, if the last call produced one.
    pub(crate) fn take_failure(&self) -> Option<Failure> {
        self.last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl<'c> AsyncHttpClient<'c> for AuthorityHttp {
    type Error = HttpClientError<reqwest::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let outcome =
                <reqwest::Client as AsyncHttpClient<'_>>::call(&self.client, request).await;
            let failure = match &outcome {
                // Only failure bodies are kept: a 200 body holds tokens.
                Ok(response) if !response.status().is_success() => {
                    Some((response.status().as_u16(), response.body().clone()))
                }
                _ => None,
            };
            *self
                .last_failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = failure;
            outcome
        })
    }
}

/// Turns any `oauth2` request error into an [`AuthError`], using the remembered failure body
/// for `error_codes` and the HTTP status.
pub(crate) fn classify<TE: ErrorResponse + Serialize + 'static>(
    error: RequestTokenError<HttpClientError<reqwest::Error>, TE>,
    failure: Option<Failure>,
) -> AuthError {
    let status = failure.as_ref().map(|(status, _)| *status);
    match error {
        RequestTokenError::ServerResponse(response) => {
            let parsed = serde_json::to_value(&response)
                .ok()
                .and_then(|value| serde_json::from_value::<EntraErrorResponse>(value).ok());
            let recorded = failure
                .as_ref()
                .and_then(|(_, body)| serde_json::from_slice::<EntraErrorResponse>(body).ok());
            let entra = match (parsed, recorded) {
                // Same error as the recorded body: the recorded one still has its codes.
                (Some(parsed), Some(recorded)) if parsed.error == recorded.error => recorded,
                // oauth2 made the error itself (its own expiry check): trust it.
                (Some(parsed), _) => parsed,
                (None, Some(recorded)) => recorded,
                (None, None) => return AuthError::Protocol("unreadable error reply".to_owned()),
            };
            from_entra(&entra, status)
        }
        RequestTokenError::Request(error) => AuthError::Network(describe_http_error(&error)),
        RequestTokenError::Parse(error, _body) => match status {
            Some(status) if is_transient(status) => {
                AuthError::Network(format!("login authority answered http {status}"))
            }
            Some(status) => AuthError::Protocol(format!(
                "login authority answered http {status} with a body that is not an oauth error"
            )),
            // A 200 that did not parse: name the field, never quote the body (it holds tokens).
            None => AuthError::Protocol(format!(
                "token reply could not be read at `{}`",
                error.path()
            )),
        },
        RequestTokenError::Other(message) => match status {
            Some(status) if is_transient(status) => {
                AuthError::Network(format!("login authority answered http {status}"))
            }
            _ => AuthError::Protocol(message),
        },
    }
}

fn is_transient(status: u16) -> bool {
    status == 429 || status >= 500
}

fn describe_http_error(error: &HttpClientError<reqwest::Error>) -> String {
    match error {
        HttpClientError::Reqwest(error) if error.is_timeout() => {
            "login authority timed out".to_owned()
        }
        HttpClientError::Reqwest(error) => {
            let mut text = format!("login authority unreachable: {error}");
            let mut source = std::error::Error::source(error.as_ref());
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
        other => format!("login authority request failed: {other}"),
    }
}

/// Maps an Entra error reply to an [`AuthError`], branching on `error` and `error_codes` only.
pub(crate) fn from_entra(response: &EntraErrorResponse, status: Option<u16>) -> AuthError {
    if response.error == "temporarily_unavailable" || status.is_some_and(is_transient) {
        return AuthError::Network(format!(
            "login authority unavailable: {response} (http {})",
            status.map_or_else(|| "?".to_owned(), |status| status.to_string())
        ));
    }
    if matches!(
        response.error.as_str(),
        "authorization_pending" | "slow_down"
    ) {
        return AuthError::Protocol(format!("unexpected {} outside polling", response.error));
    }
    let code = response
        .error_codes
        .first()
        .map_or_else(|| response.error.clone(), |code| format!("AADSTS{code}"));
    AuthError::SignInRequired {
        code,
        hint: hint(&response.error, &response.error_codes).to_owned(),
    }
}

fn hint(error: &str, codes: &[u64]) -> &'static str {
    let has = |code: u64| codes.contains(&code);
    if has(700082) {
        "the refresh token expired after 90 days without use: run `hunter auth login`"
    } else if has(65001) || error == "consent_required" {
        "the app has no consent for the Microsoft Partner API: grant admin consent (Entra: \
         Enterprise applications, the app, Permissions), then run `hunter auth login`"
    } else if has(7000218) {
        "enable Allow public client flows on the app registration (Authentication), or configure \
         a client secret"
    } else if has(7000215) || has(7000222) {
        "the client secret is invalid or expired: configure a current secret"
    } else if has(50076) || has(50079) || error == "interaction_required" {
        "multi-factor sign-in is required: run `hunter auth login`"
    } else if has(500011) || error == "invalid_resource" {
        "the Microsoft Partner API is not present in this tenant: check the tenant id and the \
         app's API permissions"
    } else if has(90002) || has(900023) {
        "the tenant was not found: check the tenant id"
    } else if has(700016) {
        "the application was not found in the tenant: check the client id"
    } else if error == "authorization_declined" || error == "access_denied" {
        "the sign-in was declined: run `hunter auth login` again"
    } else if error == "expired_token" {
        "the device code expired before the sign-in finished: run `hunter auth login` again and \
         sign in promptly"
    } else if error == "bad_verification_code" {
        "the login authority did not recognise the device code: run `hunter auth login` again"
    } else if error == "invalid_client" {
        "the login authority rejected the client: check the client id and secret"
    } else if error == "invalid_scope" {
        "the scope was rejected: use `https://api.partner.microsoft.com/.default offline_access`"
    } else {
        "the stored sign-in is no longer valid: run `hunter auth login`"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entra(error: &str, codes: &[u64]) -> EntraErrorResponse {
        EntraErrorResponse {
            error: error.to_owned(),
            error_description: Some("AADSTS0: any text, never branched on".to_owned()),
            error_codes: codes.to_vec(),
            suberror: None,
            trace_id: None,
            correlation_id: None,
        }
    }

    #[test]
    fn keeps_error_codes_numbers_or_strings() {
        let body = r#"{"error":"invalid_grant","error_description":"AADSTS700082: x",
            "error_codes":[700082, "65001", null],"timestamp":"2024-01-01 00:00:00Z"}"#;
        let parsed: EntraErrorResponse = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.error_codes, vec![700082, 65001]);
    }

    #[test]
    fn maps_codes_not_descriptions() {
        let cases = [
            ("invalid_grant", vec![700082], "AADSTS700082", "90 days"),
            (
                "invalid_grant",
                vec![65001],
                "AADSTS65001",
                "grant admin consent",
            ),
            (
                "consent_required",
                vec![],
                "consent_required",
                "grant admin consent",
            ),
            (
                "invalid_client",
                vec![7000218],
                "AADSTS7000218",
                "Allow public client flows",
            ),
            (
                "invalid_grant",
                vec![],
                "invalid_grant",
                "hunter auth login",
            ),
            (
                "authorization_declined",
                vec![],
                "authorization_declined",
                "declined",
            ),
            (
                "expired_token",
                vec![],
                "expired_token",
                "device code expired",
            ),
        ];
        for (error, codes, want_code, want_hint) in cases {
            match from_entra(&entra(error, &codes), Some(400)) {
                AuthError::SignInRequired { code, hint } => {
                    assert_eq!(code, want_code);
                    assert!(hint.contains(want_hint), "{hint}");
                }
                other => panic!("{error}: {other:?}"),
            }
        }
    }

    #[test]
    fn device_poll_errors_get_their_codes_from_the_recorded_body() {
        use oauth2::basic::BasicErrorResponseType;
        use oauth2::{DeviceCodeErrorResponse, DeviceCodeErrorResponseType};
        type PollError =
            RequestTokenError<HttpClientError<reqwest::Error>, DeviceCodeErrorResponse>;

        // oauth2's poll loop drops error_codes; the recorded body still has them.
        let from_server: PollError =
            RequestTokenError::ServerResponse(DeviceCodeErrorResponse::new(
                DeviceCodeErrorResponseType::Basic(BasicErrorResponseType::InvalidClient),
                Some("AADSTS7000218: ...".to_owned()),
                None,
            ));
        let body = br#"{"error":"invalid_client","error_codes":[7000218]}"#.to_vec();
        match classify(from_server, Some((401, body))) {
            AuthError::SignInRequired { code, hint } => {
                assert_eq!(code, "AADSTS7000218");
                assert!(hint.contains("Allow public client flows"), "{hint}");
            }
            other => panic!("{other:?}"),
        }

        // oauth2's own expiry check: the last recorded body (pending) must not win.
        let expired: PollError = RequestTokenError::ServerResponse(DeviceCodeErrorResponse::new(
            DeviceCodeErrorResponseType::ExpiredToken,
            None,
            None,
        ));
        let pending = br#"{"error":"authorization_pending","error_codes":[70016]}"#.to_vec();
        match classify(expired, Some((400, pending))) {
            AuthError::SignInRequired { code, .. } => assert_eq!(code, "expired_token"),
            other => panic!("{other:?}"),
        }

        // A 503 with an empty body is not an OAuth error: retry later.
        let empty: PollError =
            RequestTokenError::Other("server returned empty error response".to_owned());
        assert!(classify(empty, Some((503, Vec::new()))).is_retryable());
    }

    #[test]
    fn server_failures_are_retryable() {
        assert!(from_entra(&entra("server_error", &[]), Some(503)).is_retryable());
        assert!(from_entra(&entra("temporarily_unavailable", &[]), Some(400)).is_retryable());
        assert!(!from_entra(&entra("invalid_grant", &[700082]), Some(400)).is_retryable());
    }
}
