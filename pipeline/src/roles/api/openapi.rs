//! The OpenAPI 3.1 document of `/api/v1`, derived from the handlers and their types.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{actions, dlq, leads, overview, sync, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hunter API",
        description = "Partner Center referrals as leads, and the sync that brings them. Every route needs `Authorization: Bearer <token>`: an admin token (HUNTER_API_TOKEN, or a HUNTER_API_TOKENS entry with role admin) for everything, a sales token for GET routes and referral actions, a read token (HUNTER_API_READ_TOKEN, or role read) for GET routes.",
    ),
    servers((url = "/api/v1")),
    paths(
        leads::list,
        leads::detail,
        leads::referral,
        sync::trigger,
        sync::status,
        sync::runs,
        sync::run,
        dlq::list,
        dlq::replay,
        actions::create,
        actions::list,
        actions::one,
        actions::recent,
        overview::overview,
        leads::export,
        webhooks::receive,
    ),
    components(schemas(super::ErrorBody, super::ErrorDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "leads", description = "Leads from ClickHouse"),
        (name = "referrals", description = "Referrals as Partner Center returned them"),
        (name = "sync", description = "Trigger a sync and follow it"),
        (name = "dlq", description = "Dead letters: list them, replay them once the cause is fixed"),
        (name = "webhooks", description = "Partner Center's push: referral events that make the source fetch the referral at once (docs/partner-center-webhooks.md). Authenticated by the callback URL's secret (`token`), not by a bearer token"),
        (name = "actions", description = "Work a referral: accept, decline, won, lost, update, written back to Partner Center (docs/writeback.md)"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        // Partner Center webhooks: the shared secret of the registered callback URL.
        components.add_security_scheme(
            "webhook_secret",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Query(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "token",
                    "HUNTER_PARTNER_CENTER_WEBHOOK_SECRET, in the callback URL registered with Partner Center",
                ),
            )),
        );
    }
}

/// `GET /api/v1/openapi.json`.
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_every_route_with_its_errors() {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = document["paths"].as_object().unwrap();
        for path in [
            "/leads",
            "/leads/{id}",
            "/referrals/{id}",
            "/partner-center/referrals/sync",
            "/partner-center/sync/status",
            "/sync/runs",
            "/sync/runs/{task_id}",
            "/dlq",
            "/dlq/replay",
            "/referrals/{id}/actions",
            "/actions",
            "/actions/{action_id}",
            "/overview",
            "/leads.csv",
        ] {
            let item = &paths[path];
            assert!(item.is_object(), "{path} missing");
            let operation = item.as_object().unwrap().values().next().unwrap();
            assert!(
                operation["responses"]["401"].is_object(),
                "{path} lacks its 401"
            );
            assert_eq!(operation["security"][0]["bearer"], serde_json::json!([]));
        }
        let leads = &paths["/leads"]["get"]["parameters"];
        let names: Vec<&str> = leads
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for name in [
            "status",
            "substatus",
            "country",
            "provider",
            "min_score",
            "updated_since",
            "q",
            "direction",
            "qualification",
            "has_domain",
            "sort",
            "limit",
            "cursor",
        ] {
            assert!(names.contains(&name), "{name} not documented: {names:?}");
        }
        assert!(document["components"]["schemas"]["LeadsPage"].is_object());
        assert!(document["components"]["schemas"]["Overview"].is_object());
        // The export takes the list's filters (one parser for both).
        let export = &paths["/leads.csv"]["get"];
        assert_eq!(export["parameters"], paths["/leads"]["get"]["parameters"]);
        assert!(export["responses"]["200"]["content"]["text/csv"].is_object());
        // The webhook receiver: its own secret, not the bearer token.
        let webhooks = &paths["/partner-center/webhooks"]["post"];
        assert_eq!(
            webhooks["security"][0]["webhook_secret"],
            serde_json::json!([])
        );
        for status in ["202", "400", "401", "404", "429"] {
            assert!(
                webhooks["responses"][status].is_object(),
                "webhooks lacks {status}"
            );
        }
        assert_eq!(
            document["components"]["securitySchemes"]["webhook_secret"]["in"],
            "query"
        );
    }
}
