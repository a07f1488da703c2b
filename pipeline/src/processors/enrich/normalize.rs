//! Facts normalised from the referral's own fields: the company name for grouping, the country
//! as ISO 3166-1 alpha-2, the size band and the deal value in USD.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use super::countries;

/// dropped ("S.A." → "sa", "S. A." → "s" "a"). Longer forms are tried first.
const LEGAL_FORMS: &[&[&str]] = &[
    &["public", "limited", "company"],
    &["kabushiki", "kaisha"],
    &["private", "limited"],
    &["sp", "z", "oo"],
    &["s", "a"],
    &["s", "l"],
    &["s", "r", "l"],
    &["b", "v"],
    &["n", "v"],
    &["de", "cv"],
    &["sà", "rl"],
    &["&", "co"],
    &["and", "co"],
    &["ab"],
    &["ag"],
    &["aps"],
    &["as"],
    &["asa"],
    &["a/s"],
    &["bv"],
    &["bhd"],
    &["co"],
    &["company"],
    &["corp"],
    &["corporation"],
    &["cv"],
    &["ev"],
    &["gmbh"],
    &["inc"],
    &["incorporated"],
    &["kft"],
    &["kg"],
    &["kgaa"],
    &["kk"],
    &["limited"],
    &["llc"],
    &["llp"],
    &["lp"],
    &["ltd"],
    &["ltda"],
    &["mbh"],
    &["nv"],
    &["ohg"],
    &["oy"],
    &["oyj"],
    &["pc"],
    &["plc"],
    &["pte"],
    &["pty"],
    &["publ"],
    &["pvt"],
    &["sa"],
    &["sarl"],
    &["sàrl"],
    &["sas"],
    &["se"],
    &["sl"],
    &["spa"],
    &["sdn"],
    &["srl"],
    &["ug"],
    &["zrt"],
];

/// The name for grouping: lower-cased, commas dropped, whitespace collapsed, legal forms
/// removed from the end (repeatedly, so "GmbH & Co. KG" goes whole); never empty.
pub(super) fn normalize_company_name(name: &str) -> Option<String> {
    let lowered = name.to_lowercase().replace(',', " ");
    let mut tokens: Vec<&str> = lowered.split_whitespace().collect();
    loop {
        let keys: Vec<String> = tokens
            .iter()
            .map(|token| token.replace(['.', '(', ')'], ""))
            .collect();
        let strip = LEGAL_FORMS
            .iter()
            .filter(|form| form.len() < keys.len())
            .find(|form| {
                keys[keys.len() - form.len()..]
                    .iter()
                    .zip(form.iter())
                    .all(|(key, part)| key == part)
            })
            .map(|form| form.len());
        match strip {
            Some(count) => tokens.truncate(tokens.len() - count),
            None => break,
        }
    }
    let normalized = tokens.join(" ");
    let normalized = normalized
        .trim_end_matches(['-', ';', ':', '&', '/'])
        .trim_end();
    (!normalized.is_empty()).then(|| normalized.to_owned())
}

/// ISO 3166-1 alpha-2 for an alpha-2, an alpha-3 or a country name; `None` when unknown.
pub(super) fn normalize_country(raw: &str) -> Option<&'static str> {
    static INDEX: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        // Codes are keyed upper case and names lower case, so the two never collide.
        let mut index = HashMap::new();
        for (alpha2, alpha3, names) in countries::COUNTRIES {
            index.insert((*alpha2).to_owned(), *alpha2);
            index.insert((*alpha3).to_owned(), *alpha2);
            for name in *names {
                index.insert(country_name_key(name), *alpha2);
            }
        }
        for (alias, alpha2) in countries::ALIASES {
            index.insert(country_name_key(alias), *alpha2);
        }
        index
    });
    let raw = raw.trim();
    if matches!(raw.len(), 2 | 3)
        && raw.chars().all(|c| c.is_ascii_alphabetic())
        && let Some(alpha2) = index.get(&raw.to_ascii_uppercase())
    {
        return Some(alpha2);
    }
    index.get(&country_name_key(raw)).copied()
}

/// Lower case, `.` and apostrophes dropped, other punctuation as space, a leading "the" gone.
fn country_name_key(name: &str) -> String {
    let cleaned: String = name
        .to_lowercase()
        .chars()
        .filter(|c| !matches!(c, '.' | '\'' | '’'))
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    match words.as_slice() {
        ["the", rest @ ..] if !rest.is_empty() => rest.join(" "),
        _ => words.join(" "),
    }
}

/// The band of a `customerProfile.size` value's lower bound; `None` for anything unparsable.
pub(super) fn size_band(size: &str) -> Option<&'static str> {
    let key: String = size
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let body = key.strip_suffix("employees").unwrap_or(&key);
    let lower_bound: u64 = if let Some(above) = body.strip_prefix("morethan") {
        above.parse::<u64>().ok()?.checked_add(1)?
    } else {
        let (low, high) = body.split_once("to")?;
        let (low, high) = (low.parse::<u64>().ok()?, high.parse::<u64>().ok()?);
        if low > high {
            return None;
        }
        low
    };
    Some(match lower_bound {
        0..=50 => "small",
        51..=500 => "medium",
        501..=5000 => "large",
        _ => "enterprise",
    })
}

/// `(deal_value_usd, usd_rate)`: the value rounded to cents, `None` without a value or a rate.
pub(super) fn deal_value_usd(
    deal_value: Option<f64>,
    currency: Option<&str>,
    usd_rates: &BTreeMap<String, f64>,
) -> (Option<f64>, Option<f64>) {
    let rate = currency
        .map(|currency| currency.trim().to_ascii_uppercase())
        .filter(|currency| !currency.is_empty())
        .and_then(|currency| match usd_rates.get(&currency) {
            Some(rate) => Some(*rate),
            None if currency == "USD" => Some(1.0),
            None => None,
        })
        .filter(|rate| rate.is_finite() && *rate > 0.0);
    let value = deal_value
        .zip(rate)
        .map(|(value, rate)| (value * rate * 100.0).round() / 100.0)
        .filter(|value| value.is_finite());
    (value, rate)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn company_names_are_normalised_for_grouping() {
        let cases = [
            ("  Contoso   Ltd ", Some("contoso")),
            ("Contoso Ltd.", Some("contoso")),
            ("CONTOSO LIMITED", Some("contoso")),
            ("Contoso, Inc.", Some("contoso")),
            ("Contoso,Inc.", Some("contoso")),
            ("Contoso Corp", Some("contoso")),
            ("Fabrikam GmbH", Some("fabrikam")),
            ("Fabrikam GmbH & Co. KG", Some("fabrikam")),
            ("Northwind S.A.", Some("northwind")),
            ("Northwind S. A.", Some("northwind")),
            ("Northwind S.A. de C.V.", Some("northwind")),
            ("Tailspin LLC", Some("tailspin")),
            ("Tailspin L.L.C.", Some("tailspin")),
            ("Wingtip Pty Ltd", Some("wingtip")),
            ("Wingtip Sp. z o.o.", Some("wingtip")),
            ("Adatum AB (publ)", Some("adatum")),
            ("Adatum Holdings plc", Some("adatum holdings")),
            ("Johnson & Johnson", Some("johnson & johnson")),
            ("Smith & Co.", Some("smith")),
            ("Sample Customer One Ltd", Some("sample customer one")),
            ("Müller Straße GmbH", Some("müller straße")),
            ("Inc", Some("inc")),
            ("GmbH", Some("gmbh")),
            ("", None),
            ("   ", None),
        ];
        for (name, expected) in cases {
            assert_eq!(
                normalize_company_name(name).as_deref(),
                expected,
                "normalised {name:?}"
            );
        }
    }

    #[test]
    fn countries_normalise_to_alpha2() {
        let cases = [
            ("GB", Some("GB")),
            ("gb", Some("GB")),
            (" de ", Some("DE")),
            ("GBR", Some("GB")),
            ("usa", Some("US")),
            ("DEU", Some("DE")),
            ("United Kingdom", Some("GB")),
            (
                "united kingdom of great britain and northern ireland",
                Some("GB"),
            ),
            ("UK", Some("GB")),
            ("U.K.", Some("GB")),
            ("England", Some("GB")),
            ("United States", Some("US")),
            ("United States of America", Some("US")),
            ("U.S.A.", Some("US")),
            ("Germany", Some("DE")),
            ("Deutschland", Some("DE")),
            ("The Netherlands", Some("NL")),
            ("Korea, Republic of", Some("KR")),
            ("South Korea", Some("KR")),
            ("Côte d'Ivoire", Some("CI")),
            ("Viet Nam", Some("VN")),
            ("Vietnam", Some("VN")),
            ("Türkiye", Some("TR")),
            ("Turkey", Some("TR")),
            ("ZZ", None),
            ("XKX", None),
            ("Atlantis", None),
            ("", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize_country(raw), expected, "country {raw:?}");
        }
    }

    #[test]
    fn every_iso_country_round_trips() {
        assert_eq!(countries::COUNTRIES.len(), 249);
        for (alpha2, alpha3, names) in countries::COUNTRIES {
            assert_eq!(normalize_country(alpha2), Some(*alpha2));
            assert_eq!(normalize_country(alpha3), Some(*alpha2));
            for name in *names {
                assert_eq!(normalize_country(name), Some(*alpha2), "{name}");
            }
        }
        for (alias, alpha2) in countries::ALIASES {
            assert_eq!(normalize_country(alias), Some(*alpha2), "{alias}");
        }
    }

    #[test]
    fn size_values_map_to_bands() {
        let cases = [
            ("1to50employees", Some("small")),
            ("1to9employees", Some("small")),
            ("10to50employees", Some("small")),
            ("51to500employees", Some("medium")),
            ("51to250employees", Some("medium")),
            ("251to1000employees", Some("medium")),
            ("Morethan500employees", Some("large")),
            ("1001to5000employees", Some("large")),
            ("5001to10000employees", Some("enterprise")),
            ("10001to20000employees", Some("enterprise")),
            ("Morethan20000employees", Some("enterprise")),
            ("More than 5000 employees", Some("enterprise")),
            ("1 to 50 employees", Some("small")),
            ("", None),
            ("None", None),
            ("lots", None),
            ("50to1employees", None),
        ];
        for (size, expected) in cases {
            assert_eq!(size_band(size), expected, "size {size:?}");
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Money

    #[test]
    fn deal_values_convert_to_usd() {
        let rates = BTreeMap::from([("GBP".to_owned(), 1.27), ("JPY".to_owned(), 0.006_71)]);
        assert_eq!(
            deal_value_usd(Some(25_000.0), Some("GBP"), &rates),
            (Some(31_750.0), Some(1.27))
        );
        assert_eq!(
            deal_value_usd(Some(25_000.0), Some(" gbp "), &rates),
            (Some(31_750.0), Some(1.27))
        );
        assert_eq!(
            deal_value_usd(Some(1_234.5), Some("usd"), &rates),
            (Some(1_234.5), Some(1.0)),
            "USD needs no table entry"
        );
        assert_eq!(
            deal_value_usd(Some(123_457.0), Some("JPY"), &rates),
            (Some(828.40), Some(0.006_71)),
            "rounded to cents"
        );
    }

    #[test]
    fn a_missing_rate_or_value_gives_none_never_zero() {
        let rates = BTreeMap::from([("GBP".to_owned(), 1.27), ("BAD".to_owned(), f64::NAN)]);
        assert_eq!(
            deal_value_usd(Some(8_000.0), Some("EUR"), &rates),
            (None, None)
        );
        assert_eq!(deal_value_usd(Some(8_000.0), None, &rates), (None, None));
        assert_eq!(
            deal_value_usd(Some(8_000.0), Some(""), &rates),
            (None, None)
        );
        assert_eq!(
            deal_value_usd(Some(8_000.0), Some("BAD"), &rates),
            (None, None)
        );
        assert_eq!(
            deal_value_usd(None, Some("GBP"), &rates),
            (None, Some(1.27))
        );
    }
}
