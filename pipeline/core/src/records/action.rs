//! Write-back of referral actions (`docs/writeback.md`): the records, and the one pure
//! definition of what each action changes at Partner Center.
//!
//! [`plan`] is shared by the API (validation before anything is queued), the source (the JSON
//! Patch it sends) and the source's crash recovery ([`Plan::is_applied_to`]: whether a referral
//! already carries what the action would produce), so the three never disagree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::lenient::Timestamp;

/// A change a user asked for (`schemas/referral_action.avsc`, topic `hunter.referral-actions.v1`,
/// key = referral id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferralAction {
    pub action_id: String,
    pub referral_id: String,
    pub tenant: String,
    /// An [`ActionKind`].
    pub action: String,
    /// Validated fields: see [`FIELD_NAMES`].
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    pub expected_etag: Option<String>,
    pub expected_status: Option<String>,
    pub actor_name: String,
    pub actor_role: String,
    pub requested_at: Timestamp,
}

/// One step of an action (`schemas/referral_action_result.avsc`, topic
/// `hunter.referral-action-results.v1`, key = referral id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferralActionResult {
    pub action_id: String,
    pub referral_id: String,
    pub tenant: String,
    pub action: String,
    /// An [`ActionState`].
    pub state: String,
    pub message: Option<String>,
    pub request_id: Option<String>,
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    pub current_etag: Option<String>,
    pub current_version: Option<String>,
    pub actor_name: String,
    pub actor_role: String,
    pub requested_at: Timestamp,
    pub at: Timestamp,
}

impl ReferralActionResult {
    /// A step of `action` now, with nothing else known yet.
    pub fn of(action: &ReferralAction, state: ActionState) -> Self {
        Self {
            action_id: action.action_id.clone(),
            referral_id: action.referral_id.clone(),
            tenant: action.tenant.clone(),
            action: action.action.clone(),
            state: state.as_str().to_owned(),
            message: None,
            request_id: None,
            from_status: action.expected_status.clone(),
            to_status: None,
            current_etag: None,
            current_version: None,
            actor_name: action.actor_name.clone(),
            actor_role: action.actor_role.clone(),
            requested_at: action.requested_at,
            at: Timestamp::now(),
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Accept,
    Decline,
    Won,
    Lost,
    Update,
}

impl ActionKind {
    pub const ALL: [ActionKind; 5] = [
        ActionKind::Accept,
        ActionKind::Decline,
        ActionKind::Won,
        ActionKind::Lost,
        ActionKind::Update,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Accept => "accept",
            ActionKind::Decline => "decline",
            ActionKind::Won => "won",
            ActionKind::Lost => "lost",
            ActionKind::Update => "update",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The status/substatus the action moves to; `None` for `update` (no status change).
    pub fn target(self) -> Option<(&'static str, &'static str)> {
        match self {
            ActionKind::Accept => Some(("Active", "Accepted")),
            ActionKind::Decline => Some(("Closed", "Declined")),
            ActionKind::Won => Some(("Closed", "Won")),
            ActionKind::Lost => Some(("Closed", "Lost")),
            ActionKind::Update => None,
        }
    }

    /// The statuses the action may start from.
    pub fn allowed_from(self) -> &'static [&'static str] {
        match self {
            ActionKind::Accept | ActionKind::Decline => &["New"],
            ActionKind::Won | ActionKind::Lost => &["Active"],
            ActionKind::Update => &["New", "Active"],
        }
    }
}

/// The state of an action; the last four are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionState {
    /// Accepted by the API and produced to the actions topic.
    Queued,
    /// The source is sending the PATCH (a crash after this is resolved by comparing).
    Sent,
    /// Partner Center holds the change.
    Applied,
    /// The referral changed since the user saw it (412): not retried.
    Conflict,
    /// Partner Center refused it (4xx other than 412), with its message.
    Rejected,
    /// It could not be sent (the tenant is unknown, sign-in is needed, retries ran out).
    Failed,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Queued => "queued",
            ActionState::Sent => "sent",
            ActionState::Applied => "applied",
            ActionState::Conflict => "conflict",
            ActionState::Rejected => "rejected",
            ActionState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            ActionState::Queued,
            ActionState::Sent,
            ActionState::Applied,
            ActionState::Conflict,
            ActionState::Rejected,
            ActionState::Failed,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }

    pub fn is_final(self) -> bool {
        !matches!(self, ActionState::Queued | ActionState::Sent)
    }
}

/// The fields an action may carry.
pub const FIELD_NAMES: [&str; 7] = [
    "reason",
    "deal_value",
    "currency",
    "closing_date",
    "notes",
    "team_member_email",
    "team_member_name",
];

/// ISO 4217 active currency codes.
pub const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWL",
];

/// Why an action is refused before anything is queued: the field (or `action`, `status`, …)
/// and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// What a referral looks like to [`plan`]: the parts the rules read.
#[derive(Debug, Clone, Default)]
pub struct ReferralView {
    pub status: Option<String>,
    pub substatus: Option<String>,
    pub direction: Option<String>,
    pub referral_type: Option<String>,
}

/// The JSON Patch for an action, and the values it sets (for the already-applied check).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub kind: ActionKind,
    /// `[{op, path, value}]`, `replace`/`add` only.
    pub operations: serde_json::Value,
    /// (JSON pointer, value) pairs the referral holds once the action is applied.
    pub expects: Vec<(String, serde_json::Value)>,
    /// `Status/Substatus` after, if the action changes it.
    pub to_status: Option<String>,
}

impl Plan {
    /// Whether `referral` (Partner Center's JSON) already holds everything this action sets:
    /// then a PATCH of it was applied (by us before a crash, or by someone doing the same).
    /// Notes and team members are appended, so they count as applied when present.
    pub fn is_applied_to(&self, referral: &serde_json::Value) -> bool {
        self.expects.iter().all(|(pointer, want)| {
            match (pointer.strip_suffix("/-"), referral.pointer(pointer)) {
                (Some(array), _) => referral
                    .pointer(array)
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(|items| items.contains(want)),
                (None, Some(found)) => {
                    found == want
                        || (pointer.ends_with("/notes")
                            && found
                                .as_str()
                                .zip(want.as_str())
                                .is_some_and(|(have, add)| have.ends_with(add)))
                        || number_text_equal(found, want)
                }
                (None, None) => false,
            }
        })
    }
}

/// `"25000.50"` and `25000.5` are the same deal value (the service reads numbers, examples
/// write strings).
fn number_text_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    let number = |value: &serde_json::Value| match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    matches!((number(a), number(b)), (Some(x), Some(y)) if x == y)
}

/// Validates `action` with `fields` against `referral` as Hunter last saw it, and says what to
/// send. `today` is the UTC date (`YYYY-MM-DD`) for the "closing date in the past" rule; the
/// notes already on the referral are needed to append to them.
pub fn plan(
    action: &str,
    fields: &BTreeMap<String, String>,
    referral: &ReferralView,
    current_notes: Option<&str>,
    today: &str,
) -> Result<Plan, Refusal> {
    let kind = ActionKind::parse(action).ok_or_else(|| {
        Refusal::new(
            "action",
            format!("unknown action `{action}`: one of accept, decline, won, lost, update"),
        )
    })?;
    for name in fields.keys() {
        if !FIELD_NAMES.contains(&name.as_str()) {
            return Err(Refusal::new(
                "fields",
                format!("unknown field `{name}` (known: {})", FIELD_NAMES.join(", ")),
            ));
        }
    }
    let field = |name: &str| {
        fields
            .get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    };
    let status = referral.status.as_deref().unwrap_or("None");
    let substatus = referral.substatus.as_deref().unwrap_or("None");
    if !kind.allowed_from().contains(&status) {
        let why = if status == "Closed" {
            "a Closed referral cannot be changed".to_owned()
        } else {
            format!(
                "`{}` needs a referral that is {}",
                kind.as_str(),
                kind.allowed_from().join(" or ")
            )
        };
        return Err(Refusal::new(
            "action",
            format!("not allowed on a {status}/{substatus} referral: {why}"),
        ));
    }
    if matches!(kind, ActionKind::Accept | ActionKind::Decline)
        && referral.direction.as_deref() == Some("Outgoing")
    {
        return Err(Refusal::new(
            "action",
            format!(
                "`{}` answers an incoming referral; this one is Outgoing (the other party accepts or declines it)",
                kind.as_str()
            ),
        ));
    }
    let mut operations = Vec::new();
    let mut expects = Vec::new();
    let mut set = |op: &str, path: &str, value: serde_json::Value| {
        operations.push(serde_json::json!({"op": op, "path": path, "value": value}));
        expects.push((path.to_owned(), value));
    };
    if let Some((to, to_sub)) = kind.target() {
        set("replace", "/status", to.into());
        set("replace", "/substatus", to_sub.into());
    }
    let reason = field("reason");
    if matches!(kind, ActionKind::Decline | ActionKind::Lost) {
        let reason = reason.ok_or_else(|| {
            Refusal::new(
                "reason",
                format!("a reason is required to mark a referral {}", kind.as_str()),
            )
        })?;
        set("add", "/statusReason", reason.into());
    } else if let Some(reason) = reason
        && kind != ActionKind::Update
    {
        set("add", "/statusReason", reason.into());
    }
    let deal_value = field("deal_value")
        .map(|text| {
            let value: f64 = text
                .parse()
                .map_err(|_| Refusal::new("deal_value", format!("`{text}` is not a number")))?;
            if !value.is_finite() || value < 0.0 {
                return Err(Refusal::new(
                    "deal_value",
                    "must be zero or more".to_owned(),
                ));
            }
            if value > 1e15 {
                return Err(Refusal::new(
                    "deal_value",
                    "is implausibly large".to_owned(),
                ));
            }
            Ok(text.to_owned())
        })
        .transpose()?;
    let currency = field("currency")
        .map(|text| {
            let upper = text.to_ascii_uppercase();
            if CURRENCIES.contains(&upper.as_str()) {
                Ok(upper)
            } else {
                Err(Refusal::new(
                    "currency",
                    format!("`{text}` is not an ISO 4217 currency code"),
                ))
            }
        })
        .transpose()?;
    let closing_date = field("closing_date")
        .map(|text| {
            let date = time::Date::parse(
                text,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .map_err(|_| {
                Refusal::new("closing_date", format!("`{text}` is not a YYYY-MM-DD date"))
            })?;
            if kind == ActionKind::Won && text < today {
                return Err(Refusal::new(
                    "closing_date",
                    format!("{text} is in the past; a won deal closes today or later"),
                ));
            }
            Ok(format!("{date}T00:00:00Z"))
        })
        .transpose()?;
    if kind == ActionKind::Won && deal_value.is_none() {
        return Err(Refusal::new("deal_value", "a won deal needs its value"));
    }
    if deal_value.is_some() && currency.is_none() {
        return Err(Refusal::new("currency", "a deal value needs its currency"));
    }
    if !matches!(
        kind,
        ActionKind::Won | ActionKind::Lost | ActionKind::Update
    ) && (deal_value.is_some() || closing_date.is_some())
    {
        let name = if deal_value.is_some() {
            "deal_value"
        } else {
            "closing_date"
        };
        return Err(Refusal::new(
            name,
            format!("`{}` does not take a {name}", kind.as_str()),
        ));
    }
    if let Some(value) = deal_value {
        set("replace", "/details/dealValue", value.into());
    }
    if let Some(currency) = currency {
        set("replace", "/details/currency", currency.into());
    }
    if let Some(date) = closing_date {
        set("replace", "/details/closingDateTime", date.into());
    }
    if let Some(notes) = field("notes") {
        let joined = match current_notes.map(str::trim).filter(|n| !n.is_empty()) {
            Some(existing) => format!("{existing}\n{notes}"),
            None => notes.to_owned(),
        };
        operations
            .push(serde_json::json!({"op": "add", "path": "/details/notes", "value": joined}));
        expects.push(("/details/notes".to_owned(), notes.into()));
    }
    if let Some(email) = field("team_member_email") {
        if !email.contains('@') || email.contains(char::is_whitespace) {
            return Err(Refusal::new(
                "team_member_email",
                format!("`{email}` is not an email address"),
            ));
        }
        let (first, last) = field("team_member_name")
            .map(|name| match name.split_once(' ') {
                Some((first, last)) => (first.to_owned(), last.to_owned()),
                None => (name.to_owned(), String::new()),
            })
            .unwrap_or_default();
        let member = serde_json::json!({"firstName": first, "lastName": last, "email": email});
        operations.push(serde_json::json!({"op": "add", "path": "/team/-", "value": member}));
        expects.push(("/team/-".to_owned(), member));
    } else if field("team_member_name").is_some() {
        return Err(Refusal::new(
            "team_member_email",
            "a team member needs an email address",
        ));
    }
    if operations.is_empty() {
        return Err(Refusal::new(
            "fields",
            "`update` needs at least one of deal_value, currency, closing_date, notes, team_member_email",
        ));
    }
    Ok(Plan {
        kind,
        operations: serde_json::Value::Array(operations),
        expects,
        to_status: kind.target().map(|(s, sub)| format!("{s}/{sub}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: &str, substatus: &str, direction: &str) -> ReferralView {
        ReferralView {
            status: Some(status.into()),
            substatus: Some(substatus.into()),
            direction: Some(direction.into()),
            referral_type: Some("Independent".into()),
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const TODAY: &str = "2030-01-10";

    #[test]
    fn accept_and_won_plans_and_their_applied_check() {
        let incoming = view("New", "Received", "Incoming");
        let accept = plan("accept", &fields(&[]), &incoming, None, TODAY).unwrap();
        assert_eq!(accept.to_status.as_deref(), Some("Active/Accepted"));
        let referral = serde_json::json!({"status": "Active", "substatus": "Accepted"});
        assert!(accept.is_applied_to(&referral));
        assert!(!accept.is_applied_to(&serde_json::json!({"status": "New"})));

        let active = view("Active", "Accepted", "Incoming");
        let won = plan(
            "won",
            &fields(&[
                ("deal_value", "1200.50"),
                ("currency", "eur"),
                ("closing_date", TODAY),
            ]),
            &active,
            None,
            TODAY,
        )
        .unwrap();
        let applied = serde_json::json!({"status": "Closed", "substatus": "Won",
            "details": {"dealValue": 1200.5, "currency": "EUR", "closingDateTime": "2030-01-10T00:00:00Z"}});
        assert!(won.is_applied_to(&applied));
        let other_value = serde_json::json!({"status": "Closed", "substatus": "Won",
            "details": {"dealValue": 1.0, "currency": "EUR", "closingDateTime": "2030-01-10T00:00:00Z"}});
        assert!(!won.is_applied_to(&other_value));
    }

    #[test]
    fn refusals_name_the_field() {
        let new = view("New", "Received", "Incoming");
        let active = view("Active", "Accepted", "Incoming");
        let refuse = |action: &str, pairs: &[(&str, &str)], on: &ReferralView| {
            plan(action, &fields(pairs), on, None, TODAY)
                .unwrap_err()
                .field
        };
        assert_eq!(refuse("promote", &[], &new), "action");
        assert_eq!(refuse("decline", &[], &new), "reason");
        assert_eq!(refuse("won", &[], &new), "action", "New cannot be won");
        assert_eq!(
            refuse("accept", &[], &view("Closed", "Won", "Incoming")),
            "action"
        );
        assert_eq!(
            refuse("accept", &[], &view("New", "Pending", "Outgoing")),
            "action"
        );
        assert_eq!(
            refuse("won", &[("deal_value", "-1"), ("currency", "USD")], &active),
            "deal_value"
        );
        assert_eq!(
            refuse("won", &[("deal_value", "10"), ("currency", "XYZ")], &active),
            "currency"
        );
        assert_eq!(
            refuse(
                "won",
                &[
                    ("deal_value", "10"),
                    ("currency", "USD"),
                    ("closing_date", "2030-01-09")
                ],
                &active
            ),
            "closing_date"
        );
        assert_eq!(refuse("lost", &[], &active), "reason");
        assert_eq!(refuse("update", &[], &active), "fields");
        assert_eq!(refuse("update", &[("colour", "red")], &active), "fields");
        // Lost may have a past closing date.
        plan(
            "lost",
            &fields(&[("reason", "budget"), ("closing_date", "2029-12-01")]),
            &active,
            None,
            TODAY,
        )
        .unwrap();
    }

    #[test]
    fn notes_are_appended_and_team_members_added() {
        let active = view("Active", "Accepted", "Incoming");
        let update = plan(
            "update",
            &fields(&[
                ("notes", "called them"),
                ("team_member_email", "a@b.example"),
                ("team_member_name", "Ann Bee"),
            ]),
            &active,
            Some("first note"),
            TODAY,
        )
        .unwrap();
        assert_eq!(update.operations[0]["value"], "first note\ncalled them");
        assert_eq!(update.operations[1]["path"], "/team/-");
        let referral = serde_json::json!({"details": {"notes": "first note\ncalled them"},
            "team": [{"firstName": "Ann", "lastName": "Bee", "email": "a@b.example"}]});
        assert!(update.is_applied_to(&referral));
    }
}
