//! Realistic synthetic referrals in the live API's shape (research notes §4 and §7), including
//! its drift: `customerProfile.ids` as an array or an object, `dealValue` as a number or a
//! string, `size` as `""` or null, 0–7 fraction digits, ties in `updatedDateTime`, the misspelt
//! `consentToToShareInfoWithOthers`, eTags with literal quotes, unquoted GUIDs in
//! `links.relatedReferrals`. Deterministic for a seed.

use std::io;
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng, SeedableRng as _};
use serde::Serializer as _;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

const OWN_ORG_ID: &str = "5e5e5e5e-3333-4eee-8fff-000000000001";
const OWN_ORG_NAME: &str = "Example Partner Co";
const OWN_MPN_ID: &str = "6543210";
const API: &str = "https://api.partner.microsoft.com/v1.0/engagements/referrals";

struct Country {
    code: &'static str,
    currency: &'static str,
    /// (city, state, region, postal code)
    places: &'static [(
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        &'static str,
    )],
    /// Local UTC offset in minutes: `closingDateTime` is local midnight converted to UTC.
    utc_offset_minutes: i64,
    locale: &'static str,
    phone_prefix: &'static str,
}

const COUNTRIES: &[Country] = &[
    Country {
        code: "US",
        currency: "USD",
        // Live US data often has the state code in `region` and `state` null.
        places: &[
            ("Seattle", None, Some("WA"), "98101"),
            ("Austin", Some("TX"), None, "73301"),
            ("New York", None, Some("NY"), "10001"),
            ("Chicago", Some("IL"), Some("IL"), "60601"),
        ],
        utc_offset_minutes: -300,
        locale: "en-US",
        phone_prefix: "+1",
    },
    Country {
        code: "GB",
        currency: "GBP",
        places: &[
            ("London", None, None, "EC1A 1BB"),
            ("Manchester", Some(""), None, "M1 1AE"),
        ],
        utc_offset_minutes: 60,
        locale: "en-GB",
        phone_prefix: "+44",
    },
    Country {
        code: "DE",
        currency: "EUR",
        places: &[
            ("Berlin", Some("BE"), None, "10115"),
            ("München", Some("BY"), None, "80331"),
        ],
        utc_offset_minutes: 120,
        locale: "de-DE",
        phone_prefix: "+49",
    },
    Country {
        code: "FR",
        currency: "EUR",
        places: &[
            ("Paris", None, None, "75001"),
            ("Lyon", None, None, "69001"),
        ],
        utc_offset_minutes: 60,
        locale: "fr-FR",
        phone_prefix: "+33",
    },
    Country {
        code: "IN",
        currency: "INR",
        places: &[
            ("Bengaluru", Some("KA"), None, "560001"),
            ("Mumbai", Some("MH"), None, "400001"),
        ],
        utc_offset_minutes: 330,
        locale: "en-IN",
        phone_prefix: "+91",
    },
    Country {
        code: "JP",
        currency: "JPY",
        places: &[("Tokyo", Some("13"), None, "100-0001")],
        utc_offset_minutes: 540,
        locale: "ja-JP",
        phone_prefix: "+81",
    },
    Country {
        code: "AU",
        currency: "AUD",
        places: &[
            ("Sydney", Some("NSW"), None, "2000"),
            ("Melbourne", Some("VIC"), None, "3000"),
        ],
        utc_offset_minutes: 600,
        locale: "en-AU",
        phone_prefix: "+61",
    },
    Country {
        code: "BR",
        currency: "BRL",
        places: &[("São Paulo", Some("SP"), None, "01000-000")],
        utc_offset_minutes: -180,
        locale: "pt-BR",
        phone_prefix: "+55",
    },
    Country {
        code: "CA",
        currency: "CAD",
        places: &[("Toronto", Some("ON"), None, "M5H 2N2")],
        utc_offset_minutes: -240,
        locale: "en-CA",
        phone_prefix: "+1",
    },
    Country {
        code: "NL",
        currency: "EUR",
        places: &[("Amsterdam", None, None, "1012 AB")],
        utc_offset_minutes: 120,
        locale: "nl-NL",
        phone_prefix: "+31",
    },
];

const SIZES: &[&str] = &[
    "1to50employees",
    "51to500employees",
    "Morethan500employees",
    "1to9employees",
    "10to50employees",
    "51to250employees",
    "251to1000employees",
    "1001to5000employees",
    "5001to10000employees",
    "10001to20000employees",
    "Morethan20000employees",
];
const COMPANY_FIRST: &[&str] = &[
    "Northwind",
    "Contoso",
    "Fabrikam",
    "Tailspin",
    "Litware",
    "Adventure Works",
    "Wingtip",
    "Proseware",
    "Lamna",
    "Woodgrove",
    "Müller & Söhne",
    "Société Exemple",
    "Alpine Ski House",
];
const COMPANY_LAST: &[&str] = &[
    "Ltd", "GmbH", "Inc.", "LLC", "S.A.", "Pty Ltd", "B.V.", "Traders", "Health", "Bank",
];
const PROJECTS: &[&str] = &[
    "data platform migration",
    "endpoint rollout",
    "Copilot adoption",
    "SAP on Azure",
    "security assessment",
    "contact centre modernisation",
    "Dynamics 365 Sales rollout",
    "AVD pilot",
    "analytics with Fabric",
];
const FIRST_NAMES: &[&str] = &[
    "Alex", "Sam", "Robin", "Jordan", "Priya", "Kenji", "Lena", "Mateo", "Aoife", "Chloé",
];
const LAST_NAMES: &[&str] = &[
    "Example", "Seller", "Rep", "Nguyen", "Schmidt", "Tanaka", "Silva", "O'Brien", "Dubois",
];
const TITLES: &[&str] = &["CIO", "IT Manager", "Head of Data", "Procurement Lead", ""];
const INDUSTRIES: &[&str] = &[
    "Manufacturing",
    "Education",
    "Retail & Consumer Goods",
    "Financial Services",
    "Healthcare",
    "Government",
];
const PRODUCTS: &[&str] = &[
    "Azure",
    "Microsoft365",
    "Dynamics365Enterprise",
    "DynamicsAX,GP,NAV,SL",
    "PowerPlatform",
];
const SERVICES: &[&str] = &[
    "DeploymentOrMigration",
    "CustomSolution(ISV)",
    "Consulting",
    "ManagedServices",
];
const ASSISTANCE: &[&str] = &[
    "Unknown",
    "GeneralOrOther",
    "CustomerTechnicalArchitecture",
    "ProofOfConceptOrDemo",
    "QuotesOrLicensing",
    "PostSalesCustomerSuccess",
    "WorkloadSpecificValueProposition",
];
const INVITING_PARTNERS: &[(&str, &str)] = &[
    ("7a7a7a7a-1111-4bbb-9ccc-000000000002", "Other Partner GmbH"),
    (
        "7a7a7a7a-1111-4bbb-9ccc-000000000003",
        "Third Party Consulting LLC",
    ),
];

/// Generates `count` referrals for `seed`; the same arguments give the same referrals.
pub fn generate_referrals(count: usize, seed: u64) -> Vec<Value> {
    let mut generator = Generator::new(seed);
    (0..count).map(|index| generator.referral(index)).collect()
}

/// Writes what [`generate_referrals`] returns as the pretty JSON file
/// [`super::write_referrals`] would write, one referral at a time: a million referrals are
/// about 4 GB of JSON, and ten times that as `Value`s in memory.
pub fn write_generated_referrals(path: &Path, count: usize, seed: u64) -> io::Result<()> {
    let mut generator = Generator::new(seed);
    super::write_pretty_json(path, |serializer| {
        serializer.collect_seq((0..count).map(|index| generator.referral(index)))
    })
}

struct Generator {
    rng: StdRng,
    /// `updatedDateTime` instants handed out so far, to create ties.
    updates: Vec<OffsetDateTime>,
    /// Engagement ids of shared referrals, reused by later parties of the same deal.
    shared_engagements: Vec<String>,
}

/// The three categories of the API introduction page, plus our own pipeline deals.
#[derive(Clone, Copy, PartialEq)]
enum Category {
    MarketplaceLead,
    QualifiedLead,
    CoSell,
    Outgoing,
}

impl Generator {
    fn new(seed: u64) -> Self {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            updates: Vec::new(),
            shared_engagements: Vec::new(),
        }
    }

    fn guid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items.choose(&mut self.rng).expect("non-empty list")
    }

    fn chance(&mut self, probability: f64) -> bool {
        self.rng.random_bool(probability)
    }

    /// A random instant with `digits` significant fraction digits.
    fn instant(&mut self, from: OffsetDateTime, within: Duration) -> (OffsetDateTime, usize) {
        let digits = self.rng.random_range(0..=7usize);
        let seconds = self.rng.random_range(0..within.whole_seconds().max(1));
        let unit = 10i64.pow(9 - digits as u32);
        let nanos = if digits == 0 {
            0
        } else {
            self.rng.random_range(0..10i64.pow(digits as u32)) * unit
        };
        (
            from + Duration::seconds(seconds) + Duration::nanoseconds(nanos),
            digits,
        )
    }

    fn referral(&mut self, index: usize) -> Value {
        let category = match self.rng.random_range(0..10) {
            0 => Category::MarketplaceLead,
            1..=3 => Category::QualifiedLead,
            4..=6 => Category::CoSell,
            _ => Category::Outgoing,
        };
        let incoming = category != Category::Outgoing;
        let country = &COUNTRIES[self.rng.random_range(0..COUNTRIES.len())];

        // Timestamps: created within 2024, updated up to 30 days later, ~10% tie an earlier one.
        let epoch = time::macros::datetime!(2024-01-02 08:00:00 UTC);
        let (mut created, created_digits) = self.instant(epoch, Duration::days(330));
        let (updated, updated_digits) = if !self.updates.is_empty() && self.chance(0.1) {
            let tie = self.updates[self.rng.random_range(0..self.updates.len())];
            created = tie - Duration::hours(self.rng.random_range(1..120));
            // Same instant, possibly written with more (zero) fraction digits.
            let needed = significant_digits(tie);
            (tie, self.rng.random_range(needed..=7))
        } else {
            self.instant(created, Duration::days(30))
        };
        self.updates.push(updated);

        let (status, substatus) = self.status(category);
        let closed = status == "Closed";
        let accepted = match (status, substatus) {
            ("Active", _) | ("Closed", "Won" | "Lost") => true,
            _ => !incoming,
        };

        let id = self.guid();
        let engagement_id = if category == Category::CoSell
            && !self.shared_engagements.is_empty()
            && self.chance(0.3)
        {
            let pick = self.rng.random_range(0..self.shared_engagements.len());
            self.shared_engagements[pick].clone()
        } else {
            self.guid()
        };
        let referral_type = match category {
            Category::MarketplaceLead | Category::QualifiedLead => "Independent",
            Category::CoSell => "Shared",
            Category::Outgoing => self.pick(&["Independent", "Shared"]),
        };
        if referral_type == "Shared" {
            self.shared_engagements.push(engagement_id.clone());
        }
        let qualification = match category {
            Category::MarketplaceLead => "Direct",
            Category::QualifiedLead => self.pick(&["SalesQualified", "MarketingQualified"]),
            Category::CoSell => self.pick(&["SalesQualified", "None"]),
            Category::Outgoing => "None",
        };

        let customer_name = format!("{} {}", self.pick(COMPANY_FIRST), self.pick(COMPANY_LAST));
        let name = format!("{} {}", customer_name, self.pick(PROJECTS));
        let status_reason: Value = match substatus {
            "Lost" => json!(self.pick(&["Lost to competitor", "No budget", "No decision"])),
            "Declined" => json!(self.pick(&["Not a fit", "No capacity"])),
            "Won" if self.chance(0.5) => json!("Signed"),
            _ => Value::Null,
        };
        let updated_text = format_instant(updated, updated_digits);
        let created_text = format_instant(created, created_digits);

        let mut referral = json!({
            "id": id,
            "engagementId": engagement_id,
            "name": name,
            "externalReferenceId": match self.rng.random_range(0..3) {
                0 => json!(format!("CRM-{:06}", index + 1)),
                1 => json!(""),
                _ => Value::Null,
            },
            "organizationId": OWN_ORG_ID,
            "organizationName": OWN_ORG_NAME,
            "mpnId": OWN_MPN_ID,
            "createdDateTime": created_text,
            "updatedDateTime": updated_text,
            "expirationDateTime": if status == "New" && incoming {
                json!(format_instant(created + Duration::days(14), 0))
            } else {
                Value::Null
            },
            "acceptedDateTime": if accepted {
                let at = if incoming { created + Duration::hours(self.rng.random_range(1..72)) } else { created };
                json!(format_instant(at.min(updated), if incoming { 0 } else { created_digits }))
            } else {
                Value::Null
            },
            "closedDateTime": if closed { json!(updated_text) } else { Value::Null },
            "status": status,
            "substatus": substatus,
            "statusReason": status_reason,
            "type": referral_type,
            "qualification": qualification,
            "direction": if incoming { "Incoming" } else { "Outgoing" },
            "eTag": format!(
                "\"{:08x}-0000-0100-0000-{:012x}\"",
                self.rng.random::<u32>(),
                self.rng.random::<u64>() & 0xffff_ffff_ffff
            ),
            "target": self.targets(incoming),
            "customerProfile": self.customer_profile(&customer_name, country, index),
            "consent": self.consent(),
            "details": self.details(country, created),
            "team": self.members(1, 3, "partner.example", country, false),
            "links": self.links(&id, &engagement_id),
            "salesStage": match self.rng.random_range(0..6) {
                0 => json!("Qualify"),
                1 => json!("Develop"),
                2 => json!("Propose"),
                3 => json!("100"),
                _ => Value::Null,
            },
            "campaignId": if self.chance(0.2) { json!(format!("CMP-{:05}", self.rng.random_range(0..100_000))) } else { Value::Null },
            "favorite": self.chance(0.1),
            "quality": "Unknown",
            "isSpam": false,
            "dealSensitivity": "None",
            "registrationStatus": if self.chance(0.2) { "ReviewPending" } else { "None" },
            "tags": [],
            "createdVia": if incoming { "Microsoft" } else { self.pick(&["PartnerCenter", "Api"]) },
            "lastModifiedVia": self.pick(&["PartnerCenter", "Api", "System"]),
            "trackingInfo": {
                "microsoftMsxId": if self.chance(0.5) { json!(format!("7-{}", self.rng.random_range(1_000_000_000u64..9_999_999_999))) } else { Value::Null },
                "microsoftUSFedOpportunityId": Value::Null,
                "microsoftUSFedLeadId": Value::Null,
                "migratedPSCDealId": Value::Null,
                "migratedPSCPartnerDealId": Value::Null,
            },
        });
        let object = referral.as_object_mut().expect("built as an object");
        if incoming {
            object.insert("inviteContext".to_owned(), self.invite_context(category));
        } else if self.chance(0.5) {
            object.insert("inviteContext".to_owned(), Value::Null);
        }
        if category == Category::MarketplaceLead {
            object.insert("referralSource".to_owned(), json!("Marketplace"));
            object.insert(
                "callToAction".to_owned(),
                json!(self.pick(&["ContactMe", "FreeTrial", "TestDrive"])),
            );
        }
        referral
    }

    /// A status/substatus pair allowed by §4.3's table.
    fn status(&mut self, category: Category) -> (&'static str, &'static str) {
        let incoming = category != Category::Outgoing;
        match self.rng.random_range(0..10) {
            0..=2 if incoming => ("New", self.pick(&["Pending", "Received"])),
            0..=5 => ("Active", "Accepted"),
            _ if incoming => ("Closed", self.pick(&["Won", "Lost", "Declined", "Expired"])),
            _ => ("Closed", self.pick(&["Won", "Lost"])),
        }
    }

    fn targets(&mut self, incoming: bool) -> Value {
        if !incoming {
            return json!([]);
        }
        if self.chance(0.7) {
            json!([{ "type": "SolutionProfile", "id": format!("SOL-{:07}-ABC", self.rng.random_range(0..10_000_000)) }])
        } else {
            json!([{ "type": "BusinessProfileLocation", "id": self.guid() }])
        }
    }

    fn customer_profile(&mut self, name: &str, country: &Country, index: usize) -> Value {
        let (city, state, region, postal) = self.pick(country.places);
        let size = match self.rng.random_range(0..10) {
            0 => json!(""),
            1 => Value::Null,
            _ => json!(self.pick(SIZES)),
        };
        let duns = format!("{:09}", self.rng.random_range(0..1_000_000_000u64));
        let ids = match self.rng.random_range(0..10) {
            // Docs tables: an object; old examples: an empty object.
            0 | 1 => json!({ "Duns": duns, "External": format!("CUST-{}", index + 1) }),
            2 => json!({}),
            3 => json!([]),
            4 => json!([
                { "profileType": "External", "id": format!("CUST-{}", index + 1) },
                { "profileType": "Duns", "id": duns },
            ]),
            _ => json!([{ "profileType": "External", "id": format!("CUST-{}", index + 1) }]),
        };
        let street_number = self.rng.random_range(1..400);
        json!({
            "name": name,
            "size": size,
            "address": {
                "addressLine1": format!("{street_number} Example Street"),
                "addressLine2": if self.chance(0.3) { json!(format!("Floor {}", self.rng.random_range(1..30))) } else { json!("") },
                "city": city,
                "state": state,
                "postalCode": postal,
                "country": country.code,
                "region": region,
            },
            "team": self.members(0, 2, &customer_domain(name), country, true),
            "ids": ids,
            "isMatchingComplete": self.chance(0.6),
        })
    }

    fn members(
        &mut self,
        min: usize,
        max: usize,
        domain: &str,
        country: &Country,
        customer: bool,
    ) -> Value {
        let count = self.rng.random_range(min..=max);
        (0..count)
            .map(|_| {
                let first = self.pick(FIRST_NAMES);
                let last = self.pick(LAST_NAMES);
                let email = format!(
                    "{}.{}@{domain}",
                    first.to_lowercase(),
                    last.to_lowercase().replace('\'', "")
                );
                let mut member = json!({
                    "firstName": first,
                    "lastName": last,
                    "email": email,
                    "phoneNumber": format!("{}{:010}", country.phone_prefix, self.rng.random_range(0..10_000_000_000u64)),
                });
                if customer {
                    member["title"] = json!(self.pick(TITLES));
                    member["contactPreference"] = json!({
                        "locale": country.locale,
                        "disableNotifications": self.chance(0.2),
                    });
                }
                member
            })
            .collect()
    }

    fn consent(&mut self) -> Value {
        let contact = self.chance(0.8);
        json!({
            "consentToContact": contact,
            "consentToToShareInfoWithOthers": contact && self.chance(0.7),
            "consentToShareReferralWithMicrosoftSellers": self.chance(0.6),
        })
    }

    fn details(&mut self, country: &Country, created: OffsetDateTime) -> Value {
        let amount = self.rng.random_range(1..500) * 1000;
        let deal_value = match self.rng.random_range(0..10) {
            // PATCH examples send strings; some live reads too.
            0 => json!(amount.to_string()),
            1 => json!(f64::from(amount) + 0.5),
            _ => json!(amount),
        };
        // Local midnight converted to UTC, as live data shows (`…T18:30:00Z`).
        let close_day = (created + Duration::days(self.rng.random_range(30..180))).date();
        let closing =
            close_day.midnight().assume_utc() - Duration::minutes(country.utc_offset_minutes);
        let mut tags = |list: &[&str], max: usize| -> Value {
            let count = self.rng.random_range(0..=max);
            (0..count)
                .map(|_| json!({ "id": self.pick(list) }))
                .collect::<Vec<_>>()
                .into()
        };
        let industries = tags(INDUSTRIES, 1);
        let products = tags(PRODUCTS, 2);
        let services = tags(SERVICES, 2);
        let solutions = if self.chance(0.5) {
            json!([{
                "id": format!("SOL-{:07}-ABC", self.rng.random_range(0..10_000_000)),
                "name": "Sample Solution",
                "type": "Name",
            }])
        } else {
            json!([])
        };
        json!({
            "notes": if self.chance(0.7) { json!("Customer wants help; see the call notes.") } else { Value::Null },
            "dealValue": deal_value,
            "currency": country.currency,
            "closingDateTime": format_instant(closing, 0),
            "customerRequestedContact": self.chance(0.5),
            "customerAction": Value::Null,
            "incentiveLevel": if self.chance(0.3) { json!("Standard") } else { Value::Null },
            "requirements": {
                "industries": industries,
                "products": products,
                "services": services,
                "solutions": solutions,
                "offers": [],
                "salesPlays": [],
            },
        })
    }

    fn invite_context(&mut self, category: Category) -> Value {
        let invited_by = match category {
            Category::MarketplaceLead if self.chance(0.5) => Value::Null,
            Category::CoSell if self.chance(0.4) => {
                let (id, name) = self.pick(INVITING_PARTNERS);
                json!({ "organizationId": id, "organizationName": name })
            }
            _ => json!({ "organizationId": "msft", "organizationName": "Microsoft" }),
        };
        json!({
            "notes": if self.chance(0.6) { json!("Can you help with this one?") } else { Value::Null },
            "assistanceRequestCode": self.pick(ASSISTANCE),
            "invitedBy": invited_by,
            "invitedMpnId": if self.chance(0.3) { json!(format!("{}", self.rng.random_range(1_000_000..9_999_999))) } else { Value::Null },
        })
    }

    fn links(&mut self, id: &str, engagement_id: &str) -> Value {
        // Live data puts an unquoted GUID in the filter; the docs quote it.
        let filter = if self.chance(0.5) {
            format!("engagementId eq {engagement_id}")
        } else {
            format!("engagementId eq '{engagement_id}'")
        };
        let mut links = json!({
            "relatedReferrals": { "uri": format!("{API}?$filter={filter}"), "method": "GET" },
            "self": { "uri": format!("{API}/{id}"), "method": "GET" },
        });
        if self.chance(0.2) {
            // Older replies also carry `headers: []`.
            links["relatedReferrals"]["headers"] = json!([]);
            links["self"]["headers"] = json!([]);
        }
        links
    }
}

/// The mail domain of a generated customer: its name as a DNS label under `.example` (RFC 2606:
/// never a real domain), `Müller & Söhne GmbH` → `muller-sohne-gmbh.example`. A pure function of
/// the name, so it draws nothing from the rng (the referrals of a seed stay as they were) and
/// one company has one domain wherever it appears; the simulator's DNS (module `dns`) answers
/// its MX.
pub fn customer_domain(name: &str) -> String {
    let mut label = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        let c = match c {
            'ä' | 'à' | 'á' | 'â' | 'ã' | 'å' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'ö' | 'ó' | 'ò' | 'ô' | 'õ' => 'o',
            'ü' | 'ú' | 'ù' | 'û' => 'u',
            'ç' => 'c',
            'ñ' => 'n',
            'ß' => 's',
            // `S.A.` → `sa`, `Müller & Söhne` → `muller-sohne`.
            '.' | '&' | '\'' => continue,
            c if c.is_ascii_alphanumeric() => c,
            _ => '-',
        };
        if c != '-' || !(label.is_empty() || label.ends_with('-')) {
            label.push(c);
        }
    }
    let label = label.trim_end_matches('-');
    let label = if label.is_empty() { "customer" } else { label };
    format!("{}.example", &label[..label.len().min(63)])
}

/// Fraction digits needed to write `at` exactly.
fn significant_digits(at: OffsetDateTime) -> usize {
    let mut nanos = at.nanosecond();
    if nanos == 0 {
        return 0;
    }
    let mut digits = 9;
    while nanos.is_multiple_of(10) {
        nanos /= 10;
        digits -= 1;
    }
    digits.min(7)
}

/// `2024-03-06T14:02:11.7654321Z` with exactly `digits` fraction digits (0 = none).
pub(super) fn format_instant(at: OffsetDateTime, digits: usize) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let mut text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    if digits > 0 {
        let fraction = format!("{:09}", at.nanosecond());
        text.push('.');
        text.push_str(&fraction[..digits.min(9)]);
    }
    text.push('Z');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn deterministic_for_a_seed() {
        assert_eq!(generate_referrals(50, 7), generate_referrals(50, 7));
        assert_ne!(generate_referrals(50, 7), generate_referrals(50, 8));
    }

    #[test]
    fn the_streamed_file_is_the_file_of_the_generated_referrals() {
        let dir = tempfile::tempdir().unwrap();
        for count in [0, 1, 120] {
            let (streamed, whole) = (dir.path().join("streamed"), dir.path().join("whole"));
            write_generated_referrals(&streamed, count, 9).unwrap();
            super::super::write_referrals(&whole, &generate_referrals(count, 9)).unwrap();
            assert_eq!(
                std::fs::read(&streamed).unwrap(),
                std::fs::read(&whole).unwrap(),
                "{count} referrals"
            );
        }
    }

    #[test]
    fn covers_the_shapes_of_the_live_api() {
        let referrals = generate_referrals(400, 42);
        let ids: HashSet<_> = referrals
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 400);

        let updated: Vec<&str> = referrals
            .iter()
            .map(|r| r["updatedDateTime"].as_str().unwrap())
            .collect();
        let instants: Vec<OffsetDateTime> = updated
            .iter()
            .map(|text| OffsetDateTime::parse(text, &Rfc3339).unwrap())
            .collect();
        let distinct: HashSet<_> = instants.iter().collect();
        assert!(distinct.len() < instants.len(), "some updatedDateTime ties");
        let digits: HashSet<usize> = updated
            .iter()
            .map(|text| text.split_once('.').map_or(0, |(_, f)| f.len() - 1))
            .collect();
        assert_eq!(digits, (0..=7).collect(), "0-7 fraction digits");

        let any = |check: &dyn Fn(&Value) -> bool| referrals.iter().any(check);
        assert!(any(&|r| r["customerProfile"]["ids"].is_object()));
        assert!(any(&|r| r["customerProfile"]["ids"].is_array()));
        assert!(any(&|r| r["details"]["dealValue"].is_string()));
        assert!(any(&|r| r["details"]["dealValue"].is_number()));
        assert!(any(&|r| r["customerProfile"]["size"] == ""));
        assert!(any(&|r| r["customerProfile"]["size"].is_null()));
        assert!(any(
            &|r| r["inviteContext"]["invitedBy"]["organizationId"] == "msft"
        ));
        assert!(any(&|r| r["referralSource"] == "Marketplace"));
        assert!(
            referrals
                .iter()
                .all(|r| r["consent"].get("consentToToShareInfoWithOthers").is_some())
        );
        assert!(referrals.iter().all(|r| {
            let etag = r["eTag"].as_str().unwrap();
            etag.starts_with('"') && etag.ends_with('"')
        }));

        // Status/substatus pairs follow §4.3.
        for referral in &referrals {
            let status = referral["status"].as_str().unwrap();
            let substatus = referral["substatus"].as_str().unwrap();
            let allowed: &[&str] = match status {
                "New" => &["Pending", "Received"],
                "Active" => &["Accepted"],
                "Closed" => &["Won", "Lost", "Declined", "Expired"],
                other => panic!("status {other}"),
            };
            assert!(allowed.contains(&substatus), "{status}/{substatus}");
        }
        let statuses: HashSet<_> = referrals
            .iter()
            .map(|r| r["substatus"].as_str().unwrap())
            .collect();
        assert_eq!(statuses.len(), 7);
    }

    #[test]
    fn formats_fraction_digits_exactly() {
        let at = time::macros::datetime!(2024-03-06 14:02:11.765_432_1 UTC);
        assert_eq!(format_instant(at, 0), "2024-03-06T14:02:11Z");
        assert_eq!(format_instant(at, 3), "2024-03-06T14:02:11.765Z");
        assert_eq!(format_instant(at, 7), "2024-03-06T14:02:11.7654321Z");
        assert_eq!(significant_digits(at), 7);
        assert_eq!(
            significant_digits(time::macros::datetime!(2024-03-06 14:02:11.5 UTC)),
            1
        );
    }
}
