use std::collections::HashSet;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;

use super::*;
use crate::auth::{AuthError, Secret, TokenCacheFile};
use crate::test_support::{RecordingSleep, Sim, count};
use hunter_partner_center_simulator::faults::FaultSpec;
use hunter_partner_center_simulator::generate_referrals;

/// (updatedDateTime instant, id) of each referral, in the order the API must serve them.
fn expected_order(referrals: &[Value]) -> Vec<(OffsetDateTime, String)> {
    let mut keys: Vec<_> = referrals
        .iter()
        .map(|referral| {
            let updated = referral["updatedDateTime"].as_str().unwrap();
            (
                OffsetDateTime::parse(updated, &Rfc3339).unwrap(),
                referral["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    keys.sort();
    keys
}

fn keys_of(items: &[Box<RawValue>]) -> Vec<(OffsetDateTime, String)> {
    items
        .iter()
        .map(|raw| {
            let value: Value = serde_json::from_str(raw.get()).unwrap();
            (
                OffsetDateTime::parse(value["updatedDateTime"].as_str().unwrap(), &Rfc3339)
                    .unwrap(),
                value["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Follows every page; returns the items and the number of pages.
async fn all_pages(
    client: &PartnerCenterClient,
    since: Option<OffsetDateTime>,
) -> (Vec<Box<RawValue>>, usize) {
    let mut page = client.first_page(since).await.unwrap();
    let mut items = std::mem::take(&mut page.items);
    let mut pages = 1;
    while let Some(link) = page.next_link.take() {
        page = client.next_page(&link).await.unwrap();
        items.append(&mut page.items);
        pages += 1;
        assert!(pages < 1000, "paging does not end");
    }
    (items, pages)
}

async fn client_for(sim: &Sim, page_size: u32) -> (PartnerCenterClient, Arc<RecordingSleep>) {
    let (settings, _) = sim.sign_in().await;
    let tokens = Arc::new(TokenProvider::new(settings));
    let sleep = RecordingSleep::shared();
    let client = PartnerCenterClient::new(sim.client_settings(page_size), tokens)
        .unwrap()
        .with_sleep(sleep.clone());
    (client, sleep)
}

#[tokio::test]
async fn pages_through_every_referral_once_in_order() {
    let referrals = generate_referrals(250, 11);
    let sim = Sim::start(&referrals, |_| {}).await;
    let (client, sleep) = client_for(&sim, 40).await;

    let (items, pages) = all_pages(&client, None).await;
    assert_eq!(pages, 7, "250 referrals in pages of 40");
    let keys = keys_of(&items);
    assert_eq!(keys, expected_order(&referrals));
    let distinct: HashSet<_> = keys.iter().map(|(_, id)| id).collect();
    assert_eq!(distinct.len(), 250);
    assert!(
        sleep.delays.lock().unwrap().is_empty(),
        "no retries without faults"
    );

    // Items are the file's JSON verbatim.
    let by_id: std::collections::HashMap<_, _> = referrals
        .iter()
        .map(|referral| (referral["id"].as_str().unwrap(), referral))
        .collect();
    for raw in &items {
        let value: Value = serde_json::from_str(raw.get()).unwrap();
        assert_eq!(&&value, by_id.get(value["id"].as_str().unwrap()).unwrap());
    }
}

#[tokio::test]
async fn gets_everything_despite_throttling_errors_and_truncated_bodies() {
    let referrals = generate_referrals(250, 12);
    let sim = Sim::start(&referrals, |options| {
        options.faults = "429:0.2,500:0.1,truncate:0.1".parse::<FaultSpec>().unwrap();
    })
    .await;
    let (client, sleep) = client_for(&sim, 40).await;

    let (items, _) = all_pages(&client, None).await;
    assert_eq!(keys_of(&items), expected_order(&referrals));

    let stats = sim.stats().await;
    let faults = &stats["faults"];
    assert!(faults["429"].as_u64().unwrap_or(0) > 0, "{stats}");
    assert!(
        faults["500"].as_u64().unwrap_or(0) + faults["truncate"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    let delays = sleep.delays.lock().unwrap().clone();
    let throttled = count(&stats, "referrals_list", 429) as usize;
    // Each 429 carried Retry-After: 1, which wins over backoff.
    assert_eq!(
        delays
            .iter()
            .filter(|delay| **delay == Duration::from_secs(1))
            .count(),
        throttled,
        "{delays:?}"
    );
    assert!(delays.iter().all(|delay| *delay <= Duration::from_secs(5)));
}

#[tokio::test]
async fn filter_ge_returns_exactly_the_later_referrals() {
    let referrals = generate_referrals(120, 13);
    let sim = Sim::start(&referrals, |_| {}).await;
    let (client, _) = client_for(&sim, 25).await;

    let order = expected_order(&referrals);
    let since = order[60].0;
    let (items, _) = all_pages(&client, Some(since)).await;
    let want: Vec<_> = order.into_iter().filter(|(at, _)| *at >= since).collect();
    assert!(want.len() >= 60);
    assert_eq!(keys_of(&items), want);
}

#[tokio::test]
async fn a_401_refreshes_once_and_retries() {
    let sim = Sim::start(&generate_referrals(5, 14), |_| {}).await;
    let (settings, login) = sim.sign_in().await;
    // A token the API does not know, that the cache believes is good for an hour.
    let mut tampered = login.clone();
    tampered.access_token = Secret::new("revoked-token");
    tampered.save(&settings.token_cache).unwrap();
    let tokens = Arc::new(TokenProvider::new(settings.clone()));
    let client = PartnerCenterClient::new(sim.client_settings(10), tokens).unwrap();

    let page = client.first_page(None).await.unwrap();
    assert_eq!(page.items.len(), 5);
    let stats = sim.stats().await;
    assert_eq!(count(&stats, "referrals_list", 401), 1);
    assert_eq!(count(&stats, "referrals_list", 200), 1);
    assert_eq!(count(&stats, "token", 200), 2, "login and one refresh");
    let cache = TokenCacheFile::load(&settings.token_cache)
        .unwrap()
        .unwrap();
    assert_ne!(cache.refresh_token, login.refresh_token);
}

#[tokio::test]
async fn get_referral_returns_the_exact_text_or_none() {
    let referrals = generate_referrals(5, 15);
    let sim = Sim::start(&referrals, |_| {}).await;
    let (client, _) = client_for(&sim, 10).await;

    let id = referrals[3]["id"].as_str().unwrap();
    let raw = client.get_referral(id).await.unwrap().unwrap();
    let mut value: Value = serde_json::from_str(raw.get()).unwrap();
    assert_eq!(
        value["@odata.context"],
        format!("http://{}/v1.0/$metadata#Referrals/$entity", sim.addr)
    );
    value.as_object_mut().unwrap().remove("@odata.context");
    assert_eq!(value, referrals[3]);

    assert!(client.get_referral("no-such-id").await.unwrap().is_none());
    for odd in [" ", "../referrals", "..", "a b", &"x".repeat(200)] {
        assert!(
            matches!(client.get_referral(odd).await, Err(ClientError::Invalid(_))),
            "{odd:?} was requested"
        );
    }
}

#[tokio::test]
async fn a_body_over_the_cap_is_a_decode_error_naming_the_cap_whether_announced_or_not() {
    let referrals = generate_referrals(40, 17);
    let sim = Sim::start(&referrals, |_| {}).await;
    let (settings, _) = sim.sign_in().await;
    let tokens = Arc::new(TokenProvider::new(settings));
    let mut client_settings = sim.client_settings(40);
    // A page of 40 generated referrals is tens of kB; 4 kB cannot hold it.
    client_settings.max_body_bytes = 4096;
    let client = PartnerCenterClient::new(client_settings, tokens.clone())
        .unwrap()
        .with_sleep(RecordingSleep::shared());
    let over_cap = |error: &ClientError| {
        matches!(error, ClientError::Decode { message, truncated: false }
            if message.contains("cap of 4096 bytes") && message.contains("HUNTER_PARTNER_CENTER_PAGE_SIZE"))
    };
    // With a Content-Length (a plain reply): refused before reading, not retried.
    let error = client.first_page(None).await.unwrap_err();
    assert!(over_cap(&error), "{error:?}");
    assert!(!error.is_retryable());
    assert!(
        error
            .to_string()
            .starts_with("partner center reply could not be decoded")
    );
    let stats = sim.stats().await;
    assert_eq!(count(&stats, "referrals_list", 200), 1, "{stats}");

    // Streamed without a Content-Length (the slow fault): stops reading once past the cap.
    reqwest::Client::new()
        .post(sim.url("/_simulator/faults?spec=slow:1"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let error = client.first_page(None).await.unwrap_err();
    assert!(over_cap(&error), "{error:?}");

    // The same page under a cap that holds it: read whole.
    let mut roomy = sim.client_settings(40);
    roomy.max_body_bytes = 1024 * 1024;
    let client = PartnerCenterClient::new(roomy, tokens).unwrap();
    assert_eq!(client.first_page(None).await.unwrap().items.len(), 40);
}

#[test]
fn the_default_cap_holds_a_full_page_of_the_largest_referrals() {
    let largest_page = 100 * Referral::MAX_JSON_BYTES;
    assert!(ClientSettings::default().max_body_bytes > largest_page);
    assert_eq!(ClientSettings::body_cap(10), ClientSettings::body_cap(100));
    assert!(ClientSettings::body_cap(1000) > 1000 * Referral::MAX_JSON_BYTES);
}

#[tokio::test]
async fn a_404_next_link_is_retried_on_the_collection_url() {
    let sim = Sim::start(&generate_referrals(30, 16), |_| {}).await;
    let (client, _) = client_for(&sim, 10).await;
    let first = client.first_page(None).await.unwrap();
    // The docs' shape: no /engagements in the path.
    let link = first
        .next_link
        .unwrap()
        .replace("/v1.0/engagements/referrals", "/v1.0/referrals");
    let second = client.next_page(&link).await.unwrap();
    assert_eq!(second.items.len(), 10);
    assert!(second.next_link.is_some());
    let stats = sim.stats().await;
    assert_eq!(count(&stats, "unknown", 404), 1);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_server_errors_stop_after_max_attempts() {
    let sim = Sim::start(&generate_referrals(3, 17), |options| {
        options.faults = "500:1".parse().unwrap();
    })
    .await;
    let (settings, _) = sim.sign_in().await;
    let tokens = Arc::new(TokenProvider::new(settings));
    let sleep = RecordingSleep::shared();
    let mut client_settings = sim.client_settings(10);
    client_settings.max_attempts = 3;
    let client = PartnerCenterClient::new(client_settings, tokens)
        .unwrap()
        .with_sleep(sleep.clone());

    let error = client.first_page(None).await.unwrap_err();
    assert!(
        matches!(error, ClientError::Server { status: 500, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(count(&sim.stats().await, "referrals_list", 500), 3);
    let delays = sleep.delays.lock().unwrap().clone();
    assert_eq!(delays.len(), 2);
    assert!(delays[0] <= Duration::from_millis(100) && delays[1] <= Duration::from_millis(200));
}

#[tokio::test]
async fn a_bad_filter_is_a_client_error_with_the_service_body() {
    let sim = Sim::start(&generate_referrals(3, 18), |_| {}).await;
    let (client, sleep) = client_for(&sim, 10).await;
    let link = sim.url("/v1.0/engagements/referrals?$filter=status%20eq%20'New'");
    let error = client.next_page(&link).await.unwrap_err();
    match &error {
        ClientError::Client {
            status: 400,
            body_snippet,
        } => assert!(body_snippet.contains("invalidRequest"), "{body_snippet}"),
        other => panic!("{other:?}"),
    }
    assert!(!error.is_retryable());
    assert_eq!(count(&sim.stats().await, "referrals_list", 400), 1);
    assert!(sleep.delays.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_slow_body_times_out() {
    let sim = Sim::start(&generate_referrals(3, 19), |options| {
        options.faults = "slow:1".parse().unwrap();
    })
    .await;
    let (settings, _) = sim.sign_in().await;
    let mut client_settings = sim.client_settings(10);
    client_settings.request_timeout = Duration::from_millis(300);
    client_settings.max_attempts = 2;
    let client = PartnerCenterClient::new(client_settings, Arc::new(TokenProvider::new(settings)))
        .unwrap()
        .with_sleep(RecordingSleep::shared());
    let error = client.first_page(None).await.unwrap_err();
    assert!(matches!(error, ClientError::Timeout), "{error:?}");
    assert!(error.is_retryable());
}

#[test]
fn first_page_url_matches_the_documented_query() {
    let settings = ClientSettings {
        page_size: 40,
        ..ClientSettings::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let tokens = Arc::new(TokenProvider::new(crate::auth::AuthSettings::new(
        "t",
        "c",
        dir.path().join("t.json"),
    )));
    let client = PartnerCenterClient::new(settings, tokens).unwrap();
    let since = time::macros::datetime!(2024-05-01 02:00:00.5 +02:00);
    assert_eq!(
        client.first_page_url(Some(since)).as_str(),
        "https://api.partner.microsoft.com/v1.0/engagements/referrals\
         ?$filter=updatedDateTime%20ge%202024-05-01T00%3A00%3A00.5000000Z\
         &$orderby=updatedDateTime%20asc&$top=40"
    );
    assert_eq!(
        client.first_page_url(None).as_str(),
        "https://api.partner.microsoft.com/v1.0/engagements/referrals\
         ?$orderby=updatedDateTime%20asc&$top=40"
    );
}

#[test]
fn next_links_are_upgraded_on_the_api_host_and_refused_elsewhere() {
    let api = Url::parse(DEFAULT_API_URL).unwrap();
    let docs_link = "http://api.partner.microsoft.com/v1.0/referrals?$skiptoken=ZXhh";
    let url = resolve_next_link(&api, docs_link).unwrap();
    assert_eq!(
        url.as_str(),
        "https://api.partner.microsoft.com/v1.0/referrals?$skiptoken=ZXhh"
    );
    assert_eq!(
        skiptoken_fallback(
            &Url::parse(&format!("{DEFAULT_API_URL}/referrals")).unwrap(),
            &url
        )
        .unwrap()
        .as_str(),
        "https://api.partner.microsoft.com/v1.0/engagements/referrals?$skiptoken=ZXhh"
    );
    // Relative links resolve against the api base.
    assert_eq!(
        resolve_next_link(&api, "/v1.0/engagements/referrals?$skiptoken=x")
            .unwrap()
            .as_str(),
        "https://api.partner.microsoft.com/v1.0/engagements/referrals?$skiptoken=x"
    );
    for bad in [
        "https://evil.example/v1.0/engagements/referrals?$skiptoken=x",
        "https://api.partner.microsoft.com.evil.example/x",
        "ftp://api.partner.microsoft.com/x",
    ] {
        assert!(
            matches!(
                resolve_next_link(&api, bad),
                Err(ClientError::NextLink { .. })
            ),
            "{bad}"
        );
    }
    // A plain-http api (the simulator) keeps its links as they are.
    let local = Url::parse("http://127.0.0.1:8080/v1.0/engagements").unwrap();
    assert_eq!(
        resolve_next_link(
            &local,
            "http://127.0.0.1:8080/v1.0/engagements/referrals?$skiptoken=a"
        )
        .unwrap()
        .as_str(),
        "http://127.0.0.1:8080/v1.0/engagements/referrals?$skiptoken=a"
    );
}

#[test]
fn odata_timestamps_have_seven_digits_in_utc() {
    assert_eq!(
        odata_timestamp(time::macros::datetime!(2024-05-01 00:00:00 UTC)),
        "2024-05-01T00:00:00.0000000Z"
    );
    assert_eq!(
        odata_timestamp(time::macros::datetime!(2024-05-01 10:00:00.123456789 +10:00)),
        "2024-05-01T00:00:00.1234567Z"
    );
}

#[test]
fn retryability_follows_the_table() {
    let retryable = [
        ClientError::RateLimited { retry_after: None },
        ClientError::Network("reset".into()),
        ClientError::Timeout,
        ClientError::Server {
            status: 503,
            retry_after: Some(Duration::from_secs(3)),
        },
        ClientError::Decode {
            message: String::new(),
            truncated: true,
        },
        ClientError::Auth(AuthError::Network("down".into())),
    ];
    for error in &retryable {
        assert!(error.is_retryable(), "{error:?}");
    }
    let final_ = [
        ClientError::Client {
            status: 403,
            body_snippet: String::new(),
        },
        ClientError::Server {
            status: 501,
            retry_after: None,
        },
        ClientError::Decode {
            message: String::new(),
            truncated: false,
        },
        ClientError::Auth(AuthError::SignInRequired {
            code: "invalid_grant".into(),
            hint: String::new(),
        }),
    ];
    for error in &final_ {
        assert!(!error.is_retryable(), "{error:?}");
    }
    assert_eq!(retryable[3].retry_after(), Some(Duration::from_secs(3)));
}

/// The binary runs these on spawned tasks: their futures must be `Send`.
#[test]
fn futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let settings = crate::auth::AuthSettings::new("t", "c", dir.path().join("t.json"));
    let tokens = Arc::new(TokenProvider::new(settings.clone()));
    assert_send(&tokens.access_token());
    assert_send(&tokens.refresh_now());
    assert_send(&crate::auth::login_with_device_code(&settings, |_| {}));
    let client = PartnerCenterClient::new(ClientSettings::default(), tokens).unwrap();
    assert_send(&client.first_page(None));
    assert_send(&client.next_page("x"));
    assert_send(&client.get_referral("x"));
    let options = hunter_partner_center_simulator::SimulatorOptions::new(
        dir.path().join("r.json"),
        "127.0.0.1:0".parse().unwrap(),
    );
    assert_send(&hunter_partner_center_simulator::bind(options));
}

#[tokio::test]
async fn a_call_that_gave_up_on_retry_after_makes_the_next_call_wait_it_out() {
    let sim = Sim::start(&generate_referrals(3, 18), |_| {}).await;
    let (settings, _) = sim.sign_in().await;
    let tokens = Arc::new(TokenProvider::new(settings));
    let sleep = RecordingSleep::shared();
    let mut client_settings = sim.client_settings(10);
    client_settings.max_attempts = 2;
    let client = PartnerCenterClient::new(client_settings, tokens)
        .unwrap()
        .with_sleep(sleep.clone());
    let faults = |query: &str| {
        let url = sim.url(&format!("/_simulator/faults?{query}"));
        async move {
            let response = reqwest::Client::new().post(url).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200);
        }
    };
    let delays = || sleep.delays.lock().unwrap().clone();
    let seven = Duration::from_secs(7);
    let almost_seven = |delay: &Duration| *delay > Duration::from_secs(6) && *delay <= seven;

    faults("spec=429:1&retry_after=7").await;
    let error = client.first_page(None).await.unwrap_err();
    assert_eq!(error.retry_after(), Some(seven), "{error:?}");
    assert_eq!(delays(), [seven], "one retry, after the server's 7 s");

    // A new call right after the one that gave up first waits out the rest of the 7 s (the
    // sleep is fake, so nearly all of it is left), then tries its own attempts.
    client.first_page(None).await.unwrap_err();
    let after_second = delays();
    assert_eq!(after_second.len(), 3, "{after_second:?}");
    assert!(almost_seven(&after_second[1]), "{after_second:?}");
    assert_eq!(after_second[2], seven);
    assert_eq!(count(&sim.stats().await, "referrals_list", 429), 4);

    // The storm is over: the next call still waits first, then succeeds; the one after it has
    // nothing left to wait for.
    faults("spec=").await;
    assert_eq!(client.first_page(None).await.unwrap().items.len(), 3);
    let after_third = delays();
    assert_eq!(after_third.len(), 4, "{after_third:?}");
    assert!(almost_seven(&after_third[3]), "{after_third:?}");
    assert_eq!(client.first_page(None).await.unwrap().items.len(), 3);
    assert_eq!(delays().len(), 4, "no wait after a success");

    // Errors without a Retry-After leave nothing to wait for.
    faults("spec=500:1").await;
    client.first_page(None).await.unwrap_err();
    faults("spec=").await;
    let before = delays().len();
    assert_eq!(client.first_page(None).await.unwrap().items.len(), 3);
    assert_eq!(delays().len(), before);
}

/// PATCH against the simulator: applied with the new eTag returned, a stale eTag is 412 and
/// changes nothing, a forbidden user is 403, and 429/503 are retried to success.
#[tokio::test]
async fn patch_applies_refuses_stale_etags_and_retries_throttling() {
    let referrals = generate_referrals(5, 21);
    let mut new_one = referrals[0].clone();
    new_one["status"] = "New".into();
    new_one["substatus"] = "Received".into();
    new_one["eTag"] = "\"v1\"".into();
    let id = new_one["id"].as_str().unwrap().to_owned();
    let sim = Sim::start(&[new_one], |_| {}).await;
    let (client, sleep) = client_for(&sim, 40).await;
    let accept = serde_json::json!([
        {"op": "replace", "path": "/status", "value": "Active"},
        {"op": "replace", "path": "/substatus", "value": "Accepted"},
    ]);

    // A stale eTag: 412, nothing changes.
    let stale = client
        .patch_referral(&id, &accept, Some("\"v0\""))
        .await
        .unwrap_err();
    assert_eq!(stale.status(), Some(412), "{stale}");
    let current: Value =
        serde_json::from_str(client.get_referral(&id).await.unwrap().unwrap().get()).unwrap();
    assert_eq!(current["status"], "New");

    // Throttled and failing first: retried, then applied once.
    reqwest::Client::new()
        .post(sim.url("/_simulator/faults?spec=429:0.5,503:0.3&retry_after=0"))
        .send()
        .await
        .unwrap();
    let patched = client
        .patch_referral(&id, &accept, Some("\"v1\""))
        .await
        .unwrap();
    reqwest::Client::new()
        .post(sim.url("/_simulator/faults"))
        .send()
        .await
        .unwrap();
    let value: Value = serde_json::from_str(patched.referral.unwrap().get()).unwrap();
    assert_eq!(value["status"], "Active");
    assert_ne!(value["eTag"], "\"v1\"");
    assert!(patched.request_id.is_some());
    let stats = sim.stats().await;
    assert_eq!(count(&stats, "referral_patch", 200), 1);
    let failed = count(&stats, "referral_patch", 429) + count(&stats, "referral_patch", 503);
    assert_eq!(sleep.delays.lock().unwrap().len() as u64, failed);

    // Active cannot go back to New: a 400 with the service's message.
    let back = serde_json::json!([
        {"op": "replace", "path": "/status", "value": "New"},
        {"op": "replace", "path": "/substatus", "value": "Received"},
    ]);
    let refused = client
        .patch_referral(&id, &back, value["eTag"].as_str())
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(400));
    assert!(
        refused.to_string().contains("invalidStatusTransition"),
        "{refused}"
    );

    // A Referrals User without write rights: 403, not retried.
    let switched = reqwest::Client::new()
        .post(sim.url("/_simulator/write-access?allowed=false"))
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status(), 200, "{:?}", switched.text().await);
    let forbidden = client
        .patch_referral(&id, &serde_json::json!([]), None)
        .await
        .unwrap_err();
    assert_eq!(forbidden.status(), Some(403));
    assert!(!forbidden.is_retryable());
}
