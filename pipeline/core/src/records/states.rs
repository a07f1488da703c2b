//! The states records carry as text: typed here, written as the same strings everywhere.
//!
//! Each enum's [`as_str`](RunStatus::as_str) value is what the Avro records, the ClickHouse
//! tables, the API and the metrics labels hold: those strings are public contracts and never
//! change (a new variant is a new string, added compatibly). The record fields stay `String`
//! so a value written by a newer Hunter still reads; [`parse`](RunStatus::parse) gives `None`
//! for a string this build does not know, and callers decide what that means.

/// An enum of fixed strings: `as_str`, `parse`, `ALL` and `Display`.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The value as records, tables and the API write it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// The value written as `text` (exactly, case-sensitive); `None` for anything else.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// What started a sync run (`SyncRun::trigger`).
    pub enum RunTrigger {
        /// The sync interval's tick.
        Schedule => "schedule",
        /// The first poll after the source started.
        Startup => "startup",
        /// A `sync_now` command (`POST /partner-center/sync`).
        Manual => "manual",
        /// A scheduled tick that reads everything again (`HUNTER_SYNC_FULL_SWEEP_SECS`).
        Sweep => "sweep",
        /// A `backfill` command (`hunter backfill`): a full or windowed re-read now.
        Backfill => "backfill",
    }
}

text_enum! {
    /// Where a sync run is (`SyncRun::status`).
    pub enum RunStatus {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        /// A manual trigger served by another run (`SyncRun::coalesced_into`).
        Coalesced => "coalesced",
        /// A manual trigger read more than one sync interval after it was requested: not run.
        Expired => "expired",
    }
}

text_enum! {
    /// Why a sync run failed (`SyncRun::error_class`, the `class` label of
    /// `hunter_source_errors_total`).
    pub enum RunErrorClass {
        /// Sign-in needs a person (`hunter auth login`); the tenant's polls are suspended.
        SigninRequired => "signin_required",
        Auth => "auth",
        RateLimited => "rate_limited",
        Network => "network",
        /// A request, or the whole poll (`HUNTER_SYNC_POLL_BUDGET_SECS`), took too long.
        Timeout => "timeout",
        Server => "server",
        /// Partner Center refused the request, or sent a next link or a body Hunter cannot use.
        Client => "client",
        Decode => "decode",
        /// A record could not be encoded with its schema (or the registry was unreachable).
        Encode => "encode",
        Kafka => "kafka",
    }
}

text_enum! {
    /// Who hosts the customer's mail, from its domain's MX records (`Lead::email_provider`).
    pub enum EmailProvider {
        Microsoft365 => "microsoft365",
        GoogleWorkspace => "google_workspace",
        Other => "other",
        Unknown => "unknown",
    }
}

text_enum! {
    /// How `Lead::email_provider` was found (`Lead::email_provider_source`).
    pub enum EmailProviderSource {
        Mx => "mx",
        MxCache => "mx_cache",
        DnsError => "dns_error",
        DnsTimeout => "dns_timeout",
        NoDomain => "no_domain",
    }
}

text_enum! {
    /// A lead's priority, from its score (`Lead::priority`).
    pub enum Priority {
        High => "high",
        Medium => "medium",
        Low => "low",
    }
}

text_enum! {
    /// What a lead version changed against the one before (`Lead::change_type`).
    pub enum ChangeType {
        Created => "created",
        StatusChanged => "status_changed",
        Updated => "updated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T: Copy + PartialEq + std::fmt::Debug>(
        all: &[T],
        as_str: fn(T) -> &'static str,
        parse: fn(&str) -> Option<T>,
    ) -> Vec<&'static str> {
        for value in all {
            assert_eq!(parse(as_str(*value)), Some(*value));
        }
        assert_eq!(parse(""), None);
        let texts: Vec<_> = all.iter().map(|value| as_str(*value)).collect();
        for text in &texts {
            assert_eq!(parse(&text.to_uppercase()), None, "parse is exact");
        }
        texts
    }

    /// The strings are public contracts (Avro records, ClickHouse rows, API, metrics labels).
    #[test]
    fn the_contract_strings_stay_the_same() {
        assert_eq!(
            round_trips(RunTrigger::ALL, RunTrigger::as_str, RunTrigger::parse),
            ["schedule", "startup", "manual", "sweep", "backfill"]
        );
        assert_eq!(
            round_trips(RunStatus::ALL, RunStatus::as_str, RunStatus::parse),
            ["running", "succeeded", "failed", "coalesced", "expired"]
        );
        assert_eq!(
            round_trips(
                RunErrorClass::ALL,
                RunErrorClass::as_str,
                RunErrorClass::parse
            ),
            [
                "signin_required",
                "auth",
                "rate_limited",
                "network",
                "timeout",
                "server",
                "client",
                "decode",
                "encode",
                "kafka"
            ]
        );
        assert_eq!(
            round_trips(
                EmailProvider::ALL,
                EmailProvider::as_str,
                EmailProvider::parse
            ),
            ["microsoft365", "google_workspace", "other", "unknown"]
        );
        assert_eq!(
            round_trips(
                EmailProviderSource::ALL,
                EmailProviderSource::as_str,
                EmailProviderSource::parse
            ),
            ["mx", "mx_cache", "dns_error", "dns_timeout", "no_domain"]
        );
        assert_eq!(
            round_trips(Priority::ALL, Priority::as_str, Priority::parse),
            ["high", "medium", "low"]
        );
        assert_eq!(
            round_trips(ChangeType::ALL, ChangeType::as_str, ChangeType::parse),
            ["created", "status_changed", "updated"]
        );
        assert_eq!(RunStatus::Expired.to_string(), "expired");
    }
}
