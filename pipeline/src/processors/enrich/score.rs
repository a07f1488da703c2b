//! The score, the priority and the change type: pure functions of the referral version, the
//! enrichment facts and what the processor saw before (the formula is in the parent module's doc).

use hunter_core::records::{ChangeType, EmailProvider, Priority};

use super::non_blank;

/// Everything the score reads; see the module doc for the formula.
#[derive(Debug, Clone, Copy)]
pub(super) struct ScoreInputs<'a> {
    pub(super) status: Option<&'a str>,
    pub(super) substatus: Option<&'a str>,
    pub(super) deal_value_usd: Option<f64>,
    pub(super) size_band: Option<&'a str>,
    pub(super) qualification: Option<&'a str>,
    /// `updatedDateTime − createdDateTime` in microseconds.
    pub(super) age_micros: Option<i64>,
    pub(super) email_provider: EmailProvider,
}

fn is_closed(status: Option<&str>, substatus: Option<&str>) -> bool {
    let is = |value: Option<&str>, wanted: &str| {
        value.is_some_and(|value| value.trim().eq_ignore_ascii_case(wanted))
    };
    is(status, "Closed")
        || ["Won", "Lost", "Declined", "Expired"]
            .iter()
            .any(|closed| is(substatus, closed))
}

pub(super) fn score(inputs: &ScoreInputs<'_>) -> i32 {
    if is_closed(inputs.status, inputs.substatus) {
        return 0;
    }
    let lower = |value: Option<&str>| value.map(|value| value.trim().to_ascii_lowercase());

    let status = match lower(inputs.status).as_deref() {
        Some("active") => 20,
        Some("new") => 15,
        _ => 0,
    };
    let value = match inputs.deal_value_usd {
        Some(usd) if usd > 100.0 => (7.5 * (usd.log10() - 2.0)).floor().min(30.0) as i32,
        _ => 0,
    };
    let size = match inputs.size_band {
        Some("enterprise") => 15,
        Some("large") => 12,
        Some("medium") => 8,
        Some("small") => 4,
        _ => 0,
    };
    let qualification = match lower(inputs.qualification).as_deref() {
        Some("salesqualified") => 15,
        Some("marketingqualified") => 10,
        Some("direct") => 8,
        _ => 0,
    };
    const DAY_MICROS: i64 = 24 * 60 * 60 * 1_000_000;
    let age = match inputs.age_micros {
        Some(age) if age < 0 => 0,
        Some(age) if age <= 7 * DAY_MICROS => 10,
        Some(age) if age <= 30 * DAY_MICROS => 6,
        Some(age) if age <= 90 * DAY_MICROS => 3,
        _ => 0,
    };
    let provider = match inputs.email_provider {
        EmailProvider::Microsoft365 => 10,
        EmailProvider::GoogleWorkspace => 5,
        EmailProvider::Other => 3,
        EmailProvider::Unknown => 0,
    };
    (status + value + size + qualification + age + provider).clamp(0, 100)
}

pub(super) fn priority(score: i32) -> Priority {
    match score {
        60.. => Priority::High,
        35..=59 => Priority::Medium,
        _ => Priority::Low,
    }
}

pub(super) fn change_type(
    status: Option<&str>,
    previous_status: Option<&str>,
    first_version: bool,
) -> ChangeType {
    if first_version {
        return ChangeType::Created;
    }
    match (non_blank(status), non_blank(previous_status)) {
        (Some(current), Some(previous))
            if !current.trim().eq_ignore_ascii_case(previous.trim()) =>
        {
            ChangeType::StatusChanged
        }
        _ => ChangeType::Updated,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DAY: i64 = 24 * 60 * 60 * 1_000_000;

    fn inputs<'a>() -> ScoreInputs<'a> {
        ScoreInputs {
            status: Some("Active"),
            substatus: Some("Accepted"),
            deal_value_usd: Some(10_000.0),
            size_band: Some("medium"),
            qualification: Some("SalesQualified"),
            age_micros: Some(2 * DAY),
            email_provider: EmailProvider::Microsoft365,
        }
    }

    #[test]
    fn the_score_follows_the_documented_table() {
        // 20 (Active) + 15 ($10k) + 8 (medium) + 15 (SalesQualified) + 10 (2 days) + 10 (M365)
        assert_eq!(score(&inputs()), 78);
        let best = ScoreInputs {
            deal_value_usd: Some(5_000_000.0),
            size_band: Some("enterprise"),
            ..inputs()
        };
        assert_eq!(score(&best), 100);
        let nothing = ScoreInputs {
            status: None,
            substatus: None,
            deal_value_usd: None,
            size_band: None,
            qualification: None,
            age_micros: None,
            email_provider: EmailProvider::Unknown,
        };
        assert_eq!(score(&nothing), 0);

        let value_points = |usd: f64| {
            score(&ScoreInputs {
                deal_value_usd: Some(usd),
                ..nothing
            })
        };
        assert_eq!(value_points(100.0), 0);
        assert_eq!(value_points(1_000.0), 7);
        assert_eq!(value_points(10_000.0), 15);
        assert_eq!(value_points(100_000.0), 22);
        assert_eq!(value_points(1_000_000.0), 30);
        assert_eq!(value_points(1e12), 30);

        let age_points = |days: i64| {
            score(&ScoreInputs {
                age_micros: Some(days * DAY),
                ..nothing
            })
        };
        assert_eq!(
            [-1, 0, 7, 8, 30, 31, 90, 91].map(age_points),
            [0, 10, 10, 6, 6, 3, 3, 0]
        );

        let status_points = |status| {
            score(&ScoreInputs {
                status: Some(status),
                ..nothing
            })
        };
        assert_eq!(
            ["active", "New", "None", "Mystery"].map(status_points),
            [20, 15, 0, 0]
        );

        assert_eq!(
            [100, 60, 59, 35, 34, 0].map(|score| priority(score).as_str()),
            ["high", "high", "medium", "medium", "low", "low"]
        );
    }

    #[test]
    fn closed_referrals_score_zero_and_low() {
        for (status, substatus) in [
            (Some("Closed"), Some("Won")),
            (Some("closed"), None),
            (Some("Active"), Some("Lost")),
            (None, Some("Declined")),
            (Some("New"), Some("Expired")),
        ] {
            let closed = ScoreInputs {
                status,
                substatus,
                deal_value_usd: Some(5_000_000.0),
                size_band: Some("enterprise"),
                ..inputs()
            };
            assert_eq!(score(&closed), 0, "{status:?}/{substatus:?}");
            assert_eq!(priority(score(&closed)), Priority::Low);
        }
    }

    fn score_inputs() -> impl Strategy<Value = ScoreInputs<'static>> {
        let text = |values: &[&'static str]| {
            proptest::option::of(proptest::sample::select(values.to_vec()))
        };
        (
            text(&["None", "New", "Active", "Closed", "active", "Other"]),
            text(&[
                "None", "Pending", "Received", "Accepted", "Won", "Lost", "Declined", "Expired",
            ]),
            proptest::option::of(0.0..1e10_f64),
            text(&["small", "medium", "large", "enterprise"]),
            text(&[
                "None",
                "Direct",
                "MarketingQualified",
                "SalesQualified",
                "x",
            ]),
            proptest::option::of(-400 * DAY..400 * DAY),
            proptest::sample::select(EmailProvider::ALL.to_vec()),
        )
            .prop_map(
                |(
                    status,
                    substatus,
                    deal_value_usd,
                    size_band,
                    qualification,
                    age_micros,
                    email_provider,
                )| {
                    ScoreInputs {
                        status,
                        substatus,
                        deal_value_usd,
                        size_band,
                        qualification,
                        age_micros,
                        email_provider,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn scores_stay_within_bounds(inputs in score_inputs()) {
            let score = score(&inputs);
            prop_assert!((0..=100).contains(&score));
            if is_closed(inputs.status, inputs.substatus) {
                prop_assert_eq!(score, 0);
            }
        }

        #[test]
        fn more_value_never_lowers_the_score(
            inputs in score_inputs(),
            a in 0.0..1e10_f64,
            b in 0.0..1e10_f64,
        ) {
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            let with = |usd| score(&ScoreInputs { deal_value_usd: usd, ..inputs });
            prop_assert!(with(Some(low)) <= with(Some(high)));
            prop_assert!(with(None) <= with(Some(low)));
        }
    }

    #[test]
    fn change_types() {
        assert_eq!(change_type(Some("New"), None, true).as_str(), "created");
        assert_eq!(
            change_type(Some("Active"), Some("New"), true).as_str(),
            "created"
        );
        assert_eq!(
            change_type(Some("Active"), Some("New"), false).as_str(),
            "status_changed"
        );
        assert_eq!(
            change_type(Some("Closed"), Some("Active"), false).as_str(),
            "status_changed"
        );
        assert_eq!(
            change_type(Some("Active"), Some("Active"), false).as_str(),
            "updated"
        );
        assert_eq!(
            change_type(Some("Active"), Some(" active "), false).as_str(),
            "updated"
        );
        assert_eq!(change_type(Some("Active"), None, false).as_str(), "updated");
        assert_eq!(change_type(None, Some("Active"), false).as_str(), "updated");
        assert_eq!(
            change_type(Some("Active"), Some(""), false).as_str(),
            "updated"
        );
    }
}
