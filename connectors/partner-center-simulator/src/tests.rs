use serde_json::{Value, json};

use super::*;
use crate::test_support::{Sim, count};

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn token_request(sim: &Sim, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(sim.url("/contoso.example/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish(),
        )
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn health_auth_and_error_shapes() {
    let sim = Sim::start(&generate_referrals(3, 1), |_| {}).await;
    let (status, body) = get(&sim.url("/healthz"), None).await;
    assert_eq!((status, body), (200, json!("ok")));

    let list = sim.url("/v1.0/engagements/referrals");
    let (status, body) = get(&list, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthenticated");
    let (status, _) = get(&list, Some("made-up")).await;
    assert_eq!(status, 401);

    let (_, cache) = sim.sign_in().await;
    let token = cache.access_token.expose();
    let (status, body) = get(
        &format!("{list}?$filter=updatedDateTime%20ge%20soon"),
        Some(token),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalidRequest");
    assert_eq!(body["error"]["target"], "referral");
    assert!(body["error"]["innerError"]["message"].is_string());

    let (status, body) = get(&format!("{list}/nope"), Some(token)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "itemNotFound");

    let stats = sim.stats().await;
    assert_eq!(count(&stats, "referrals_list", 401), 2);
    assert_eq!(count(&stats, "referrals_list", 400), 1);
    assert_eq!(count(&stats, "referral_get", 404), 1);
}

#[tokio::test]
async fn list_shape_ordering_top_and_quoted_filters() {
    let referrals = generate_referrals(30, 2);
    let sim = Sim::start(&referrals, |options| options.page_size = 12).await;
    let (_, cache) = sim.sign_in().await;
    let token = Some(cache.access_token.expose());
    let list = sim.url("/v1.0/engagements/referrals");

    // Default $top is the page size; the reply has the OData envelope.
    let (status, body) = get(&list, token).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["@odata.context"],
        format!("http://{}/v1.0/$metadata#Referrals", sim.addr)
    );
    assert_eq!(body["@odata.count"], 12);
    assert_eq!(body["value"].as_array().unwrap().len(), 12);
    let next = body["@odata.nextLink"].as_str().unwrap();
    assert!(next.starts_with(&format!("{list}?$skiptoken=")), "{next}");

    // $top above the page size is capped; desc reverses the order.
    let (_, asc) = get(&format!("{list}?$top=500"), token).await;
    assert_eq!(asc["value"].as_array().unwrap().len(), 12);
    let (_, desc) = get(
        &format!("{list}?$orderby=updatedDateTime%20desc&$top=3"),
        token,
    )
    .await;
    let (_, last) = get(
        &format!("{list}?$orderby=updatedDateTime%20asc&$skip=27&$top=3"),
        token,
    )
    .await;
    let ids = |body: &Value| -> Vec<String> {
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut reversed = ids(&last);
    reversed.reverse();
    assert_eq!(ids(&desc), reversed);

    // Quoted and unquoted literals, ge and gt.
    let pivot = asc["value"][5]["updatedDateTime"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, unquoted) = get(
        &format!("{list}?$filter=updatedDateTime%20ge%20{pivot}&$top=12"),
        token,
    )
    .await;
    let (_, quoted) = get(
        &format!("{list}?$filter=updatedDateTime%20ge%20'{pivot}'&$top=12"),
        token,
    )
    .await;
    assert_eq!(ids(&unquoted), ids(&quoted));
    assert_eq!(ids(&unquoted)[0], ids(&asc)[5]);
    let (_, greater) = get(
        &format!("{list}?$filter=updatedDateTime%20gt%20{pivot}&$top=12"),
        token,
    )
    .await;
    assert!(!ids(&greater).contains(&ids(&asc)[5]));
}

#[tokio::test]
async fn rereads_the_file_when_it_changes() {
    let sim = Sim::start(&generate_referrals(4, 3), |_| {}).await;
    let (_, cache) = sim.sign_in().await;
    let token = Some(cache.access_token.expose());
    let list = sim.url("/v1.0/engagements/referrals");
    assert_eq!(
        get(&list, token).await.1["value"].as_array().unwrap().len(),
        4
    );

    let mut moved_on = generate_referrals(6, 4);
    moved_on[0]["unknownFutureField"] = json!({"kept": [1.50, "x"]});
    write_referrals(&sim.referrals_file, &moved_on).unwrap();
    let (_, body) = get(&list, token).await;
    assert_eq!(body["value"].as_array().unwrap().len(), 6);
    let id = moved_on[0]["id"].as_str().unwrap();
    let (status, one) = get(&format!("{list}/{id}"), token).await;
    assert_eq!(status, 200);
    assert_eq!(one["unknownFutureField"], json!({"kept": [1.50, "x"]}));

    // A broken file keeps the last good copy.
    std::fs::write(&sim.referrals_file, "[{").unwrap();
    assert_eq!(
        get(&list, token).await.1["value"].as_array().unwrap().len(),
        6
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_and_old_ones_stay_valid() {
    let sim = Sim::start(&[], |_| {}).await;
    let (_, cache) = sim.sign_in().await;
    let scope = hunter_partner_center::auth::DEFAULT_SCOPE;
    let old = cache.refresh_token.expose();
    let refresh = |token: &str| {
        [
            ("grant_type", "refresh_token"),
            ("client_id", crate::test_support::CLIENT_ID),
            ("refresh_token", token),
            ("scope", scope),
        ]
        .map(|(k, v)| (k, v.to_owned()))
    };
    let form = refresh(old);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, first) = token_request(&sim, &pairs).await;
    assert_eq!(status, 200);
    assert_eq!(first["token_type"], "Bearer");
    assert_ne!(first["refresh_token"].as_str().unwrap(), old);
    assert!(first["id_token"].as_str().unwrap().ends_with('.'));
    let (status, _) = token_request(&sim, &pairs).await;
    assert_eq!(status, 200, "the previous refresh token still works");

    let form = refresh("unknown");
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, error) = token_request(&sim, &pairs).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"], "invalid_grant");
    assert_eq!(error["error_codes"], json!([700082]));
    assert!(error["trace_id"].is_string() && error["correlation_id"].is_string());
}

#[tokio::test]
async fn expired_access_tokens_are_refused() {
    let sim = Sim::start(&generate_referrals(1, 5), |options| {
        options.access_token_lifetime = Duration::ZERO;
    })
    .await;
    let (_, cache) = sim.sign_in().await;
    let (status, _) = get(
        &sim.url("/v1.0/engagements/referrals"),
        Some(cache.access_token.expose()),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn bind_reports_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("referrals.json");
    let listen = "127.0.0.1:0".parse().unwrap();
    let error = bind(SimulatorOptions::new(file.clone(), listen))
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
    std::fs::write(&file, "{}").unwrap();
    let error = bind(SimulatorOptions::new(file, listen))
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
}

// ---- 401 fault, test controls, mutations, ordering ----

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc as StdArc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::test_support::RecordingSleep;
use hunter_partner_center::auth::TokenProvider;
use hunter_partner_center::client::PartnerCenterClient;

const EXPIRED_BODY: &str =
    r#"{"error":{"code":"unauthenticated","message":"access token expired"}}"#;

async fn post(url: &str) -> (u16, Value) {
    let response = reqwest::Client::new().post(url).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn get_text(url: &str, token: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// `GET /_simulator/referrals`.
async fn truth(sim: &Sim) -> Vec<Value> {
    let (status, body) = get(&sim.url("/_simulator/referrals"), None).await;
    assert_eq!(status, 200);
    body.as_array().unwrap().clone()
}

fn instant(referral: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(referral["updatedDateTime"].as_str().unwrap(), &Rfc3339).unwrap()
}

fn key(referral: &Value) -> (OffsetDateTime, String) {
    (
        instant(referral),
        referral["id"].as_str().unwrap().to_owned(),
    )
}

fn ids(values: &[Value]) -> Vec<String> {
    values
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn by_id(values: &[Value]) -> HashMap<String, Value> {
    values
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

fn refresh_form(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "refresh_token"),
        ("client_id", crate::test_support::CLIENT_ID),
        ("refresh_token", token),
        ("scope", hunter_partner_center::auth::DEFAULT_SCOPE),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

async fn refresh(sim: &Sim, token: &str) -> (u16, Value) {
    let form = refresh_form(token);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    token_request(sim, &pairs).await
}

fn token_count(stats: &Value, grant: &str, outcome: &str) -> u64 {
    stats["tokens"][grant][outcome].as_u64().unwrap_or(0)
}

async fn client(sim: &Sim, page_size: u32) -> PartnerCenterClient {
    let (settings, _) = sim.sign_in().await;
    PartnerCenterClient::new(
        sim.client_settings(page_size),
        StdArc::new(TokenProvider::new(settings)),
    )
    .unwrap()
    .with_sleep(RecordingSleep::shared())
}

async fn all_items(client: &PartnerCenterClient) -> Vec<Value> {
    let mut page = client.first_page(None).await.unwrap();
    let mut items: Vec<Value> = page
        .items
        .iter()
        .map(|raw| serde_json::from_str(raw.get()).unwrap())
        .collect();
    while let Some(link) = page.next_link.take() {
        page = client.next_page(&link).await.unwrap();
        items.extend(
            page.items
                .iter()
                .map(|raw| serde_json::from_str::<Value>(raw.get()).unwrap()),
        );
        assert!(items.len() < 100_000, "paging does not end");
    }
    items
}

#[tokio::test]
async fn fault_401_expires_the_token_for_good() {
    let sim = Sim::start(&generate_referrals(3, 20), |options| {
        options.faults = "401:0.3".parse().unwrap();
    })
    .await;
    let (_, cache) = sim.sign_in().await;
    let token = cache.access_token.expose();
    let list = sim.url("/v1.0/engagements/referrals");
    let mut hit = false;
    for _ in 0..50 {
        let (status, body) = get_text(&list, token).await;
        if status == 401 {
            assert_eq!(body, EXPIRED_BODY);
            hit = true;
            break;
        }
        assert_eq!(status, 200);
    }
    assert!(hit, "a 401 fault within 50 requests at rate 0.3");
    // The token stays expired: no fault is drawn for it any more, it is simply refused.
    for _ in 0..3 {
        assert_eq!(get_text(&list, token).await, (401, EXPIRED_BODY.to_owned()));
    }
    let stats = sim.stats().await;
    assert_eq!(stats["faults"]["401"], 1);
    assert_eq!(count(&stats, "referrals_list", 401), 4);
    // A refreshed token works: no 401 fault on a token's first request.
    for _ in 0..5 {
        let (status, fresh) = refresh(&sim, cache.refresh_token.expose()).await;
        assert_eq!(status, 200);
        let fresh = fresh["access_token"].as_str().unwrap();
        assert_eq!(get_text(&list, fresh).await.0, 200);
    }
}

#[tokio::test]
async fn client_recovers_from_401_faults_by_refreshing() {
    let referrals = generate_referrals(150, 21);
    let sim = Sim::start(&referrals, |options| {
        options.faults = "401:0.15,429:0.05".parse().unwrap();
    })
    .await;
    let client = client(&sim, 10).await;
    let items = all_items(&client).await;
    let mut want: Vec<_> = referrals.iter().map(key).collect();
    want.sort();
    assert_eq!(items.iter().map(key).collect::<Vec<_>>(), want);

    let stats = sim.stats().await;
    let faults = stats["faults"]["401"].as_u64().unwrap_or(0);
    assert!(faults >= 2, "{stats}");
    assert_eq!(count(&stats, "referrals_list", 401), faults);
    // One refresh per 401, plus the sign-in's device code grant.
    assert_eq!(
        token_count(&stats, "refresh_token", "ok"),
        faults,
        "{stats}"
    );
    assert_eq!(token_count(&stats, "device_code", "ok"), 1, "{stats}");
    assert_eq!(
        token_count(&stats, "device_code", "authorization_pending"),
        1,
        "{stats}"
    );
}

#[tokio::test]
async fn revoked_refresh_tokens_need_a_new_sign_in() {
    let sim = Sim::start(&generate_referrals(4, 22), |_| {}).await;
    let (_, first) = sim.sign_in().await;
    let (status, rotated) = refresh(&sim, first.refresh_token.expose()).await;
    assert_eq!(status, 200);
    let rotated = rotated["refresh_token"].as_str().unwrap().to_owned();

    let (status, body) = post(&sim.url("/_simulator/revoke-refresh-tokens")).await;
    assert_eq!((status, body), (200, json!({ "revokedRefreshTokens": 2 })));
    for token in [first.refresh_token.expose(), rotated.as_str()] {
        let (status, error) = refresh(&sim, token).await;
        assert_eq!(status, 400);
        assert_eq!(error["error"], "invalid_grant");
        assert_eq!(error["error_codes"], json!([700082]));
        let description = error["error_description"].as_str().unwrap();
        assert!(
            description
                .starts_with("AADSTS700082: The refresh token has expired due to inactivity"),
            "{description}"
        );
    }
    // Access tokens are not touched by a revocation.
    let list = sim.url("/v1.0/engagements/referrals");
    assert_eq!(get(&list, Some(first.access_token.expose())).await.0, 200);

    // A client whose access token is also gone cannot recover without a sign-in.
    let (settings, second) = sim.sign_in().await;
    let client = PartnerCenterClient::new(
        sim.client_settings(10),
        StdArc::new(TokenProvider::new(settings)),
    )
    .unwrap();
    assert_eq!(client.first_page(None).await.unwrap().items.len(), 4);
    post(&sim.url("/_simulator/revoke-refresh-tokens")).await;
    post(&sim.url("/_simulator/expire-access-tokens")).await;
    let error = client.first_page(None).await.unwrap_err();
    assert!(
        matches!(error, hunter_partner_center::client::ClientError::Auth(_)),
        "{error:?}"
    );
    assert_eq!(refresh(&sim, second.refresh_token.expose()).await.0, 400);

    // Tokens issued by a new device code sign-in work.
    let (settings, third) = sim.sign_in().await;
    assert_eq!(refresh(&sim, third.refresh_token.expose()).await.0, 200);
    let client = PartnerCenterClient::new(
        sim.client_settings(10),
        StdArc::new(TokenProvider::new(settings)),
    )
    .unwrap();
    assert_eq!(client.first_page(None).await.unwrap().items.len(), 4);

    let stats = sim.stats().await;
    assert_eq!(
        token_count(&stats, "refresh_token", "invalid_grant"),
        4,
        "{stats}"
    );
    assert_eq!(token_count(&stats, "refresh_token", "ok"), 2, "{stats}");
    assert_eq!(token_count(&stats, "device_code", "ok"), 3, "{stats}");
    assert_eq!(stats["admin"]["revoke_refresh_tokens"], 2);
}

#[tokio::test]
async fn expired_access_tokens_are_refreshed_once_by_the_client() {
    let sim = Sim::start(&generate_referrals(5, 23), |_| {}).await;
    let client = client(&sim, 10).await;
    assert_eq!(client.first_page(None).await.unwrap().items.len(), 5);
    let (_, cache) = sim.sign_in().await;
    let token = cache.access_token.expose().to_owned();

    let (status, body) = post(&sim.url("/_simulator/expire-access-tokens")).await;
    assert_eq!((status, body), (200, json!({ "expiredAccessTokens": 2 })));
    let list = sim.url("/v1.0/engagements/referrals");
    let (status, body) = get_text(&list, &token).await;
    assert_eq!((status, body.as_str()), (401, EXPIRED_BODY));
    let (status, body) = get_text(&format!("{list}/anything"), &token).await;
    assert_eq!((status, body.as_str()), (401, EXPIRED_BODY));

    // The client refreshes once and goes on; the refreshed token is not affected.
    let stats = sim.stats().await;
    let before = token_count(&stats, "refresh_token", "ok");
    assert_eq!(client.first_page(None).await.unwrap().items.len(), 5);
    assert_eq!(client.first_page(None).await.unwrap().items.len(), 5);
    let stats = sim.stats().await;
    assert_eq!(
        token_count(&stats, "refresh_token", "ok"),
        before + 1,
        "{stats}"
    );
    assert_eq!(stats["admin"]["expire_access_tokens"], 1);
}

#[tokio::test]
async fn truth_endpoint_is_sorted_and_needs_no_token() {
    let referrals = generate_referrals(40, 24);
    let sim = Sim::start(&referrals, |_| {}).await;
    let served = truth(&sim).await;
    let mut want: Vec<_> = referrals.iter().map(key).collect();
    want.sort();
    assert_eq!(served.iter().map(key).collect::<Vec<_>>(), want);
    assert_eq!(by_id(&served), by_id(&referrals));
}

#[tokio::test]
async fn filter_compares_instants_and_order_breaks_ties_by_id() {
    let file = json!([
        {"id": "b", "updatedDateTime": "2024-01-01T00:00:00.5Z"},
        {"id": "a", "updatedDateTime": "2024-01-01T00:00:00.5000000Z"},
        {"id": "c", "updatedDateTime": "2024-01-01T00:00:00.49Z"},
        {"id": "e", "updatedDateTime": "2024-01-01T00:00:01Z"},
        {"id": "f", "updatedDateTime": "2024-01-01T00:00:00Z"},
        {"id": "g", "updatedDateTime": "2024-01-01T01:00:00.5+01:00"},
        {"id": "d"}
    ]);
    let sim = Sim::start(file.as_array().unwrap(), |_| {}).await;
    let (_, cache) = sim.sign_in().await;
    let token = Some(cache.access_token.expose());
    let list = sim.url("/v1.0/engagements/referrals");
    let query = |q: &str| format!("{list}?{q}");
    let listed = |body: Value| ids(body["value"].as_array().unwrap());

    let (_, all) = get(&list, token).await;
    assert_eq!(listed(all), ["d", "f", "c", "a", "b", "g", "e"]);
    let (_, desc) = get(&query("$orderby=updatedDateTime%20desc"), token).await;
    assert_eq!(listed(desc), ["e", "g", "b", "a", "c", "f", "d"]);

    // As strings "…00.5000000Z" < "…00.5Z"; as instants they are equal.
    for literal in [
        "2024-01-01T00:00:00.5Z",
        "2024-01-01T00:00:00.5000000Z",
        "'2024-01-01T00:00:00.50Z'",
        "2024-01-01T01:00:00.5%2B01:00",
    ] {
        let (status, body) = get(
            &query(&format!("$filter=updatedDateTime%20ge%20{literal}")),
            token,
        )
        .await;
        assert_eq!(status, 200, "{literal}: {body}");
        assert_eq!(listed(body), ["a", "b", "g", "e"], "{literal}");
    }
    let (_, gt) = get(
        &query("$filter=updatedDateTime%20gt%202024-01-01T00:00:00.4900000Z&$orderby=updatedDateTime%20desc"),
        token,
    )
    .await;
    assert_eq!(listed(gt), ["e", "g", "b", "a"]);
    let (_, seconds) = get(
        &query("$filter=updatedDateTime%20ge%202024-01-01T00:00:00Z&$top=2"),
        token,
    )
    .await;
    assert_eq!(listed(seconds.clone()), ["f", "c"]);
    let next = seconds["@odata.nextLink"].as_str().unwrap();
    let (_, rest) = get(next, token).await;
    assert_eq!(listed(rest), ["a", "b"]);
}

/// Pages through with raw requests; after each page, the page must be the slice of the truth
/// (which already holds that request's mutation) at its offset.
#[tokio::test]
async fn mutations_move_records_to_the_end_between_pages() {
    let referrals = generate_referrals(60, 25);
    let original_ids = ids(&referrals);
    let sim = Sim::start(&referrals, |options| {
        options.page_size = 10;
        options.mutate_rate = 1.0;
        options.mutate_burst = 3;
    })
    .await;
    let (_, cache) = sim.sign_in().await;
    let token = Some(cache.access_token.expose());

    let mut url = sim.url("/v1.0/engagements/referrals");
    let mut offset = 0;
    let mut stamps = BTreeSet::new();
    let mut previous = by_id(&referrals);
    let mut served_twice = false;
    let mut seen = BTreeSet::new();
    loop {
        let (status, page) = get(&url, token).await;
        assert_eq!(status, 200, "{page}");
        let now = truth(&sim).await;
        let items = page["value"].as_array().unwrap();
        let end = (offset + 10).min(now.len());
        assert_eq!(ids(items), ids(&now[offset..end]), "page at {offset}");
        for id in ids(items) {
            served_twice |= !seen.insert(id);
        }

        // The burst: exactly 3 records changed, sharing one 7-digit timestamp, at the end.
        let changed: Vec<&Value> = now
            .iter()
            .filter(|r| previous[r["id"].as_str().unwrap()] != **r)
            .collect();
        assert_eq!(changed.len(), 3);
        let stamp = changed[0]["updatedDateTime"].as_str().unwrap().to_owned();
        assert!(
            changed
                .iter()
                .all(|r| r["updatedDateTime"] == stamp.as_str())
        );
        assert_eq!(stamp.len(), "2024-01-01T00:00:00.0000000Z".len(), "{stamp}");
        assert!(stamps.insert(stamp.clone()), "a new timestamp per burst");
        let tail: Vec<&Value> = now[now.len() - 3..].iter().collect();
        assert_eq!(tail, changed, "the burst is last, ordered by id");
        for referral in &changed {
            let id = referral["id"].as_str().unwrap();
            let etag = referral["eTag"].as_str().unwrap();
            assert!(etag.starts_with('"') && etag.ends_with('"'));
            assert_ne!(etag, previous[id]["eTag"].as_str().unwrap());
        }

        // The file holds the same truth, in the file's original order.
        let file: Vec<Value> =
            serde_json::from_slice(&std::fs::read(&sim.referrals_file).unwrap()).unwrap();
        assert_eq!(ids(&file), original_ids);
        assert_eq!(by_id(&file), by_id(&now));

        previous = by_id(&now);
        offset += 10;
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(offset, 60, "offset paging still ends after 6 pages");
    assert!(served_twice || seen.len() < 60);
    let stats = sim.stats().await;
    assert_eq!(stats["mutations"]["bursts"], 6);
    assert_eq!(stats["mutations"]["referrals"], 18);
}

#[tokio::test]
async fn status_steps_follow_the_table_and_unknown_fields_survive() {
    let mut referrals = generate_referrals(30, 26);
    referrals[0]["unknownFutureField"] = json!({"kept": [1.5, "x"]});
    let before = by_id(&referrals);
    let sim = Sim::start(&referrals, |options| {
        options.mutate_rate = 1.0;
        options.mutate_burst = 5;
    })
    .await;
    let (_, cache) = sim.sign_in().await;
    let token = Some(cache.access_token.expose());
    let list = sim.url("/v1.0/engagements/referrals?$top=1");
    for _ in 0..20 {
        assert_eq!(get(&list, token).await.0, 200);
    }
    let after = by_id(&truth(&sim).await);
    let mut steps = 0;
    for (id, now) in &after {
        let was = &before[id];
        let pair = |r: &Value| {
            (
                r["status"].as_str().unwrap().to_owned(),
                r["substatus"].as_str().unwrap().to_owned(),
            )
        };
        let (from, to) = (pair(was), pair(now));
        if from != to {
            steps += 1;
            let allowed = match from.0.as_str() {
                "New" => to.0 == "Active" || to.0 == "Closed",
                "Active" => to.0 == "Closed",
                _ => false,
            };
            assert!(allowed, "{id}: {from:?} -> {to:?}");
            // Stamped with the step's burst; a later burst may have moved it on again.
            let stamped = |field: &str| {
                let at = OffsetDateTime::parse(now[field].as_str().unwrap(), &Rfc3339).unwrap();
                assert!(at > instant(was) && at <= instant(now), "{id}: {field}");
            };
            if to.0 == "Closed" {
                assert!(to.1 == "Won" || to.1 == "Lost");
                stamped("closedDateTime");
            } else {
                assert_eq!(to.1, "Accepted");
                if was["acceptedDateTime"].is_null() {
                    stamped("acceptedDateTime");
                }
            }
        }
        // Everything but the moving parts is kept.
        let strip = |r: &Value| {
            let mut r = r.clone();
            for field in [
                "updatedDateTime",
                "eTag",
                "status",
                "substatus",
                "acceptedDateTime",
                "closedDateTime",
                "statusReason",
            ] {
                r.as_object_mut().unwrap().remove(field);
            }
            r
        };
        assert_eq!(strip(was), strip(now), "{id}");
    }
    assert!(steps > 0);
    let stats = sim.stats().await;
    // A record may have stepped twice (New → Active → Closed).
    assert!(stats["mutations"]["status_changes"].as_u64().unwrap() >= steps);
    assert_eq!(stats["mutations"]["bursts"], 20);
}

#[tokio::test]
async fn mutations_are_reproducible_for_a_seed() {
    let referrals = generate_referrals(50, 27);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sim = Sim::start(&referrals, |options| {
            options.fault_seed = Some(99);
            options.mutate_rate = 0.5;
            options.mutate_burst = 2;
        })
        .await;
        let (_, cache) = sim.sign_in().await;
        let list = sim.url("/v1.0/engagements/referrals?$top=5");
        for _ in 0..12 {
            get(&list, Some(cache.access_token.expose())).await;
        }
        // Compare everything but the wall-clock timestamps.
        let outcome: Vec<Value> = truth(&sim)
            .await
            .into_iter()
            .map(|mut r| {
                for field in ["updatedDateTime", "closedDateTime", "acceptedDateTime"] {
                    r.as_object_mut().unwrap().remove(field);
                }
                r
            })
            .collect();
        let stats = sim.stats().await;
        runs.push((ids(&truth(&sim).await), outcome, stats["mutations"].clone()));
    }
    assert_eq!(runs[0], runs[1]);
    let bursts = runs[0].2["bursts"].as_u64().unwrap();
    assert!(bursts > 0 && bursts < 12, "{}", runs[0].2);
}

#[tokio::test]
async fn reloading_keeps_mutations_and_mutations_keep_edits() {
    let referrals = generate_referrals(20, 28);
    let sim = Sim::start(&referrals, |options| {
        options.mutate_rate = 1.0;
    })
    .await;
    let (_, cache) = sim.sign_in().await;
    let token = Some(cache.access_token.expose());
    let list = sim.url("/v1.0/engagements/referrals");
    get(&list, token).await;
    let mutated = truth(&sim).await;
    let first_moved = mutated.last().unwrap().clone();
    assert_ne!(
        by_id(&referrals)[first_moved["id"].as_str().unwrap()],
        first_moved
    );

    // A test edits the file (from the truth): the next mutation starts from that edit.
    let mut edited = mutated.clone();
    edited[0]["name"] = json!("edited by the test");
    let edited_id = edited[0]["id"].as_str().unwrap().to_owned();
    write_referrals(&sim.referrals_file, &edited).unwrap();
    let (_, page) = get(&list, token).await;
    let now = truth(&sim).await;
    let now_by_id = by_id(&now);
    assert_eq!(now_by_id[&edited_id]["name"], "edited by the test");
    let second_moved = now.last().unwrap();
    assert!(instant(second_moved) > instant(&first_moved));
    if second_moved["id"] != first_moved["id"] {
        assert_eq!(now_by_id[first_moved["id"].as_str().unwrap()], first_moved);
    }
    assert_eq!(ids(page["value"].as_array().unwrap()), ids(&now));

    // The get-by-id endpoint serves the mutated text too.
    let id = second_moved["id"].as_str().unwrap();
    let (status, one) = get(&format!("{list}/{id}"), token).await;
    assert_eq!(status, 200);
    assert_eq!(one["eTag"], second_moved["eTag"]);
}

#[tokio::test]
async fn bind_rejects_bad_mutation_options() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("referrals.json");
    write_referrals(&file, &[]).unwrap();
    let listen = "127.0.0.1:0".parse().unwrap();
    for (rate, burst) in [(1.5, 1), (-0.1, 1), (f64::NAN, 1), (0.5, 0)] {
        let mut options = SimulatorOptions::new(file.clone(), listen);
        options.mutate_rate = rate;
        options.mutate_burst = burst;
        let error = bind(options).await.err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{rate} {burst}");
    }
    let options = SimulatorOptions::new(file, listen);
    assert_eq!((options.mutate_rate, options.mutate_burst), (0.0, 1));
}

#[tokio::test]
async fn mutations_in_memory_leave_the_file_alone() {
    let referrals = generate_referrals(20, 29);
    let sim = Sim::start(&referrals, |options| {
        options.mutate_rate = 1.0;
        options.mutate_burst = 2;
        options.mutations_in_memory = true;
    })
    .await;
    let file_before = std::fs::read(&sim.referrals_file).unwrap();
    let (_, cache) = sim.sign_in().await;
    let token = Some(cache.access_token.expose());
    let list = sim.url("/v1.0/engagements/referrals");
    for _ in 0..3 {
        let (status, page) = get(&list, token).await;
        assert_eq!(status, 200, "{page}");
    }

    // Three bursts of two moved referrals on (some maybe twice): the truth changed, the file
    // did not.
    let now = truth(&sim).await;
    let changed = now
        .iter()
        .filter(|r| by_id(&referrals)[r["id"].as_str().unwrap()] != **r)
        .count();
    assert!((2..=6).contains(&changed), "{changed} changed");
    assert_eq!(sim.stats().await["mutations"]["referrals"], 6);
    assert_eq!(std::fs::read(&sim.referrals_file).unwrap(), file_before);
    let (_, page) = get(&format!("{list}?$top=100"), token).await;
    assert_eq!(
        by_id(page["value"].as_array().unwrap()).len(),
        20,
        "every referral is still served"
    );
    assert_eq!(truth(&sim).await.len(), 20);
}

#[tokio::test]
async fn faults_change_at_run_time_and_bad_specs_name_the_item() {
    let sim = Sim::start(&generate_referrals(3, 29), |_| {}).await;
    let (_, cache) = sim.sign_in().await;
    let token = cache.access_token.expose();
    let list = sim.url("/v1.0/engagements/referrals");
    assert_eq!(get_text(&list, token).await.0, 200);

    // A storm with a longer Retry-After, in the header and the body.
    let (status, body) = post(&sim.url("/_simulator/faults?spec=429:1&retry_after=7")).await;
    assert_eq!(
        (status, body),
        (200, json!({ "faults": "429:1", "retryAfter": 7 }))
    );
    for _ in 0..3 {
        let response = reqwest::Client::new()
            .get(&list)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(response.headers()["retry-after"], "7");
        let text = response.text().await.unwrap();
        assert!(text.contains("Try again in 7 seconds"), "{text}");
    }

    // Another spec (URL-encoded, as clients send it); retry_after goes back to 1.
    let (status, body) = post(&sim.url("/_simulator/faults?spec=500%3A0.5%2C503%3A0.5")).await;
    assert_eq!(
        (status, body),
        (200, json!({ "faults": "500:0.5,503:0.5", "retryAfter": 1 }))
    );
    for _ in 0..10 {
        let (status, _) = get_text(&list, token).await;
        assert!(status == 500 || status == 503, "{status}");
    }

    // Bad input changes nothing and names the culprit.
    for (query, item) in [
        ("spec=429:0.1,404:0.2", "404:0.2"),
        ("spec=truncate", "truncate"),
        ("spec=429:0.1&retry_after=soon", "soon"),
        ("spec=429:0.1&retry_after=999999", "999999"),
        ("spec=429:0.1&retry-after=2", "retry-after"),
    ] {
        let (status, body) = post(&sim.url(&format!("/_simulator/faults?{query}"))).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"]["item"], item, "{query}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(item),
            "{query}: {body}"
        );
    }
    let (status, _) = get_text(&list, token).await;
    assert!(
        status == 500 || status == 503,
        "a bad spec kept the old one"
    );

    // An empty spec (or none) stops the faults.
    for path in ["/_simulator/faults?spec=", "/_simulator/faults"] {
        let (status, body) = post(&sim.url(path)).await;
        assert_eq!(
            (status, body),
            (200, json!({ "faults": "", "retryAfter": 1 }))
        );
    }
    for _ in 0..10 {
        assert_eq!(get_text(&list, token).await.0, 200);
    }

    let stats = sim.stats().await;
    assert_eq!(stats["admin"]["faults"], 9, "{stats}");
    assert_eq!(stats["faults"]["429"], 3, "{stats}");
    assert_eq!(
        stats["faults"]["500"].as_u64().unwrap_or(0) + stats["faults"]["503"].as_u64().unwrap_or(0),
        11,
        "{stats}"
    );
    assert_eq!(count(&stats, "referrals_list", 200), 11);
}

/// PATCH over HTTP: 204 without `Prefer` (the file holds the change), 200 with it and an
/// `ETag` header, unsupported operations and a closed referral refused with a Partner
/// Center-shaped body, 412 carrying the current referral, 404 for an unknown id; every answer
/// counted under `referral_patch`.
#[tokio::test]
async fn patch_over_http() {
    let mut referral = generate_referrals(1, 3).remove(0);
    referral["status"] = "Active".into();
    referral["substatus"] = "Accepted".into();
    referral["eTag"] = "\"v1\"".into();
    let id = referral["id"].as_str().unwrap().to_owned();
    let sim = Sim::start(&[referral], |_| {}).await;
    let (_, cache) = sim.sign_in().await;
    let token = cache.access_token.expose().to_owned();
    let url = sim.url(&format!("/v1.0/engagements/referrals/{id}"));
    let patch = |body: Value, if_match: Option<&str>, prefer: bool| {
        let mut request = reqwest::Client::new()
            .patch(&url)
            .bearer_auth(&token)
            .json(&body);
        if let Some(etag) = if_match {
            request = request.header("If-Match", etag);
        }
        if prefer {
            request = request.header("Prefer", "return=representation");
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let etag = response
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_owned());
            let text = response.text().await.unwrap();
            (
                status,
                etag,
                serde_json::from_str(&text).unwrap_or(Value::Null),
            )
        }
    };
    let (status, _, body) = patch(json!([{"op": "remove", "path": "/notes"}]), None, false).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalidRequest");
    let (status, _, body) = patch(
        json!([{"op": "replace", "path": "/details/notes", "value": "x"}]),
        Some("\"v0\""),
        false,
    )
    .await;
    assert_eq!(status, 412);
    assert_eq!(body["eTag"], "\"v1\"", "412 carries the current referral");
    let (status, _, body) = patch(
        json!([{"op": "replace", "path": "/details/notes", "value": "called"}]),
        Some("\"v1\""),
        false,
    )
    .await;
    assert_eq!((status, body), (204, Value::Null));
    let file: Vec<Value> =
        serde_json::from_slice(&std::fs::read(&sim.referrals_file).unwrap()).unwrap();
    assert_eq!(file[0]["details"]["notes"], "called");
    let etag = file[0]["eTag"].as_str().unwrap().to_owned();
    assert_ne!(etag, "\"v1\"");
    let won = json!([
        {"op": "replace", "path": "/status", "value": "Closed"},
        {"op": "replace", "path": "/substatus", "value": "Won"},
    ]);
    let (status, header, body) = patch(won.clone(), Some(&etag), true).await;
    assert_eq!(status, 200);
    assert_eq!(body["substatus"], "Won");
    assert!(body["closedDateTime"].is_string());
    assert_eq!(header.as_deref(), body["eTag"].as_str());
    let (status, _, body) = patch(won, None, true).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalidStatusTransition");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Closed")
    );
    let (status, _, _) = reqwest::Client::new()
        .patch(sim.url("/v1.0/engagements/referrals/nope"))
        .bearer_auth(&token)
        .json(&json!([]))
        .send()
        .await
        .map(|r| (r.status().as_u16(), (), ()))
        .unwrap();
    assert_eq!(status, 404);
    let stats = sim.stats().await;
    assert_eq!(count(&stats, "referral_patch", 400), 2);
    assert_eq!(count(&stats, "referral_patch", 412), 1);
    assert_eq!(count(&stats, "referral_patch", 204), 1);
    assert_eq!(count(&stats, "referral_patch", 200), 1);
    assert_eq!(count(&stats, "referral_patch", 404), 1);
}

/// The webhook registration through the connector's real client, and events for a referral
/// moved on now: delivered to the registered URL in Partner Center's shape, retried after a
/// refusal, and only for the events registered.
#[tokio::test]
async fn webhook_registration_and_events_with_retries() {
    use hunter_partner_center::client::{REFERRAL_EVENTS, WebhookRegistration};
    let referrals = generate_referrals(3, 5);
    let sim = Sim::start(&referrals, |_| {}).await;
    let client = client(&sim, 10).await;
    assert_eq!(client.webhook_registration().await.unwrap(), None);
    assert!(!client.delete_webhook_registration().await.unwrap());

    // A receiver that refuses the first delivery and records the others.
    let received: StdArc<std::sync::Mutex<Vec<Value>>> = StdArc::default();
    let refused = StdArc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let (received, refused) = (received.clone(), refused.clone());
            move |body: axum::body::Bytes| async move {
                if !refused.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                received
                    .lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                StatusCode::OK
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let only_updates = WebhookRegistration {
        subscriber_id: None,
        webhook_url: format!("http://{receiver}/hook?token=t"),
        webhook_events: vec![REFERRAL_EVENTS[1].to_owned()],
        signature_token_to_ms_signature_header: Some(true),
    };
    let registered = client.register_webhook(&only_updates, false).await.unwrap();
    assert!(registered.subscriber_id.is_some());
    assert_eq!(
        client
            .webhook_registration()
            .await
            .unwrap()
            .unwrap()
            .webhook_url,
        only_updates.webhook_url
    );

    // A late referral is `referral-created`: not registered, not sent.
    let (status, _) = post(&sim.url("/_simulator/late?count=1&at=2026-01-01T00:00:00Z")).await;
    assert_eq!(status, 200);
    let id = referrals[0]["id"].as_str().unwrap();
    let (status, moved) = post(&sim.url(&format!("/_simulator/mutate-now?id={id}"))).await;
    assert_eq!(status, 200, "{moved}");
    assert_ne!(
        moved["status"], referrals[0]["status"],
        "a status step: {moved}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while received.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let events = received.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["EventName"], "referral-updated");
    assert_eq!(events[0]["ResourceName"], "referral");
    assert_eq!(events[0]["ResourceChangeUtcDate"], moved["updatedDateTime"]);
    assert!(
        events[0]["ResourceUri"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/referrals/{id}")),
        "{events:?}"
    );
    let stats = get(&sim.url("/_simulator/stats"), None).await.1;
    assert_eq!(stats["webhooks"]["delivered"], 1, "{stats}");
    assert_eq!(stats["webhooks"]["failed_attempts"], 1, "{stats}");

    // PUT replaces, DELETE removes; a bad registration is a 400.
    let mut both = only_updates.clone();
    both.webhook_events = REFERRAL_EVENTS.iter().map(|e| (*e).to_owned()).collect();
    let replaced = client.register_webhook(&both, true).await.unwrap();
    assert_eq!(replaced.subscriber_id, registered.subscriber_id);
    assert_eq!(replaced.webhook_events.len(), 2);
    let mut bad = both.clone();
    bad.webhook_url = "not a url".into();
    assert!(client.register_webhook(&bad, true).await.is_err());
    assert!(client.delete_webhook_registration().await.unwrap());
    assert_eq!(client.webhook_registration().await.unwrap(), None);
    let (status, _) = post(&sim.url("/_simulator/mutate-now?id=no-such-referral")).await;
    assert_eq!(status, 404);
    server.abort();
}
