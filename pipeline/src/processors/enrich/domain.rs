//! The company domain: the customer's registrable domain from its website, else from the
//! first company (not free-mail) address of its contacts.

use hunter_core::records::Referral;

use super::non_blank;

/// Registrable domains that are mailbox providers, not companies.
const FREE_MAIL_DOMAINS: &[&str] = &[
    "126.com",
    "163.com",
    "aim.com",
    "aliyun.com",
    "att.net",
    "bellsouth.net",
    "bigpond.com",
    "bk.ru",
    "bol.com.br",
    "btinternet.com",
    "charter.net",
    "comcast.net",
    "cox.net",
    "daum.net",
    "earthlink.net",
    "email.com",
    "fastmail.com",
    "fastmail.fm",
    "foxmail.com",
    "free.fr",
    "freenet.de",
    "gmail.com",
    "googlemail.com",
    "hanmail.net",
    "hey.com",
    "hushmail.com",
    "icloud.com",
    "inbox.ru",
    "interia.pl",
    "laposte.net",
    "libero.it",
    "list.ru",
    "mac.com",
    "mail.com",
    "mail.ru",
    "me.com",
    "msn.com",
    "naver.com",
    "ntlworld.com",
    "o2.pl",
    "onet.pl",
    "optonline.net",
    "orange.fr",
    "passport.com",
    "pm.me",
    "proton.me",
    "protonmail.ch",
    "protonmail.com",
    "qq.com",
    "rambler.ru",
    "rediffmail.com",
    "rocketmail.com",
    "rogers.com",
    "sbcglobal.net",
    "seznam.cz",
    "sfr.fr",
    "shaw.ca",
    "sina.cn",
    "sina.com",
    "sky.com",
    "sohu.com",
    "sympatico.ca",
    "t-online.de",
    "talktalk.net",
    "terra.com.br",
    "tuta.com",
    "tuta.io",
    "tutanota.com",
    "tutanota.de",
    "uol.com.br",
    "verizon.net",
    "virginmedia.com",
    "wanadoo.fr",
    "web.de",
    "windowslive.com",
    "wp.pl",
    "ya.ru",
    "yeah.net",
    "ymail.com",
    "zoho.com",
    "zohomail.com",
];

/// Free-mail brands registered under many suffixes (`hotmail.co.uk`, `yahoo.co.jp`, `gmx.de`):
/// matched against the label left of the public suffix.
const FREE_MAIL_BRANDS: &[&str] = &[
    "aol", "gmx", "hotmail", "live", "outlook", "yahoo", "yandex",
];

/// The customer's registrable domain and where it was found (`"website"` or `"contact_email"`).
pub(super) fn company_domain(referral: &Referral) -> Option<(String, &'static str)> {
    let from_website = website(&referral.raw_json)
        .and_then(|website| website_host(&website))
        .and_then(|host| registrable_domain(&host))
        .filter(|domain| !is_free_mail(domain));
    if let Some(domain) = from_website {
        return Some((domain, "website"));
    }
    referral
        .customer_profile
        .as_ref()?
        .team
        .iter()
        .filter_map(|member| member.email.as_deref())
        .filter_map(email_domain)
        .find(|domain| !is_free_mail(domain))
        .map(|domain| (domain, "contact_email"))
}

/// `customerProfile.website` / `webSite` / `url` from the raw API JSON, keys in any case. The
/// record type has no such field (the API docs do not list one), so only the raw JSON has it.
///
/// Read in one pass over the text that keeps only the few matching keys (a referral's raw JSON
/// is kilobytes; building it as a `serde_json::Value` cost more than the rest of the enrichment
/// together). It decides as reading it into a `Value` map did: keys in sorted order (a profile
/// key `CustomerProfile` before `customerProfile`, `URL` before `url`), a repeated key's last
/// value wins, every `website` key before any `url` key, the first non-blank string; JSON that
/// does not parse has no website.
fn website(raw_json: &str) -> Option<String> {
    let root: website_scan::Root = serde_json::from_str(raw_json).ok()?;
    ["website", "url"].iter().find_map(|wanted| {
        root.profiles
            .values()
            .flatten()
            .flat_map(|profile| profile.iter())
            .filter(|(key, _)| key.eq_ignore_ascii_case(wanted))
            .find_map(|(_, value)| non_blank(value.as_deref()))
            .map(str::to_owned)
    })
}

/// The one-pass reading of [`website`]: only `customerProfile` objects (key in any case) and
/// their `website` / `url` keys (any case) are kept, everything else is skipped unread.
mod website_scan {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

    /// The top-level object: each profile key with its object (`None` when that key's value was
    /// not an object, so a later non-object duplicate hides an earlier object, as in a map).
    pub(super) struct Root {
        pub(super) profiles: BTreeMap<String, Option<BTreeMap<String, Option<String>>>>,
    }

    impl<'de> Deserialize<'de> for Root {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct RootVisitor;
            impl<'de> Visitor<'de> for RootVisitor {
                type Value = Root;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Root, A::Error> {
                    let mut profiles = BTreeMap::new();
                    while let Some(key) = map.next_key::<Key>()? {
                        if key.0.eq_ignore_ascii_case("customerProfile") {
                            let profile = map.next_value::<Profile>()?;
                            profiles.insert(key.0, profile.0);
                        } else {
                            map.next_value::<Skip>()?;
                        }
                    }
                    Ok(Root { profiles })
                }
            }
            deserializer.deserialize_map(RootVisitor)
        }
    }

    /// Any JSON value, read and dropped. Not `serde::de::IgnoredAny`: serde_json skips that
    /// without checking numbers, where a `Value` refuses one out of range (`1e400`), and this
    /// reading must refuse whatever the `Value` reading refused.
    struct Skip;

    impl<'de> Deserialize<'de> for Skip {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct SkipVisitor;
            impl<'de> Visitor<'de> for SkipVisitor {
                type Value = Skip;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
                    while map.next_entry::<Skip, Skip>()?.is_some() {}
                    Ok(Skip)
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Skip, A::Error> {
                    while seq.next_element::<Skip>()?.is_some() {}
                    Ok(Skip)
                }
                fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
                    Ok(Skip)
                }
                fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
                    Ok(Skip)
                }
                fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
                    Ok(Skip)
                }
                fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
                    Ok(Skip)
                }
                fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
                    Ok(Skip)
                }
                fn visit_unit<E>(self) -> Result<Skip, E> {
                    Ok(Skip)
                }
            }
            deserializer.deserialize_any(SkipVisitor)
        }
    }

    /// A key as text, escapes resolved (as `Value` reads it).
    struct Key(String);

    impl<'de> Deserialize<'de> for Key {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct KeyVisitor;
            impl Visitor<'_> for KeyVisitor {
                type Value = Key;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a key")
                }
                fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
                    Ok(Key(key.to_owned()))
                }
            }
            deserializer.deserialize_str(KeyVisitor)
        }
    }

    /// A profile value: its `website` / `url` keys when it is an object, else `None`. A matching
    /// key whose value is not a string is kept as `None` (it still hides an earlier duplicate).
    struct Profile(Option<BTreeMap<String, Option<String>>>);

    impl<'de> Deserialize<'de> for Profile {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ProfileVisitor;
            impl<'de> Visitor<'de> for ProfileVisitor {
                type Value = Profile;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Profile, A::Error> {
                    let mut fields = BTreeMap::new();
                    while let Some(key) = map.next_key::<Key>()? {
                        if key.0.eq_ignore_ascii_case("website")
                            || key.0.eq_ignore_ascii_case("url")
                        {
                            let value = map.next_value::<MaybeString>()?;
                            fields.insert(key.0, value.0);
                        } else {
                            map.next_value::<Skip>()?;
                        }
                    }
                    Ok(Profile(Some(fields)))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Profile, A::Error> {
                    while seq.next_element::<Skip>()?.is_some() {}
                    Ok(Profile(None))
                }
                fn visit_bool<E>(self, _: bool) -> Result<Profile, E> {
                    Ok(Profile(None))
                }
                fn visit_i64<E>(self, _: i64) -> Result<Profile, E> {
                    Ok(Profile(None))
                }
                fn visit_u64<E>(self, _: u64) -> Result<Profile, E> {
                    Ok(Profile(None))
                }
                fn visit_f64<E>(self, _: f64) -> Result<Profile, E> {
                    Ok(Profile(None))
                }
                fn visit_str<E>(self, _: &str) -> Result<Profile, E> {
                    Ok(Profile(None))
                }
                fn visit_unit<E>(self) -> Result<Profile, E> {
                    Ok(Profile(None))
                }
            }
            deserializer.deserialize_any(ProfileVisitor)
        }
    }

    /// A string value, or `None` for any other JSON value (skipped).
    struct MaybeString(Option<String>);

    impl<'de> Deserialize<'de> for MaybeString {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct StringVisitor;
            impl<'de> Visitor<'de> for StringVisitor {
                type Value = MaybeString;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_str<E>(self, value: &str) -> Result<MaybeString, E> {
                    Ok(MaybeString(Some(value.to_owned())))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaybeString, A::Error> {
                    while map.next_entry::<Skip, Skip>()?.is_some() {}
                    Ok(MaybeString(None))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<MaybeString, A::Error> {
                    while seq.next_element::<Skip>()?.is_some() {}
                    Ok(MaybeString(None))
                }
                fn visit_bool<E>(self, _: bool) -> Result<MaybeString, E> {
                    Ok(MaybeString(None))
                }
                fn visit_i64<E>(self, _: i64) -> Result<MaybeString, E> {
                    Ok(MaybeString(None))
                }
                fn visit_u64<E>(self, _: u64) -> Result<MaybeString, E> {
                    Ok(MaybeString(None))
                }
                fn visit_f64<E>(self, _: f64) -> Result<MaybeString, E> {
                    Ok(MaybeString(None))
                }
                fn visit_unit<E>(self) -> Result<MaybeString, E> {
                    Ok(MaybeString(None))
                }
            }
            deserializer.deserialize_any(StringVisitor)
        }
    }
}

/// The host of a website as people type it: with or without a scheme, path or port.
fn website_host(website: &str) -> Option<String> {
    let website = website.trim();
    if website.chars().any(char::is_whitespace) {
        return None;
    }
    let parsed = if website.contains("://") {
        url::Url::parse(website)
    } else {
        url::Url::parse(&format!("http://{website}"))
    };
    match parsed.ok()?.host()? {
        url::Host::Domain(domain) => Some(domain.to_owned()),
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => None,
    }
}

/// The registrable domain of an email address; `None` for anything that is not one.
fn email_domain(email: &str) -> Option<String> {
    let email = email.trim();
    let (local, domain) = email.split_once('@')?;
    let valid_local = !local.is_empty()
        && !local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"".contains(c));
    if !valid_local || domain.contains('@') || domain.starts_with('[') {
        return None;
    }
    registrable_domain(domain)
}

/// `mail.sales.example.co.uk` → `example.co.uk`, IDNs as punycode. `None` for an IP address,
/// a bare public suffix, an unlisted suffix (`corp.local`) or a malformed name.
fn registrable_domain(host: &str) -> Option<String> {
    let host = host.trim().trim_end_matches('.');
    let host = match url::Host::parse(host).ok()? {
        url::Host::Domain(domain) => domain,
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => return None,
    };
    let host = host.to_ascii_lowercase();
    let valid_labels = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid_labels {
        return None;
    }
    // `.example` is reserved for documentation and demos (RFC 2606) and so not in the Public
    // Suffix List; its second-level names count as registrable so that demo data (the
    // simulator's `<company>.example` customers) gets a domain and an MX lookup. No real
    // referral carries one, and no public DNS answers for it.
    if let Some(rest) = host.strip_suffix(".example") {
        let label = rest.rsplit('.').next()?;
        return Some(format!("{label}.example"));
    }
    let domain = psl::domain(host.as_bytes())?;
    if !domain.suffix().is_known() {
        return None;
    }
    std::str::from_utf8(domain.as_bytes())
        .ok()
        .map(str::to_owned)
}

/// Whether a registrable domain belongs to a mailbox provider rather than a company.
fn is_free_mail(registrable_domain: &str) -> bool {
    if FREE_MAIL_DOMAINS.contains(&registrable_domain) {
        return true;
    }
    let brand = registrable_domain.split('.').next().unwrap_or_default();
    FREE_MAIL_BRANDS.contains(&brand)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::processors::enrich::tests::{referral, referral_with};

    /// What [`website`] did before it read the text in one pass: the whole raw JSON as a
    /// `serde_json::Value`. The one-pass reading must decide the same on every input.
    fn website_through_value(raw_json: &str) -> Option<String> {
        let root: serde_json::Value = serde_json::from_str(raw_json).ok()?;
        let profiles: Vec<&serde_json::Map<String, serde_json::Value>> = root
            .as_object()?
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case("customerProfile"))
            .filter_map(|(_, profile)| profile.as_object())
            .collect();
        ["website", "url"].iter().find_map(|wanted| {
            profiles
                .iter()
                .flat_map(|profile| profile.iter())
                .filter(|(key, _)| key.eq_ignore_ascii_case(wanted))
                .find_map(|(_, value)| non_blank(value.as_str()))
                .map(str::to_owned)
        })
    }

    #[test]
    fn the_one_pass_website_reading_decides_as_the_value_reading_did() {
        let cases = [
            r#"{"customerProfile":{"website":"a.com"}}"#,
            r#"{"customerProfile":{"url":"u.com","website":"w.com"}}"#,
            r#"{"customerProfile":{"URL":"upper.com","url":"lower.com"}}"#,
            r#"{"customerProfile":{"website":"first.com","website":"last.com"}}"#,
            r#"{"customerProfile":{"website":"  ","WebSite":"second.com"}}"#,
            r#"{"customerProfile":{"website":7,"url":"u.com"}}"#,
            r#"{"customerProfile":{"website":{"x":"y.com"},"url":["z"]}}"#,
            r#"{"CustomerProfile":{"website":"cap.com"},"customerProfile":{"website":"low.com"}}"#,
            r#"{"customerProfile":{"url":"u.com"},"CUSTOMERPROFILE":{"website":"w.com"}}"#,
            r#"{"customerProfile":{"website":"a.com"},"customerProfile":"not an object"}"#,
            r#"{"customerProfile":"text","customerProfile":{"website":"later.com"}}"#,
            r#"{"customerProfile":[1,2,{"website":"no.com"}]}"#,
            r#"{"customerProfile":null}"#,
            r#"{"customerprofile":{"Website":"escaped.com","webSite":"esc-key.com"}}"#,
            r#"{"id":"r","customerProfile":{"name":"n","address":{"website":"nested.com"}}}"#,
            r#"{"customerProfile":{"website":"a.com"}"#,
            r#"{"customerProfile":{"website":"a.com"}} trailing"#,
            r#"["customerProfile"]"#,
            r#""text""#,
            "",
            r#"{"customerProfile":{"website":"a.com","n":1e400}}"#,
            r#"{"customerProfile":{"website":"a.com","big":18446744073709551616,"neg":-5,"f":1.5,"t":true}}"#,
        ];
        for raw in cases {
            assert_eq!(website(raw), website_through_value(raw), "raw JSON {raw}");
        }
        let full = include_str!("../../../core/src/records/testdata/full_referral.json");
        assert_eq!(website(full), website_through_value(full));
    }

    #[test]
    fn registrable_domains_follow_the_public_suffix_list() {
        let cases = [
            ("mail.sales.example.co.uk", Some("example.co.uk")),
            ("www.example.com", Some("example.com")),
            ("Example.COM.", Some("example.com")),
            ("a.b.c.example.com.au", Some("example.com.au")),
            ("shop.example.de", Some("example.de")),
            ("bücher.de", Some("xn--bcher-kva.de")),
            ("contoso.onmicrosoft.com", Some("onmicrosoft.com")),
            ("northwind-ltd.example", Some("northwind-ltd.example")),
            ("mail.Northwind-Ltd.example", Some("northwind-ltd.example")),
            ("example", None),
            ("co.uk", None),
            ("com", None),
            ("localhost", None),
            ("intranet.corp.invalidtld", None),
            ("192.168.1.10", None),
            ("exa mple.com", None),
            ("-bad-.example.com", None),
            ("", None),
        ];
        for (host, expected) in cases {
            assert_eq!(
                registrable_domain(host).as_deref(),
                expected,
                "registrable domain of {host:?}"
            );
        }
    }

    #[test]
    fn websites_are_read_with_or_without_scheme_path_and_port() {
        let cases = [
            ("https://www.contoso.co.uk/about?x=1", Some("contoso.co.uk")),
            ("http://shop.contoso.com:8080", Some("contoso.com")),
            ("www.contoso.com/", Some("contoso.com")),
            ("contoso.com", Some("contoso.com")),
            ("HTTPS://CONTOSO.COM", Some("contoso.com")),
            ("https://10.0.0.1/", None),
            ("not a website", None),
            ("https://", None),
        ];
        for (website, expected) in cases {
            let domain = website_host(website).and_then(|host| registrable_domain(&host));
            assert_eq!(domain.as_deref(), expected, "domain of website {website:?}");
        }
    }

    #[test]
    fn website_is_preferred_over_contact_email() {
        let found = company_domain(&referral_with(
            Some(json!("https://www.contoso.com")),
            &["alex@fabrikam.com"],
        ));
        assert_eq!(found, Some(("contoso.com".to_owned(), "website")));
    }

    #[test]
    fn website_keys_match_in_any_case() {
        for key in [
            "website", "webSite", "WebSite", "WEBSITE", "url", "URL", "Url",
        ] {
            let referral = referral(json!({
                "id": "r-1",
                "customerProfile": { key: "https://contoso.com", "name": "Contoso" },
            }));
            assert_eq!(
                company_domain(&referral),
                Some(("contoso.com".to_owned(), "website")),
                "website under key {key:?}"
            );
        }
    }

    #[test]
    fn the_customer_profile_key_matches_in_any_case() {
        // The record type reads only `customerProfile`; the website lookup reads the raw text.
        let mut referral = referral(json!({ "id": "r-1" }));
        referral.raw_json = json!({
            "id": "r-1",
            "CUSTOMERPROFILE": { "WebSite": "contoso.com" },
        })
        .to_string();
        assert_eq!(
            company_domain(&referral),
            Some(("contoso.com".to_owned(), "website"))
        );
    }

    #[test]
    fn unusable_website_falls_back_to_contact_email() {
        for website in [
            json!("https://gmail.com/contoso"),
            json!("not a url"),
            json!(""),
            json!(42),
            json!(null),
        ] {
            let found = company_domain(&referral_with(
                Some(website.clone()),
                &["alex@mail.fabrikam.co.uk"],
            ));
            assert_eq!(
                found,
                Some(("fabrikam.co.uk".to_owned(), "contact_email")),
                "website {website}"
            );
        }
    }

    #[test]
    fn free_mail_is_never_a_company_domain() {
        let free = [
            "a@gmail.com",
            "a@googlemail.com",
            "a@outlook.com",
            "a@outlook.fr",
            "a@hotmail.com",
            "a@hotmail.co.uk",
            "a@live.com",
            "a@live.fr",
            "a@msn.com",
            "a@yahoo.com",
            "a@yahoo.co.jp",
            "a@mail.yahoo.com",
            "a@aol.com",
            "a@icloud.com",
            "a@me.com",
            "a@proton.me",
            "a@protonmail.com",
            "a@gmx.de",
            "a@gmx.net",
            "a@web.de",
            "a@mail.ru",
            "a@yandex.ru",
            "a@yandex.com",
            "a@qq.com",
            "a@163.com",
        ];
        for email in free {
            assert_eq!(
                company_domain(&referral_with(None, &[email])),
                None,
                "{email}"
            );
        }
        let mut emails = free.to_vec();
        emails.push("alex@contoso.com");
        assert_eq!(
            company_domain(&referral_with(None, &emails)),
            Some(("contoso.com".to_owned(), "contact_email"))
        );
    }

    #[test]
    fn invalid_emails_are_ignored() {
        let invalid = [
            "",
            "   ",
            "alex",
            "alex@",
            "@contoso.com",
            "alex@@contoso.com",
            "a@b@contoso.com",
            "alex smith@contoso.com",
            "alex@contoso",
            "alex@[10.0.0.1]",
            "alex@10.0.0.1",
            "Alex <alex@contoso.com>",
        ];
        for email in invalid {
            assert_eq!(email_domain(email), None, "{email:?}");
        }
        let found = company_domain(&referral_with(
            None,
            &["alex@", "bad", " Sam@Sales.Contoso.COM "],
        ));
        assert_eq!(found, Some(("contoso.com".to_owned(), "contact_email")));
    }

    #[test]
    fn no_website_and_no_emails_means_no_domain() {
        assert_eq!(company_domain(&referral(json!({ "id": "r-1" }))), None);
        assert_eq!(company_domain(&referral_with(None, &[])), None);
    }

    proptest! {
        #[test]
        fn free_mail_subdomains_are_never_chosen(
            local in "[a-z0-9._-]{1,12}",
            subdomain in proptest::option::of("[a-z0-9]{1,10}"),
            free in proptest::sample::select(FREE_MAIL_DOMAINS.to_vec()),
        ) {
            let host = match subdomain {
                Some(subdomain) => format!("{subdomain}.{free}"),
                None => free.to_owned(),
            };
            let email = format!("{local}@{host}");
            prop_assert_eq!(company_domain(&referral_with(None, &[&email])), None);
        }

        #[test]
        fn free_mail_brands_are_never_chosen_under_any_suffix(
            brand in proptest::sample::select(FREE_MAIL_BRANDS.to_vec()),
            suffix in proptest::sample::select(vec!["com", "co.uk", "de", "fr", "com.au", "co.jp", "ru"]),
        ) {
            let email = format!("someone@{brand}.{suffix}");
            prop_assert_eq!(company_domain(&referral_with(None, &[&email])), None);
        }
    }
}
