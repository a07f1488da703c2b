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
    let scope = crate::auth::DEFAULT_SCOPE;
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
