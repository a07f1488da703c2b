//! Security rules applied to settings at start: API token strength, plain-HTTP sign-in URLs, the
//! per-user state directory of the token cache, and passwords in URLs redacted for printing.
//!
//! Invariants:
//! - a token that [`check_token`] refuses never reaches the API: `Settings` fails at start with
//!   the setting named and the command that makes a good one (`openssl rand -hex 32`);
//! - no message built here quotes a refused token (it may be a real secret with a typo);
//! - [`redact_url_passwords`] replaces the password of every `scheme://user:password@host` in a
//!   text, whatever else the text holds, so it can be applied to whole error messages.
//!
//! The token rule (documented in `docs/security.md`): after trimming, a token must
//! 1. be printable ASCII without spaces (it travels in an HTTP header);
//! 2. not contain a placeholder word (`changeme`, `replacewith`, `example`, ... compared on the
//!    lowercase letters and digits only, so `change-me` and `CHANGE_ME` count too);
//! 3. not be a shorter pattern repeated (`abcabcabc...`);
//! 4. have an estimated strength of at least [`MIN_TOKEN_BITS`] bits: its length times the bits
//!    per character of the character classes it uses (hex digits 4; digits 3.32; lowercase
//!    letters 4.7; lowercase and digits 5.17; letters and digits 5.95; with other symbols 6.57),
//!    where `-` between hex groups (a UUID) does not count as a character;
//! 5. vary its characters like a random string: a Shannon entropy of at least 2.5 bits per
//!    character (0.6 of what its alphabet carries when that is less: 2.4 for hex, 2.0 for
//!    digits only), which refuses `aaaa...`, `abab...`, four letters in turn and other
//!    low-variety strings that rule 4 alone would let through. Random tokens are far above it
//!    (32 random hex characters: about 3.7 bits, under 2.9 in none of 300,000 draws).
//!
//! 32 random hex characters (128 bits, e.g. a UUID) pass; `openssl rand -hex 32` (256 bits) is
//! what the docs recommend.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use url::{Host, Url};

/// Least estimated strength of an API token, in bits.
pub const MIN_TOKEN_BITS: f64 = 128.0;

/// How to make a good token, for error messages and docs.
pub const TOKEN_ADVICE: &str =
    "make one with `openssl rand -hex 32` (64 hex characters, 256 bits; see docs/security.md)";

/// Words that mark a value as a placeholder, compared on lowercase letters and digits only.
const PLACEHOLDER_WORDS: &[&str] = &[
    "changeme",
    "changeit",
    "replacewith",
    "replaceme",
    "example",
    "placeholder",
    "yourtoken",
    "yourapitoken",
    "yoursecret",
    "yourpassword",
    "insertyour",
    "putyour",
    "dummytoken",
    "notasecret",
];

/// Values refused outright as passwords or secrets (after trimming, case-insensitive).
const PLACEHOLDER_VALUES: &[&str] = &["secret", "password", "token", "admin", "xxx", "todo"];

/// Why `value` looks like a placeholder, if it does (for secrets that are not ours to rate,
/// such as a ClickHouse password: only the placeholder rule applies to them).
pub fn placeholder_reason(value: &str) -> Option<String> {
    let normalized: String = value
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if let Some(word) = PLACEHOLDER_WORDS.iter().find(|w| normalized.contains(*w)) {
        return Some(format!(
            "looks like a placeholder (it contains {word:?}); replace it with a real value"
        ));
    }
    if PLACEHOLDER_VALUES.contains(&value.trim().to_ascii_lowercase().as_str()) {
        return Some("is a placeholder value; replace it with a real value".into());
    }
    None
}

/// Checks an API token against the rule in the module docs; `Err` says what is wrong (without
/// quoting the token) and how to make a good one.
pub fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err(format!("is empty; {TOKEN_ADVICE}"));
    }
    if let Some(bad) = token.chars().find(|c| !c.is_ascii_graphic()) {
        let what = if bad == ' ' {
            "a space".to_owned()
        } else if bad.is_ascii() {
            format!("the control character {:#04x}", bad as u32)
        } else {
            "a non-ASCII character".to_owned()
        };
        return Err(format!(
            "contains {what}; tokens are printable ASCII without spaces (they travel in an HTTP header); {TOKEN_ADVICE}"
        ));
    }
    if let Some(reason) = placeholder_reason(token) {
        return Err(format!("{reason}; {TOKEN_ADVICE}"));
    }
    if let Some(period) = repeating_period(token) {
        return Err(format!(
            "repeats a pattern of {period} character(s); {TOKEN_ADVICE}"
        ));
    }
    let strength = token_strength(token);
    if strength.bits < MIN_TOKEN_BITS {
        return Err(format!(
            "is too weak: about {:.0} bits estimated ({} characters of an alphabet of {}), at least {MIN_TOKEN_BITS:.0} are required; {TOKEN_ADVICE}",
            strength.bits.floor(),
            strength.length,
            strength.alphabet
        ));
    }
    if strength.entropy_per_char < min_entropy_per_char(strength.alphabet) {
        return Err(format!(
            "uses too few different characters for a random token; {TOKEN_ADVICE}"
        ));
    }
    Ok(())
}

/// The estimate behind rule 4 and 5.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenStrength {
    /// Characters counted (separators of a hex token excluded).
    pub length: usize,
    /// Size of the alphabet its character classes span.
    pub alphabet: u32,
    /// `length * log2(alphabet)`.
    pub bits: f64,
    /// Shannon entropy per character of the token itself, in bits.
    pub entropy_per_char: f64,
}

/// Rule 5's floor: 2.5 bits per character, or 0.6 of what the alphabet carries when that is
/// less (hex 2.4, digits 2.0), far enough below random strings that no real token is refused.
fn min_entropy_per_char(alphabet: u32) -> f64 {
    (0.6 * f64::from(alphabet).log2()).min(2.5)
}

/// Estimates a token's strength (see the module docs).
pub fn token_strength(token: &str) -> TokenStrength {
    let hex_groups = token.contains(|c: char| c.is_ascii_hexdigit())
        && token.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    let counted: Vec<char> = if hex_groups {
        token.chars().filter(|c| *c != '-').collect()
    } else {
        token.chars().collect()
    };
    let alphabet = if hex_groups {
        16
    } else {
        let mut size = 0;
        if counted.iter().any(char::is_ascii_lowercase) {
            size += 26;
        }
        if counted.iter().any(char::is_ascii_uppercase) {
            size += 26;
        }
        if counted.iter().any(char::is_ascii_digit) {
            size += 10;
        }
        if counted.iter().any(|c| !c.is_ascii_alphanumeric()) {
            size += 33;
        }
        size.max(1)
    };
    let length = counted.len();
    let bits = length as f64 * f64::from(alphabet).log2();
    let mut counts: HashMap<char, usize> = HashMap::new();
    for c in &counted {
        *counts.entry(*c).or_default() += 1;
    }
    let entropy: f64 = counts
        .values()
        .map(|n| {
            let p = *n as f64 / length.max(1) as f64;
            -p * p.log2()
        })
        .sum();
    TokenStrength {
        length,
        alphabet,
        bits,
        entropy_per_char: entropy,
    }
}

/// The shortest period `p < len` such that the token is its first `p` characters repeated
/// (the last repetition may be cut short), when the pattern repeats at least twice.
fn repeating_period(token: &str) -> Option<usize> {
    let bytes = token.as_bytes();
    (1..=bytes.len() / 2).find(|&p| (p..bytes.len()).all(|i| bytes[i] == bytes[i - p]))
}

/// Whether a URL's host is this machine: `localhost` (and `*.localhost`), 127.0.0.0/8, `::1`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            domain == "localhost" || domain.ends_with(".localhost")
        }
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// `Err` when `url` is plain `http://` to another machine and `allow_insecure` is off: a token
/// sent there (the refresh token at sign-in, the access token on every API call) would travel
/// unencrypted. The message names the switch that allows it; the caller names the setting.
pub fn check_secure_url(url: &Url, allow_insecure: bool) -> Result<(), String> {
    if url.scheme() != "http" || allow_insecure || is_loopback(url) {
        return Ok(());
    }
    Err(format!(
        "{} is plain http to {}, so tokens would cross the network unencrypted; use https, \
         or set HUNTER_ALLOW_INSECURE_HTTP=true for a development setup such as the demo \
         simulator (loopback addresses are always allowed)",
        redact_url_passwords(url.as_str()),
        url.host_str().unwrap_or("another host"),
    ))
}

/// Replaces the password of every `scheme://user:password@host` in `text` with `***`
/// (`https://user:***@host`). A URL without a password is left as it is.
pub fn redact_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let authority_start = at + 3;
        out.push_str(&rest[..authority_start]);
        let after = &rest[authority_start..];
        // The authority ends at the path, query, fragment, or anything that cannot be in it.
        let end = after
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`') || c.is_whitespace()
            })
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at_sign) => {
                let userinfo = &authority[..at_sign];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at_sign..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The per-user state directory for Hunter's files: `$XDG_STATE_HOME/hunter` when that is an
/// absolute path, else `$HOME/.local/state/hunter`; `None` without either.
pub fn state_dir(env: &HashMap<String, String>) -> Option<PathBuf> {
    let absolute = |name: &str| {
        env.get(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    if let Some(state) = absolute("XDG_STATE_HOME") {
        return Some(state.join("hunter"));
    }
    absolute("HOME").map(|home| home.join(".local").join("state").join("hunter"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_tokens_pass() {
        for token in [
            // openssl rand -hex 32
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            // openssl rand -base64 32
            "q3B0r5Xw8n2vZC7yJk1mT9sLhQe4UoPaGdRfWiYxVbE=",
            // uuid v4, simple and hyphenated (what the tests use)
            "3f1c2a9be47d4c0f8a6b5d2e1c9f7a30",
            "3f1c2a9b-e47d-4c0f-8a6b-5d2e1c9f7a30",
            "read-token-SENTINEL-51b2e8f3c4",
            // prefixed tokens
            "read-3f1c2a9be47d4c0f8a6b5d2e1c9f7a30",
            "hunter_9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            // digits only, 40 random digits
            "8214069375120984736512098347651209834765",
        ] {
            assert_eq!(check_token(token), Ok(()), "{token}");
        }
    }

    #[test]
    fn placeholders_and_weak_tokens_are_refused_with_advice() {
        for token in [
            "change-me-to-a-long-random-token",
            "replace-with-a-long-random-token",
            "replace-with-another-long-random-token",
            "CHANGE_ME_0123456789abcdef0123456789",
            "changeme",
            "example-token-4f1c2a9be47d4c0f8a6b5d2e",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "abababababababababababababababababababab",
            "abcdabdcbadcabcdabdcbadcabcdabdcbadcabcdabdcbadc",
            "0123456789abcdef0123456789abcdef",
            "0123456789abcdef",
            "1111111111111111111111111111111111111112",
            "a1b2c3d4e5f6a7b8",
            "has space 3f1c2a9be47d4c0f8a6b5d2e1c9f7a30",
            "",
        ] {
            let error = check_token(token).expect_err(token);
            assert!(error.contains("openssl rand -hex 32"), "{token}: {error}");
            if token.len() > 8 {
                assert!(
                    !error.contains(token),
                    "the error quotes the token: {error}"
                );
            }
        }
    }

    /// Random tokens of the usual shapes always pass (rule 5 must not refuse real ones): 10,000
    /// of each from a fixed-seed xorshift generator, so a failure repeats.
    #[test]
    fn random_tokens_of_the_usual_shapes_always_pass() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut pick = |alphabet: &[u8], n: usize| -> String {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize] as char
                })
                .collect()
        };
        let hex = b"0123456789abcdef";
        let b64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for _ in 0..10_000 {
            for token in [
                pick(hex, 32),
                pick(hex, 64),
                pick(b64, 44),
                pick(b64, 43),
                format!("read-{}", pick(hex, 32)),
                format!("hunter_{}", pick(hex, 64)),
                pick(b"0123456789", 40),
            ] {
                assert_eq!(check_token(&token), Ok(()), "{token}");
            }
        }
    }

    #[test]
    fn strength_estimate() {
        let hex = token_strength("3f1c2a9be47d4c0f8a6b5d2e1c9f7a30");
        assert_eq!((hex.length, hex.alphabet), (32, 16));
        assert!((hex.bits - 128.0).abs() < 1e-9);
        let uuid = token_strength("3f1c2a9b-e47d-4c0f-8a6b-5d2e1c9f7a30");
        assert_eq!((uuid.length, uuid.alphabet), (32, 16));
        let mixed = token_strength("Zb1-");
        assert_eq!(mixed.alphabet, 95);
        assert!(token_strength("aaaa").entropy_per_char < 0.01);
        assert!((token_strength("abab").entropy_per_char - 1.0).abs() < 1e-9);
    }

    #[test]
    fn placeholder_values() {
        assert!(placeholder_reason("replace-me").is_some());
        assert!(placeholder_reason("changeme").is_some());
        assert!(placeholder_reason("Secret").is_some());
        assert!(placeholder_reason("x7Hq-2mPz-secure").is_none());
    }

    #[test]
    fn loopback_and_insecure_urls() {
        let url = |s: &str| Url::parse(s).unwrap();
        for loopback in [
            "http://127.0.0.1:18080",
            "http://127.8.9.10/",
            "http://[::1]:8080/x",
            "http://localhost:1/",
            "http://api.localhost/",
        ] {
            assert!(is_loopback(&url(loopback)), "{loopback}");
            assert_eq!(check_secure_url(&url(loopback), false), Ok(()));
        }
        for remote in [
            "http://simulator:18080",
            "http://10.0.0.1/",
            "http://login.example.com",
            "http://localhost.example.com/",
        ] {
            assert!(!is_loopback(&url(remote)), "{remote}");
            let error = check_secure_url(&url(remote), false).unwrap_err();
            assert!(error.contains("HUNTER_ALLOW_INSECURE_HTTP"), "{error}");
            assert_eq!(check_secure_url(&url(remote), true), Ok(()));
        }
        assert_eq!(
            check_secure_url(&url("https://login.microsoftonline.com"), false),
            Ok(())
        );
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url_passwords("https://user:pass@host/x"),
            "https://user:***@host/x"
        );
        assert_eq!(
            redact_url_passwords(
                "registry http://a:b@r:8081/subjects: error; clickhouse http://u:p%40ss@c:8123"
            ),
            "registry http://a:***@r:8081/subjects: error; clickhouse http://u:***@c:8123"
        );
        assert_eq!(
            redact_url_passwords("http://only-user@host and http://host:8123/"),
            "http://only-user@host and http://host:8123/"
        );
        assert_eq!(redact_url_passwords("no url here"), "no url here");
        assert_eq!(
            redact_url_passwords("\"http://u:p@h\""),
            "\"http://u:***@h\""
        );
    }

    #[test]
    fn the_state_directory() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            state_dir(&env(&[("HOME", "/home/op"), ("XDG_STATE_HOME", "/st")])),
            Some(PathBuf::from("/st/hunter"))
        );
        assert_eq!(
            state_dir(&env(&[("HOME", "/home/op"), ("XDG_STATE_HOME", "rel")])),
            Some(PathBuf::from("/home/op/.local/state/hunter"))
        );
        assert_eq!(state_dir(&env(&[])), None);
    }
}
