//! What is worth telling someone: the events of the `notify` role and the body each format
//! sends (docs/notifications.md documents the JSON schema and shows each format).
//!
//! Pure functions only: the same lead version always gives the same events with the same ids,
//! which is what makes deduplication by (lead, version, kind) hold across replays and restarts.

use hunter_core::config::NotifyFormat;
use hunter_core::records::{ChangeType, Lead, SyncRun, Timestamp, stable_hash};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The `schema` field of every JSON event: a new field is added compatibly, a change of
/// meaning gets a new name.
pub const SCHEMA: &str = "hunter.notification.v1";

/// Why a notification is sent (the `kind` column and field; fixed strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The first version of an incoming referral.
    NewReferral,
    /// A lead version whose status differs from the version before.
    StatusChanged,
    /// The daily check: an incoming `New` referral expires within 48 hours.
    ExpiringSoon,
    /// The hour-before check: an incoming `New` referral expires within the hour.
    ExpiringWithinHour,
    /// A tenant's sign-in needs a person (`hunter auth login`); once per episode.
    SigninRequired,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NewReferral => "new_referral",
            Kind::StatusChanged => "status_changed",
            Kind::ExpiringSoon => "expiring_soon",
            Kind::ExpiringWithinHour => "expiring_within_hour",
            Kind::SigninRequired => "signin_required",
        }
    }
}

/// The lead as a notification shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LeadSummary {
    pub lead_id: String,
    pub version: i64,
    pub name: Option<String>,
    pub company_name: Option<String>,
    pub company_domain: Option<String>,
    pub status: Option<String>,
    pub substatus: Option<String>,
    pub previous_status: Option<String>,
    pub direction: Option<String>,
    pub deal_value: Option<f64>,
    pub currency: Option<String>,
    pub deal_value_usd: Option<f64>,
    pub priority: Option<String>,
    pub country: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub expires_at: Option<String>,
    /// Whether `expires_at` is Hunter's estimate (created + 14 days) rather than Partner
    /// Center's `expirationDateTime`.
    pub expires_at_estimated: Option<bool>,
}

/// A tenant's sign-in episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signin {
    /// The sync run that found it.
    pub run_id: String,
    /// What the source said (no secret: the source's run messages never carry one).
    pub reason: Option<String>,
}

/// One notification, before it is shaped for a target: the plain JSON format is exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub schema: String,
    /// Stable per (kind, lead or tenant, version): a receiver deduplicates by it (delivery is
    /// at least once).
    pub id: String,
    pub kind: Kind,
    pub tenant: String,
    /// The lead's version (microseconds) or, for sign-in, the episode's first failed run start.
    pub version: i64,
    /// When the change happened (RFC 3339): Partner Center's time for a lead change, the check
    /// or the run for the others.
    pub at: String,
    pub title: String,
    pub text: String,
    pub lead: Option<LeadSummary>,
    pub signin: Option<Signin>,
    /// A link to the lead on the page (`HUNTER_NOTIFY_PAGE_URL`), when set.
    pub url: Option<String>,
}

impl Event {
    /// The lead id, or the tenant for a tenant's event: what (with kind and version)
    /// identifies it.
    pub fn subject(&self) -> &str {
        match &self.lead {
            Some(lead) => &lead.lead_id,
            None => &self.tenant,
        }
    }

    /// The key of this event's delivery to `target`: the dedupe key across restarts.
    pub fn notification_id(&self, target: &str) -> String {
        notification_id(target, self.kind, self.subject(), self.dedupe_version())
    }

    /// What, besides kind and subject, makes this event news: the lead or episode version,
    /// except for the expiry kinds, where it is the expiry itself (microseconds). A referral
    /// that changes while it waits (renamed, a note, a new deal value: a new lead version)
    /// still expires at the same time, and is not announced again; a moved expiry is.
    pub fn dedupe_version(&self) -> i64 {
        match self.kind {
            Kind::ExpiringSoon | Kind::ExpiringWithinHour => self
                .lead
                .as_ref()
                .and_then(|lead| lead.expires_at.as_deref())
                .and_then(|at| {
                    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .and_then(|at| i64::try_from(at.unix_timestamp_nanos() / 1000).ok())
                .unwrap_or(self.version),
            _ => self.version,
        }
    }
}

/// Hex of a stable hash of (target, kind, subject, version); each part length-prefixed so no
/// two tuples read alike.
pub fn notification_id(target: &str, kind: Kind, subject: &str, version: i64) -> String {
    let mut text = String::new();
    for part in [target, kind.as_str(), subject, &version.to_string()] {
        text.push_str(&format!("{}:{part}|", part.len()));
    }
    format!("{:016x}", stable_hash(text.as_bytes()))
}

/// RFC 3339 of a Hunter timestamp.
pub fn rfc3339(timestamp: Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(timestamp.micros()) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn summary(lead: &Lead) -> LeadSummary {
    LeadSummary {
        lead_id: lead.lead_id.clone(),
        version: lead.version,
        name: lead.name.clone(),
        company_name: lead.company_name.clone(),
        company_domain: lead.company_domain.clone(),
        status: lead.status.clone(),
        substatus: lead.substatus.clone(),
        previous_status: lead.previous_status.clone(),
        direction: lead.direction.clone(),
        deal_value: lead.deal_value,
        currency: lead.currency.clone(),
        deal_value_usd: lead.deal_value_usd,
        priority: Some(lead.priority.clone()),
        country: lead.country.clone(),
        created_at: lead.created_at.map(rfc3339),
        updated_at: Some(rfc3339(lead.updated_at)),
        expires_at: None,
        expires_at_estimated: None,
    }
}

/// The company, else the referral's name, else its id: what a title calls a lead.
fn called(lead: &LeadSummary) -> String {
    lead.company_name
        .clone()
        .or_else(|| lead.name.clone())
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| lead.lead_id.clone())
}

fn page_link(page_url: Option<&url::Url>, lead_id: &str) -> Option<String> {
    let mut url = page_url?.clone();
    url.query_pairs_mut().append_pair("q", lead_id);
    Some(url.to_string())
}

/// Builds an event for a lead.
pub fn lead_event(
    kind: Kind,
    tenant: &str,
    lead: LeadSummary,
    at: String,
    page_url: Option<&url::Url>,
) -> Event {
    let name = called(&lead);
    let status = lead.status.clone().unwrap_or_else(|| "unknown".into());
    let (title, text) = match kind {
        Kind::NewReferral => (
            format!("New incoming referral: {name}"),
            format!(
                "{} is waiting for an answer (status {status}).",
                lead.name.clone().unwrap_or_else(|| name.clone())
            ),
        ),
        Kind::StatusChanged => (
            format!("Referral status changed: {name}"),
            format!(
                "{} → {status}",
                lead.previous_status.clone().unwrap_or_else(|| "?".into())
            ),
        ),
        Kind::ExpiringSoon => (
            format!("Referral expiring soon: {name}"),
            format!(
                "Unanswered, it expires at {}{}.",
                lead.expires_at.clone().unwrap_or_default(),
                estimated_note(&lead)
            ),
        ),
        Kind::ExpiringWithinHour => (
            format!("Referral expires within the hour: {name}"),
            format!(
                "Unanswered, it expires at {}{}: answer now or it is archived as Expired.",
                lead.expires_at.clone().unwrap_or_default(),
                estimated_note(&lead)
            ),
        ),
        Kind::SigninRequired => (String::new(), String::new()),
    };
    let version = lead.version;
    let mut event = Event {
        schema: SCHEMA.into(),
        id: String::new(),
        kind,
        tenant: tenant.to_owned(),
        version,
        at,
        title,
        text,
        url: page_link(page_url, &lead.lead_id),
        lead: Some(lead),
        signin: None,
    };
    // The receiver's dedupe id is the target-free notification id.
    event.id = event.notification_id("");
    event
}

fn estimated_note(lead: &LeadSummary) -> &'static str {
    if lead.expires_at_estimated == Some(true) {
        " (estimated: created + 14 days)"
    } else {
        ""
    }
}

/// The events a lead version raises (a new incoming referral, a status change), with the time
/// each happened (Partner Center's, in microseconds) for the age filter.
pub fn events_of_lead(lead: &Lead, page_url: Option<&url::Url>) -> Vec<(Event, i64)> {
    let mut events = Vec::new();
    let incoming = lead
        .direction
        .as_deref()
        .is_some_and(|d| d.eq_ignore_ascii_case("incoming"));
    match ChangeType::parse(&lead.change_type) {
        Some(ChangeType::Created) if incoming => {
            let at = lead.created_at.unwrap_or(lead.updated_at);
            events.push((
                lead_event(
                    Kind::NewReferral,
                    &lead.tenant,
                    summary(lead),
                    rfc3339(at),
                    page_url,
                ),
                at.micros(),
            ));
        }
        Some(ChangeType::StatusChanged) => {
            events.push((
                lead_event(
                    Kind::StatusChanged,
                    &lead.tenant,
                    summary(lead),
                    rfc3339(lead.updated_at),
                    page_url,
                ),
                lead.updated_at.micros(),
            ));
        }
        _ => {}
    }
    events
}

/// The sign-in event of a tenant's episode, from the run that started it.
pub fn signin_event(run: &SyncRun) -> Event {
    let version = run.started_at.micros();
    Event {
        schema: SCHEMA.into(),
        id: notification_id("", Kind::SigninRequired, &run.tenant, version),
        kind: Kind::SigninRequired,
        tenant: run.tenant.clone(),
        version,
        at: rfc3339(run.started_at),
        title: format!("Partner Center sign-in required for tenant {}", run.tenant),
        text: format!(
            "Polls of tenant {} are suspended until someone signs in again: run `hunter auth login` (device code).",
            run.tenant
        ),
        lead: None,
        signin: Some(Signin {
            run_id: run.run_id.clone(),
            reason: run.error_message.clone(),
        }),
        url: None,
    }
}

/// The facts a card or a Slack section lists: (label, value), only those known.
fn facts(event: &Event) -> Vec<(&'static str, String)> {
    let mut facts = vec![("Tenant", event.tenant.clone())];
    if let Some(lead) = &event.lead {
        let mut push = |label: &'static str, value: Option<String>| {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                facts.push((label, value));
            }
        };
        push("Referral", lead.name.clone());
        push("Company", lead.company_name.clone());
        push("Domain", lead.company_domain.clone());
        push("Status", lead.status.clone());
        push("Previous status", lead.previous_status.clone());
        push(
            "Value",
            lead.deal_value
                .map(|v| format!("{v:.2} {}", lead.currency.clone().unwrap_or_default())),
        );
        push(
            "Value (USD)",
            lead.deal_value_usd.map(|v| format!("{v:.2}")),
        );
        push("Expires", lead.expires_at.clone());
        push("Lead", Some(lead.lead_id.clone()));
    }
    if let Some(signin) = &event.signin {
        facts.push(("Run", signin.run_id.clone()));
    }
    facts
}

/// The request body for `format`.
pub fn render(event: &Event, format: NotifyFormat) -> Value {
    match format {
        NotifyFormat::Json => serde_json::to_value(event).unwrap_or(Value::Null),
        NotifyFormat::Teams => teams(event),
        NotifyFormat::Slack => slack(event),
    }
}

/// A Teams message with one Adaptive Card (1.4: what Workflows and incoming webhooks render).
fn teams(event: &Event) -> Value {
    let facts: Vec<Value> = facts(event)
        .into_iter()
        .map(|(title, value)| json!({"title": title, "value": value}))
        .collect();
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": true, "text": event.title},
            {"type": "TextBlock", "wrap": true, "text": event.text},
            {"type": "FactSet", "facts": facts},
        ],
        "msteams": {"width": "Full"},
    });
    if let Some(url) = &event.url {
        card["actions"] =
            json!([{"type": "Action.OpenUrl", "title": "Open in Hunter", "url": url}]);
    }
    json!({
        "type": "message",
        "summary": event.title,
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// Slack's mrkdwn treats `&`, `<` and `>` as markup: escaped so a company name cannot make a
/// link or a mention.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack incoming-webhook message: `text` (the notification's fallback) and blocks.
fn slack(event: &Event) -> Value {
    let fields: Vec<Value> = facts(event)
        .into_iter()
        .take(10) // Slack allows 10 fields per section
        .map(|(title, value)| {
            json!({"type": "mrkdwn", "text": format!("*{title}*\n{}", slack_escape(&value))})
        })
        .collect();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&event.title, 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": slack_escape(&event.text)}}),
        json!({"type": "section", "fields": fields}),
    ];
    if let Some(url) = &event.url {
        blocks.push(json!({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open in Hunter"}, "url": url}
        ]}));
    }
    json!({
        "text": slack_escape(&format!("{}: {}", event.title, event.text)),
        "blocks": blocks,
    })
}

fn truncate(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(chars - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(change: &str, direction: &str) -> Lead {
        Lead {
            lead_id: "r-1".into(),
            referral_id: "r-1".into(),
            tenant: "contoso".into(),
            name: Some("Fabrikam <b>M365</b> rollout".into()),
            company_name: Some("Fabrikam & Sons".into()),
            status: Some("New".into()),
            previous_status: Some("Active".into()),
            direction: Some(direction.into()),
            deal_value: Some(1200.0),
            currency: Some("EUR".into()),
            created_at: Some(Timestamp(1_700_000_000_000_000)),
            updated_at: Timestamp(1_700_000_100_000_000),
            version: 1_700_000_100_000_000,
            change_type: change.into(),
            ..Lead::default()
        }
    }

    #[test]
    fn a_first_incoming_version_is_a_new_referral() {
        let events = events_of_lead(&lead("created", "Incoming"), None);
        assert_eq!(events.len(), 1);
        let (event, at) = &events[0];
        assert_eq!(event.kind, Kind::NewReferral);
        assert_eq!(*at, 1_700_000_000_000_000, "aged by createdDateTime");
        assert_eq!(event.at, "2023-11-14T22:13:20Z");
        // An outgoing referral's first version, and a plain update, are not news.
        assert!(events_of_lead(&lead("created", "Outgoing"), None).is_empty());
        assert!(events_of_lead(&lead("updated", "Incoming"), None).is_empty());
        let changed = events_of_lead(&lead("status_changed", "Outgoing"), None);
        assert_eq!(changed[0].0.kind, Kind::StatusChanged);
        assert_eq!(changed[0].0.text, "Active → New");
    }

    #[test]
    fn ids_are_stable_and_differ_by_each_part() {
        let base = notification_id("ops", Kind::NewReferral, "r-1", 5);
        assert_eq!(base, notification_id("ops", Kind::NewReferral, "r-1", 5));
        for other in [
            notification_id("ops2", Kind::NewReferral, "r-1", 5),
            notification_id("ops", Kind::StatusChanged, "r-1", 5),
            notification_id("ops", Kind::NewReferral, "r-2", 5),
            notification_id("ops", Kind::NewReferral, "r-1", 6),
            // Parts cannot run into each other.
            notification_id("op", Kind::NewReferral, "sr-1", 5),
        ] {
            assert_ne!(other, base);
        }
        // The same lead version gives the same event id every time (replays).
        let one = &events_of_lead(&lead("created", "Incoming"), None)[0].0;
        let two = &events_of_lead(&lead("created", "Incoming"), None)[0].0;
        assert_eq!(one.id, two.id);
        assert_eq!(one.notification_id("t"), two.notification_id("t"));
    }

    #[test]
    fn an_expiry_is_deduplicated_by_its_time_not_the_lead_version() {
        let at = |version: i64, expires: &str| {
            let summary = LeadSummary {
                lead_id: "r-1".into(),
                version,
                expires_at: Some(expires.into()),
                ..LeadSummary::default()
            };
            lead_event(
                Kind::ExpiringWithinHour,
                "contoso",
                summary,
                "x".into(),
                None,
            )
        };
        let first = at(5, "2026-12-01T21:00:00Z");
        let renamed = at(6, "2026-12-01T21:00:00Z");
        let moved = at(6, "2026-12-02T21:00:00Z");
        assert_eq!(first.notification_id("t"), renamed.notification_id("t"));
        assert_eq!(first.id, renamed.id);
        assert_ne!(first.notification_id("t"), moved.notification_id("t"));
        assert_eq!(
            renamed.version, 6,
            "the event still carries the lead version"
        );
        assert_eq!(first.dedupe_version(), 1_796_158_800_000_000);
        // The daily and the hour-before notices are two notifications.
        let summary = first.lead.clone().unwrap();
        let daily = lead_event(Kind::ExpiringSoon, "contoso", summary, "x".into(), None);
        assert_ne!(daily.notification_id("t"), first.notification_id("t"));
    }

    #[test]
    fn json_is_the_event_and_reads_back() {
        let page = url::Url::parse("https://hunter.example/").unwrap();
        let event = &events_of_lead(&lead("created", "Incoming"), Some(&page))[0].0;
        let body = render(event, NotifyFormat::Json);
        assert_eq!(body["schema"], SCHEMA);
        assert_eq!(body["kind"], "new_referral");
        assert_eq!(body["lead"]["lead_id"], "r-1");
        assert_eq!(body["lead"]["deal_value"], 1200.0);
        assert_eq!(body["url"], "https://hunter.example/?q=r-1");
        let back: Event = serde_json::from_value(body).unwrap();
        assert_eq!(&back, event);
    }

    #[test]
    fn teams_is_a_message_with_an_adaptive_card() {
        let page = url::Url::parse("https://hunter.example/").unwrap();
        let event = &events_of_lead(&lead("created", "Incoming"), Some(&page))[0].0;
        let body = render(event, NotifyFormat::Teams);
        assert_eq!(body["type"], "message");
        let attachment = &body["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &attachment["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["version"], "1.4");
        assert_eq!(
            card["body"][0]["text"],
            "New incoming referral: Fabrikam & Sons"
        );
        let facts = card["body"][2]["facts"].as_array().unwrap();
        assert!(facts.contains(&json!({"title": "Value", "value": "1200.00 EUR"})));
        assert_eq!(card["actions"][0]["url"], "https://hunter.example/?q=r-1");
    }

    #[test]
    fn slack_has_blocks_and_escapes_markup() {
        let event = &events_of_lead(&lead("created", "Incoming"), None)[0].0;
        let body = render(event, NotifyFormat::Slack);
        assert_eq!(body["blocks"][0]["type"], "header");
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("Fabrikam &amp; Sons"), "{text}");
        assert!(!text.contains("<b>"), "{text}");
        let fields = body["blocks"][2]["fields"].as_array().unwrap();
        assert!(fields.len() <= 10);
        assert!(
            body["blocks"].as_array().unwrap().len() == 3,
            "no link without a page URL"
        );
    }

    #[test]
    fn signin_events_are_per_tenant_and_episode() {
        let mut run = SyncRun::started(
            "run-1",
            "contoso",
            hunter_core::records::RunTrigger::Schedule,
        );
        run.started_at = Timestamp(1_700_000_000_000_000);
        run.finish_failed(
            hunter_core::records::RunErrorClass::SigninRequired,
            "sign-in required: run `hunter auth login`",
        );
        let event = signin_event(&run);
        assert_eq!(event.kind, Kind::SigninRequired);
        assert_eq!(event.subject(), "contoso");
        assert_eq!(event.version, 1_700_000_000_000_000);
        let teams = render(&event, NotifyFormat::Teams);
        assert!(
            teams["attachments"][0]["content"]["body"][0]["text"]
                .as_str()
                .unwrap()
                .contains("sign-in required")
        );
    }
}
