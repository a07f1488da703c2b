//! Fault injection for the simulator: `--faults 429:0.1,500:0.05,truncate:0.02` at start, or
//! `POST /_simulator/faults?spec=...` while it runs.
//!
//! Each item is `kind:rate` with `rate` in `0..=1`. Per request, one uniform draw picks at most
//! one fault: the kinds share the unit interval in the order given, so with a total rate of at
//! most 1 every kind happens at exactly its own rate. Kinds:
//!
//! | kind | reply |
//! |---|---|
//! | `401` | 401 `unauthenticated`, as for an expired access token: the token stays expired (never on a token's first request, so one refresh always gets through) |
//! | `429` | 429 with `Retry-After: 1` (or the `retry_after` of `POST /_simulator/faults`) and the throttling body Partner Center documents |
//! | `500` | 500 with a `generalException` error body |
//! | `503` | 503 with a `serviceNotAvailable` error body |
//! | `truncate` | the real 200 reply with its JSON body cut in half |
//! | `slow` | the real reply, whose body arrives 2 s after the headers |

use std::fmt;
use std::str::FromStr;

/// One kind of injected failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// HTTP 401 as for an expired access token (the token stays expired).
    Unauthorized,
    /// HTTP 429 with `Retry-After` (1 s unless changed at run time).
    TooManyRequests,
    /// HTTP 500.
    InternalError,
    /// HTTP 503.
    Unavailable,
    /// A 200 whose JSON body is cut in half.
    Truncate,
    /// A body that arrives after 2 seconds.
    Slow,
}

impl FaultKind {
    /// Every kind, in the order they are documented.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Unauthorized,
        FaultKind::TooManyRequests,
        FaultKind::InternalError,
        FaultKind::Unavailable,
        FaultKind::Truncate,
        FaultKind::Slow,
    ];

    /// The spelling used in a spec.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Unauthorized => "401",
            FaultKind::TooManyRequests => "429",
            FaultKind::InternalError => "500",
            FaultKind::Unavailable => "503",
            FaultKind::Truncate => "truncate",
            FaultKind::Slow => "slow",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `kind:rate` item.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultRule {
    /// What to inject.
    pub kind: FaultKind,
    /// Probability per request, in `0..=1`.
    pub rate: f64,
}

/// A parsed `--faults` value; the default injects nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultSpec {
    /// Rules in the order given.
    pub rules: Vec<FaultRule>,
}

/// A `--faults` value that could not be parsed; names the bad item.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault `{item}`: {reason}")]
pub struct FaultSpecError {
    /// The item as written.
    pub item: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FaultSpec {
    /// Whether no fault can ever be injected.
    pub fn is_empty(&self) -> bool {
        self.rules.iter().all(|rule| rule.rate <= 0.0)
    }

    /// The fault for a request whose uniform draw in `0..1` is `draw`, if any.
    pub fn pick(&self, draw: f64) -> Option<FaultKind> {
        let mut upper = 0.0;
        for rule in &self.rules {
            upper += rule.rate;
            if draw < upper {
                return Some(rule.kind);
            }
        }
        None
    }
}

impl FromStr for FaultSpec {
    type Err = FaultSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut rules: Vec<FaultRule> = Vec::new();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let error = |reason: String| FaultSpecError {
                item: item.to_owned(),
                reason,
            };
            let (kind_text, rate_text) = item
                .split_once(':')
                .ok_or_else(|| error("expected `kind:rate`, e.g. `429:0.1`".to_owned()))?;
            let kind = FaultKind::ALL
                .into_iter()
                .find(|kind| kind.as_str().eq_ignore_ascii_case(kind_text.trim()))
                .ok_or_else(|| {
                    let known: Vec<&str> = FaultKind::ALL.iter().map(|k| k.as_str()).collect();
                    error(format!(
                        "unknown kind `{}` (known: {})",
                        kind_text.trim(),
                        known.join(", ")
                    ))
                })?;
            let rate: f64 = rate_text
                .trim()
                .parse()
                .map_err(|_| error(format!("rate `{}` is not a number", rate_text.trim())))?;
            if !(0.0..=1.0).contains(&rate) {
                return Err(error(format!("rate {rate} is outside 0..=1")));
            }
            if rules.iter().any(|rule| rule.kind == kind) {
                return Err(error(format!("kind `{kind}` is listed twice")));
            }
            rules.push(FaultRule { kind, rate });
        }
        let total: f64 = rules.iter().map(|rule| rule.rate).sum();
        if total > 1.0 + 1e-9 {
            return Err(FaultSpecError {
                item: text.trim().to_owned(),
                reason: format!("rates add up to {total}, more than 1"),
            });
        }
        Ok(FaultSpec { rules })
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, rule) in self.rules.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}", rule.kind, rule.rate)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_example() {
        let spec: FaultSpec = "429:0.1,500:0.05,truncate:0.02".parse().unwrap();
        assert_eq!(
            spec.rules,
            vec![
                FaultRule {
                    kind: FaultKind::TooManyRequests,
                    rate: 0.1
                },
                FaultRule {
                    kind: FaultKind::InternalError,
                    rate: 0.05
                },
                FaultRule {
                    kind: FaultKind::Truncate,
                    rate: 0.02
                },
            ]
        );
        assert_eq!(spec.pick(0.05), Some(FaultKind::TooManyRequests));
        assert_eq!(spec.pick(0.12), Some(FaultKind::InternalError));
        assert_eq!(spec.pick(0.16), Some(FaultKind::Truncate));
        assert_eq!(spec.pick(0.17), None);
        assert!("".parse::<FaultSpec>().unwrap().is_empty());
        assert!(" slow:1 , 503:0 ".parse::<FaultSpec>().is_ok());
        let spec: FaultSpec = "401:0.25,429:0.25".parse().unwrap();
        assert_eq!(spec.pick(0.1), Some(FaultKind::Unauthorized));
        assert_eq!(spec.pick(0.3), Some(FaultKind::TooManyRequests));
        assert_eq!(spec.to_string(), "401:0.25,429:0.25");
    }

    #[test]
    fn errors_name_the_bad_item() {
        let cases = [
            ("429:0.1,404:0.2", "404:0.2", "unknown kind `404`"),
            ("429:1.5", "429:1.5", "outside 0..=1"),
            ("500:-0.1", "500:-0.1", "outside 0..=1"),
            ("truncate", "truncate", "kind:rate"),
            ("slow:often", "slow:often", "not a number"),
            ("429:0.1,429:0.2", "429:0.2", "twice"),
            ("429:0.6,500:0.6", "429:0.6,500:0.6", "more than 1"),
        ];
        for (text, item, reason) in cases {
            let error = text.parse::<FaultSpec>().unwrap_err();
            assert_eq!(error.item, item, "{text}");
            assert!(error.reason.contains(reason), "{text}: {}", error.reason);
            assert!(error.to_string().contains(item));
        }
        let error = "403:0.1".parse::<FaultSpec>().unwrap_err();
        assert!(error.reason.contains("known: 401, 429"), "{}", error.reason);
    }

    fn kind() -> impl Strategy<Value = FaultKind> {
        prop::sample::select(FaultKind::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn display_round_trips(kinds in prop::collection::hash_set(kind(), 0..6),
                               rates in prop::collection::vec(0u32..=160, 6)) {
            let rules: Vec<FaultRule> = kinds
                .into_iter()
                .zip(rates)
                .map(|(kind, rate)| FaultRule { kind, rate: f64::from(rate) / 1000.0 })
                .collect();
            let spec = FaultSpec { rules };
            let parsed: FaultSpec = spec.to_string().parse().unwrap();
            prop_assert_eq!(parsed, spec);
        }

        #[test]
        fn never_panics(text in "[0-9a-z:.,-]{0,30}") {
            let _ = text.parse::<FaultSpec>();
        }
    }
}
