use std::io::Write;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use super::*;
use crate::client::PartnerCenterClient;
use crate::test_support::{CLIENT_ID, Sim, TENANT, count};
use hunter_partner_center_simulator::generate_referrals;

/// Collects every log line (all targets, TRACE) written on this thread.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn assert_no_secret(haystack: &str, cache: &TokenCacheFile, what: &str) {
    for secret in [cache.access_token.expose(), cache.refresh_token.expose()] {
        assert!(!secret.is_empty());
        assert!(!haystack.contains(secret), "{what} contains a token");
    }
}

#[tokio::test]
async fn device_code_login_writes_a_private_cache_and_never_prints_tokens() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Callsites first hit by other tests' threads may have cached "no subscriber wants this".
    tracing::callsite::rebuild_interest_cache();

    let sim = Sim::start(&[], |_| {}).await;
    let settings = sim.auth_settings();
    let mut prompts = Vec::new();
    let cache = login_with_device_code(&settings, |prompt| prompts.push(prompt.clone()))
        .await
        .unwrap();

    // The prompt came once, with the simulator's page and a code.
    assert_eq!(prompts.len(), 1);
    let prompt = &prompts[0];
    assert_eq!(prompt.verification_uri, sim.url("/devicelogin"));
    assert!(prompt.message.contains(&prompt.user_code));
    assert_eq!(prompt.expires_in, Duration::from_secs(900));

    // The cache: what was returned, private, with the account from the id token.
    assert_eq!(cache.tenant, TENANT);
    assert_eq!(cache.client_id, CLIENT_ID);
    assert_eq!(cache.scope, DEFAULT_SCOPE);
    assert_eq!(cache.account.as_deref(), Some("demo@simulator.local"));
    assert!(cache.access_token_expires_at > OffsetDateTime::now_utc() + Duration::from_secs(3000));
    assert_eq!(
        TokenCacheFile::load(&settings.token_cache).unwrap(),
        Some(cache.clone())
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&settings.token_cache)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Polled twice: authorization_pending, then approved.
    let stats = sim.stats().await;
    assert_eq!(count(&stats, "devicecode", 200), 1);
    assert_eq!(count(&stats, "token", 400), 1);
    assert_eq!(count(&stats, "token", 200), 1);

    // The tokens appear nowhere but in the file.
    assert_no_secret(&logs.text(), &cache, "the log");
    // (Whether anything was captured depends on tracing's per-callsite interest cache, which
    // tests running in parallel race; `tests/e2e/source.rs` checks the real processes' logs.)
    assert_no_secret(
        &format!("{prompt:?} {}", prompt.message),
        &cache,
        "the prompt",
    );
    assert_no_secret(&format!("{cache:?}"), &cache, "Debug of the cache");
    let status = auth_status(&settings).unwrap();
    assert_no_secret(&format!("{status:?}"), &cache, "the status");
    assert!(!status.needs_login);
    assert!(status.verdict.starts_with("ok"), "{}", status.verdict);
    assert!(
        std::fs::read_to_string(&settings.token_cache)
            .unwrap()
            .contains(cache.refresh_token.expose())
    );
}

#[tokio::test]
async fn refreshes_near_expiry_and_rotates_the_refresh_token_in_the_file() {
    // 60 s tokens are always inside the 5 minute refresh margin.
    let sim = Sim::start(&generate_referrals(3, 1), |options| {
        options.access_token_lifetime = Duration::from_secs(60);
    })
    .await;
    let (settings, login) = sim.sign_in().await;
    let provider = Arc::new(TokenProvider::new(settings.clone()));

    let first = provider.access_token().await.unwrap();
    assert_ne!(first, login.access_token);
    let after_first = TokenCacheFile::load(&settings.token_cache)
        .unwrap()
        .unwrap();
    assert_ne!(after_first.refresh_token, login.refresh_token, "rotated");
    assert_eq!(
        after_first.access_token, first,
        "stored before it was returned"
    );
    assert!(after_first.refresh_token_obtained_at >= login.refresh_token_obtained_at);
    assert_eq!(after_first.account.as_deref(), Some("demo@simulator.local"));

    let second = provider.access_token().await.unwrap();
    assert_ne!(second, first);
    let after_second = TokenCacheFile::load(&settings.token_cache)
        .unwrap()
        .unwrap();
    assert_ne!(after_second.refresh_token, after_first.refresh_token);

    // The refreshed token works against the API.
    let client = PartnerCenterClient::new(sim.client_settings(10), provider.clone()).unwrap();
    assert_eq!(client.first_page(None).await.unwrap().items.len(), 3);
}

#[tokio::test]
async fn a_fresh_token_is_not_refreshed_and_concurrent_callers_share_one_refresh() {
    let sim = Sim::start(&[], |_| {}).await;
    let (settings, login) = sim.sign_in().await;
    let provider = Arc::new(TokenProvider::new(settings.clone()));
    assert_eq!(provider.access_token().await.unwrap(), login.access_token);

    // Expire the cached access token; ten callers at once cause a single refresh.
    let mut expired = login.clone();
    expired.access_token_expires_at = OffsetDateTime::now_utc() - Duration::from_secs(1);
    expired.save(&settings.token_cache).unwrap();
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.access_token().await.unwrap() })
        })
        .collect();
    let mut tokens = Vec::new();
    for caller in callers {
        tokens.push(caller.await.unwrap());
    }
    assert!(tokens.iter().all(|token| *token == tokens[0]));
    assert_ne!(tokens[0], login.access_token);
    // One approval during login, one refresh.
    assert_eq!(count(&sim.stats().await, "token", 200), 2);
}

#[tokio::test]
async fn an_unknown_refresh_token_needs_a_new_sign_in() {
    let sim = Sim::start(&[], |_| {}).await;
    let settings = sim.auth_settings();
    let now = OffsetDateTime::now_utc();
    TokenCacheFile {
        tenant: TENANT.into(),
        client_id: CLIENT_ID.into(),
        scope: DEFAULT_SCOPE.into(),
        access_token: Secret::new("stale-access-token"),
        access_token_expires_at: now - Duration::from_secs(60),
        refresh_token: Secret::new("never-issued-refresh-token"),
        refresh_token_obtained_at: now - Duration::from_secs(86_400),
        account: None,
    }
    .save(&settings.token_cache)
    .unwrap();

    let provider = TokenProvider::new(settings);
    let error = provider.access_token().await.unwrap_err();
    match &error {
        AuthError::SignInRequired { code, hint } => {
            assert_eq!(code, "AADSTS700082");
            assert!(hint.contains("hunter auth login"), "{hint}");
        }
        other => panic!("expected SignInRequired, got {other:?}"),
    }
    assert!(!error.is_retryable());
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("never-issued-refresh-token"), "{shown}");
    assert!(!shown.contains("stale-access-token"), "{shown}");
    // refresh_now fails the same way.
    assert!(matches!(
        provider.refresh_now().await,
        Err(AuthError::SignInRequired { .. })
    ));
}

#[tokio::test]
async fn a_missing_cache_says_what_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let settings = AuthSettings::new(TENANT, CLIENT_ID, dir.path().join("none.json"));
    let error = TokenProvider::new(settings.clone())
        .access_token()
        .await
        .unwrap_err();
    assert!(matches!(error, AuthError::CacheMissing { .. }));
    assert!(
        error.to_string().contains("run `hunter auth login`"),
        "{error}"
    );
    assert!(matches!(
        auth_status(&settings),
        Err(AuthError::CacheMissing { .. })
    ));
}

#[tokio::test]
async fn an_unreachable_authority_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = AuthSettings::new(TENANT, CLIENT_ID, dir.path().join("tokens.json"));
    settings.authority_url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let error = login_with_device_code(&settings, |_| {}).await.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
}

#[test]
fn secrets_are_redacted() {
    let secret = Secret::new("hunter2");
    assert_eq!(format!("{secret}"), "[redacted]");
    assert_eq!(format!("{secret:?}"), "[redacted]");
    assert_eq!(secret.expose(), "hunter2");
    let mut settings = AuthSettings::new(TENANT, CLIENT_ID, PathBuf::from("t.json"));
    settings.client_secret = Some(secret);
    assert!(!format!("{settings:?}").contains("hunter2"));
}

#[test]
fn endpoints_keep_the_authority_path_and_encode_the_tenant() {
    let mut settings = AuthSettings::new("contoso.onmicrosoft.com", CLIENT_ID, "t.json".into());
    assert_eq!(
        settings.endpoint("token").unwrap().as_str(),
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    settings.authority_url = Url::parse("http://127.0.0.1:9/prefix/").unwrap();
    settings.tenant_id = "a/b".into();
    assert_eq!(
        settings.endpoint("devicecode").unwrap().as_str(),
        "http://127.0.0.1:9/prefix/a%2Fb/oauth2/v2.0/devicecode"
    );
}

#[test]
fn account_comes_from_preferred_username_or_upn() {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwt = |claims: &str| format!("e30.{}.sig", engine.encode(claims));
    assert_eq!(
        account_from_id_token(&jwt(r#"{"preferred_username":"a@b.example","upn":"x"}"#)),
        Some("a@b.example".into())
    );
    assert_eq!(
        account_from_id_token(&jwt(r#"{"upn":"u@b.example"}"#)),
        Some("u@b.example".into())
    );
    assert_eq!(account_from_id_token(&jwt(r#"{"sub":"x"}"#)), None);
    assert_eq!(account_from_id_token("not-a-jwt"), None);
    assert_eq!(account_from_id_token("a.!!!.c"), None);
}

#[test]
fn status_verdicts() {
    let settings = AuthSettings::new(TENANT, CLIENT_ID, "t.json".into());
    let now = OffsetDateTime::now_utc();
    let cache = |access_left: i64, refresh_age_days: i64| TokenCacheFile {
        tenant: TENANT.into(),
        client_id: CLIENT_ID.into(),
        scope: DEFAULT_SCOPE.into(),
        access_token: Secret::new("a"),
        access_token_expires_at: now + time::Duration::seconds(access_left),
        refresh_token: Secret::new("r"),
        refresh_token_obtained_at: now - time::Duration::days(refresh_age_days),
        account: Some("ops@contoso.example".into()),
    };
    let ok = AuthStatus::judge(&settings, &cache(3000, 1), now);
    assert!(!ok.needs_login && ok.verdict.starts_with("ok: access token valid for 50"));
    assert_eq!(ok.refresh_token_age.as_secs(), 86_400);
    let expired = AuthStatus::judge(&settings, &cache(-10, 1), now);
    assert!(!expired.needs_login && expired.verdict.contains("refreshed on next use"));
    let ageing = AuthStatus::judge(&settings, &cache(3000, 85), now);
    assert!(!ageing.needs_login && ageing.verdict.starts_with("warning"));
    let dead = AuthStatus::judge(&settings, &cache(3000, 91), now);
    assert!(dead.needs_login && dead.verdict.contains("hunter auth login"));
    let other = AuthSettings::new("fabrikam.example", CLIENT_ID, "t.json".into());
    assert!(AuthStatus::judge(&other, &cache(3000, 1), now).needs_login);
}
