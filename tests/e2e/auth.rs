//! Auth on every route: every operation of the OpenAPI document, called without a token, with a
//! wrong token, and (for writes) with the read token, answers 401, 401 and 403; and the document
//! covers the router: every route the API's source declares is either documented (and so
//! driven here) or one of the few public ones (the page and its files, probes, metrics). A route
//! added outside the auth layer, or left out of the document, fails this test.
//!
//! An operation whose document names the `webhook_secret` scheme (Partner Center's webhooks,
//! docs/partner-center-webhooks.md) authenticates by the `token` of its URL instead: it answers
//! 401 without it, with a wrong one, and with any bearer token (even the admin's) but no `token`.

use std::collections::BTreeSet;
use std::time::Duration;

use hunter_e2e::contracts::repo;
use hunter_e2e::*;
use serde_json::Value;

/// Served without a token on purpose: the page (it asks for the token itself) and its files,
/// the probes and the metrics.
const PUBLIC: &[&str] = &[
    "/", "/app.js", "/app.css", "/healthz", "/readyz", "/metrics",
];

/// Every `.route("…"` path in the API's source files.
fn declared_routes() -> anyhow::Result<BTreeSet<String>> {
    let dir = repo().join("pipeline/src/roles/api");
    let mut routes = BTreeSet::new();
    let mut files = vec![repo().join("pipeline/src/roles/mod.rs")];
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let trimmed = rest.trim_start();
            if let Some(literal) = trimmed.strip_prefix('"') {
                let end = literal.find('"').unwrap_or(0);
                routes.insert(literal[..end].to_owned());
            }
        }
    }
    Ok(routes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_a_token_and_writes_need_the_admin_token() -> anyhow::Result<()> {
    let mut deployment = Deployment::new(&[])?;
    let read_token = uuid::Uuid::new_v4().simple().to_string();
    // The webhook receiver is off (404) without a secret: on, so its 401s are checked.
    deployment.env.insert(
        "HUNTER_PARTNER_CENTER_WEBHOOK_SECRET".into(),
        uuid::Uuid::new_v4().simple().to_string(),
    );
    deployment
        .env
        .insert("HUNTER_API_READ_TOKEN".into(), read_token.clone());
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    deployment.start_role("api").await?;
    let client = reqwest::Client::new();

    let document: Value = client
        .get(format!("{}/api/v1/openapi.json", deployment.api))
        .bearer_auth(&deployment.api_token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let paths = document["paths"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("no paths in the OpenAPI document"))?;
    assert!(paths.len() >= 7, "{paths:?}");

    // The document covers the router.
    let documented: BTreeSet<String> = paths
        .keys()
        .map(|path| path.trim_start_matches("/api/v1").to_owned())
        .chain(["/openapi.json".to_owned()])
        .collect();
    for route in declared_routes()? {
        assert!(
            documented.contains(&route) || PUBLIC.contains(&route.as_str()),
            "route {route} is neither in the OpenAPI document (so not checked for auth) nor public"
        );
    }

    // The document's paths are relative to its server, `/api/v1`.
    let mut operations = vec![("get".to_owned(), "/api/v1/openapi.json".to_owned())];
    let mut url_secret = Vec::new();
    for (path, item) in paths {
        let full = format!("/api/v1{}", path.trim_start_matches("/api/v1"));
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(operation) = item.get(method) else {
                continue;
            };
            if operation["security"][0].get("webhook_secret").is_some() {
                url_secret.push((method.to_owned(), full.clone()));
            } else {
                operations.push((method.to_owned(), full.clone()));
            }
        }
    }
    assert!(!url_secret.is_empty(), "the webhook receiver is documented");
    for (index, (method, path)) in url_secret.iter().enumerate() {
        let wrong_client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                127,
                0,
                2,
                index as u8 + 1,
            )))
            .build()?;
        let url = format!("{}{path}", deployment.api);
        for (what, query, bearer) in [
            ("no token", "", None),
            (
                "a wrong token",
                "?token=9f86d081884c7d659a2feaa0c55ad015",
                None,
            ),
            ("the admin bearer token", "", Some(&deployment.api_token)),
            ("the read bearer token", "", Some(&read_token)),
        ] {
            let mut request = wrong_client
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{url}{query}"),
                )
                .json(&serde_json::json!({}));
            if let Some(token) = bearer {
                request = request.bearer_auth(token);
            }
            let response = request.send().await?;
            assert_eq!(response.status(), 401, "{method} {path} with {what}");
            let body: Value = response.json().await?;
            assert_eq!(
                body["error"]["code"], "unauthenticated",
                "{method} {path}: {body}"
            );
        }
    }
    // The throttle allows 10 wrong tokens a minute per address: each operation's wrong token
    // comes from an address of its own on the loopback network (127.0.1.N), however many
    // operations there are.
    assert!(operations.len() < 250, "{operations:?}");
    for (index, (method, path)) in operations.iter().enumerate() {
        let wrong_client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                127,
                0,
                1,
                index as u8 + 1,
            )))
            .build()?;
        // Path parameters get a well-formed id nothing has.
        let concrete = path
            .split('/')
            .map(|part| {
                if part.starts_with('{') {
                    "0a1b2c3d-0000-4000-8000-00000000a17e"
                } else {
                    part
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let url = format!("{}{concrete}", deployment.api);
        let request = |token: Option<&str>| {
            let client = if token.is_some_and(|t| t != read_token) {
                &wrong_client
            } else {
                &client
            };
            let builder = client.request(method.to_uppercase().parse().unwrap(), &url);
            match token {
                Some(token) => builder.bearer_auth(token),
                None => builder,
            }
        };
        for token in [None, Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b")] {
            let response = request(token).send().await?;
            assert_eq!(
                response.status(),
                401,
                "{method} {path} with {}",
                if token.is_some() {
                    "a wrong token"
                } else {
                    "no token"
                }
            );
            let body: Value = response.json().await?;
            assert_eq!(
                body["error"]["code"], "unauthenticated",
                "{method} {path}: {body}"
            );
        }
        let with_read = request(Some(&read_token)).send().await?;
        if method == "get" {
            // Reads are the read token's: whatever the answer, it is not an auth refusal, and a
            // 404 is the API's own (JSON `not_found`), never the router's "no such route".
            let status = with_read.status().as_u16();
            assert!(
                ![401, 403].contains(&status),
                "GET {path} with the read token: {status}"
            );
            if status == 404 {
                let body: Value = with_read.json().await?;
                assert_eq!(body["error"]["code"], "not_found", "GET {path}: {body}");
            }
        } else {
            assert_eq!(
                with_read.status(),
                403,
                "{method} {path} with the read token"
            );
        }
    }

    // The public routes answer without a token.
    for path in ["/", "/app.js", "/app.css", "/healthz", "/metrics"] {
        let response = client
            .get(format!("{}{path}", deployment.api))
            .send()
            .await?;
        assert_eq!(response.status(), 200, "{path}");
    }
    deployment.teardown().await;
    Ok(())
}
