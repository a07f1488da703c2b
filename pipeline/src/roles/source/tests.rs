//! The real poll loop ([`poll::poll_pages`]: the real client paging by key, the skip of versions
//! already published, the cursor and stored versions of [`super::state::next_source_state`],
//! the restore of a tenant from its stored state) against an in-process simulator, publishing
//! into memory instead of Kafka.
//!
//! The property: across arbitrary schedules of polls, sweeps, restarts, referrals that show up
//! late (an `updatedDateTime` inside or far outside `cursor - overlap`, in runs of ties longer
//! than a page) and referrals that arrive on time,
//! - an incremental poll publishes every version at or after its `cursor - overlap`;
//! - a sweep publishes every version that exists: nothing is skipped for good;
//! - without a restart, no version is published twice.
//!
//! Referrals also move on (new `updatedDateTime` and eTag) while some polls page; the version a
//! moving poll could miss is one of a tie run paged by `nextLink` (the pager's documented
//! limit), so only the sweeps are held to "everything" there.
//!
//! The poll reads ahead (1 to 5 pages in flight per case) and the broker acknowledges every
//! record after a random delay, so acknowledgements come back out of order and after later
//! pages were read; some polls also see sends fail at random. Then, too:
//! - the cursor never passes an unacknowledged record: when a state is stored, every record
//!   the poll sent at or before the new cursor has been acknowledged;
//! - a poll that failed leaves the stored state as it was, and what it did not get
//!   acknowledged is published by the next polls (the checks above, from the same cursor).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hunter_core::records::{RunErrorClass, SourceState, Timestamp};
use hunter_core::size::Reference;
use hunter_partner_center::auth::{AuthSettings, TokenProvider, login_with_device_code};
use hunter_partner_center::client::{ClientSettings, PartnerCenterClient};
use hunter_partner_center::cursor;
use hunter_partner_center_simulator::{self as simulator, SimulatorOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rdkafka::error::KafkaError;

use super::Tenant;
use super::poll::{self, Counts, PollError, Publish};

const OVERLAP: Duration = Duration::from_secs(600);

/// What the poll published and stored, in memory.
#[derive(Default)]
struct Memory {
    /// (id, eTag) of every referral record acknowledged, in the order acknowledged.
    sent: Arc<Mutex<Vec<(String, String)>>>,
    states: Mutex<Vec<SourceState>>,
    /// The broker's behaviour: delays, failures, what is outstanding.
    broker: Arc<Mutex<Broker>>,
}

/// The in-memory broker: acknowledges each record after a random delay, fails some at random.
#[derive(Default)]
struct Broker {
    rng: u64,
    /// Sends that fail, per thousand (0 but on a flaky poll).
    fail_per_mille: u64,
    /// Sends started and not yet acknowledged or failed.
    outstanding: usize,
    /// Every record the current poll sent: (id, eTag, updatedDateTime).
    attempted: Vec<(String, String, Timestamp)>,
    /// What the checks found wrong, reported by the test.
    violations: Vec<String>,
}

impl Broker {
    /// splitmix64: cheap, seeded by the case.
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Publish for Memory {
    async fn encode_referral(
        &self,
        referral: &hunter_core::records::Referral,
    ) -> Result<Vec<u8>, PollError> {
        let version = (
            referral.id.clone(),
            referral.e_tag.clone().unwrap_or_default(),
            referral.updated_date_time.unwrap_or_default().micros(),
        );
        Ok(serde_json::to_vec(&version).expect("strings and a number"))
    }

    fn measure_referral(&self, _: &hunter_core::records::Referral) -> Option<usize> {
        Some(0)
    }

    fn send_referral(
        &self,
        _key: String,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<(), KafkaError>> + Send + 'static {
        let sent = self.sent.clone();
        let broker = self.broker.clone();
        let (id, etag, micros): (String, String, i64) =
            serde_json::from_slice(&payload).expect("encoded above");
        let (delay, fails) = {
            let mut broker = broker.lock().unwrap();
            broker.outstanding += 1;
            broker
                .attempted
                .push((id.clone(), etag.clone(), Timestamp(micros)));
            let delay = Duration::from_micros(broker.next() % 3_000);
            let fails = broker.next() % 1_000 < broker.fail_per_mille;
            (delay, fails)
        };
        async move {
            tokio::time::sleep(delay).await;
            broker.lock().unwrap().outstanding -= 1;
            if fails {
                return Err(KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::BrokerNotAvailable,
                ));
            }
            sent.lock().unwrap().push((id, etag));
            Ok(())
        }
    }

    async fn dead_letter(
        &self,
        class: &'static str,
        reason: &str,
        _: &str,
        _: &Reference,
    ) -> Result<(), PollError> {
        // Generated referrals are all valid: a dead letter here is a defect.
        Err(PollError::new(
            RunErrorClass::Client,
            format!("unexpected dead letter ({class}): {reason}"),
        ))
    }

    /// Checks that the cursor passes no record this poll sent and the broker did not
    /// acknowledge (nor one still outstanding).
    async fn store_state(&self, state: &SourceState) -> Result<(), PollError> {
        let acknowledged: HashSet<(String, String)> =
            self.sent.lock().unwrap().iter().cloned().collect();
        let mut broker = self.broker.lock().unwrap();
        if broker.outstanding > 0 {
            let outstanding = broker.outstanding;
            broker.violations.push(format!(
                "a state was stored with {outstanding} sends not yet acknowledged"
            ));
        }
        if let Some(cursor_at) = state.cursor_updated_at {
            let cursor = (cursor_at, state.cursor_id.clone().unwrap_or_default());
            let passed: Vec<_> = broker
                .attempted
                .iter()
                .filter(|(id, etag, at)| {
                    (*at, id.clone()) <= cursor
                        && !acknowledged.contains(&(id.clone(), etag.clone()))
                })
                .cloned()
                .collect();
            if !passed.is_empty() {
                broker.violations.push(format!(
                    "the cursor moved to {cursor:?} past {} unacknowledged records, e.g. {:?}",
                    passed.len(),
                    &passed[..passed.len().min(3)]
                ));
            }
        }
        self.states.lock().unwrap().push(state.clone());
        Ok(())
    }
}

/// One simulator and sign-in for every case; each case writes its own referrals file.
struct Harness {
    runtime: tokio::runtime::Runtime,
    base: String,
    file: std::path::PathBuf,
    auth: AuthSettings,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start() -> Harness {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("referrals.json");
        simulator::write_referrals(&file, &[]).unwrap();
        let options = SimulatorOptions::new(file.clone(), "127.0.0.1:0".parse().unwrap());
        let (addr, auth) = runtime.block_on(async {
            let (addr, serve) = simulator::bind(options).await.unwrap();
            tokio::spawn(serve);
            let mut auth = AuthSettings::new(
                "contoso.example",
                "11111111-2222-4333-8444-555555555555",
                dir.path().join("tokens.json"),
            );
            auth.authority_url = url::Url::parse(&format!("http://{addr}")).unwrap();
            login_with_device_code(&auth, |_| {}).await.unwrap();
            (addr, auth)
        });
        Harness {
            runtime,
            base: format!("http://{addr}"),
            file,
            auth,
            _dir: dir,
        }
    }

    fn tenant(&self, page_size: u32, state: Option<SourceState>) -> Tenant {
        let client = PartnerCenterClient::new(
            ClientSettings {
                api_url: url::Url::parse(&format!("{}/v1.0/engagements", self.base)).unwrap(),
                page_size,
                request_timeout: Duration::from_secs(10),
                max_attempts: 3,
                backoff_base: Duration::from_millis(10),
                backoff_cap: Duration::from_millis(100),
                max_body_bytes: ClientSettings::body_cap(page_size),
            },
            Arc::new(TokenProvider::new(self.auth.clone())),
        )
        .unwrap();
        Tenant::with_client("t", client, self.auth.clone(), state)
    }

    /// Every current version: (id, eTag) → updatedDateTime.
    async fn truth(&self) -> HashMap<(String, String), Timestamp> {
        let referrals: Vec<serde_json::Value> =
            reqwest::get(format!("{}/_simulator/referrals", self.base))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        referrals
            .iter()
            .map(|r| {
                let version = (
                    r["id"].as_str().unwrap().to_owned(),
                    r["eTag"].as_str().unwrap_or_default().to_owned(),
                );
                let updated = Timestamp::parse(r["updatedDateTime"].as_str().unwrap()).unwrap();
                (version, updated)
            })
            .collect()
    }

    async fn add(&self, query: &str) {
        self.post(&format!("/_simulator/late?{query}")).await;
    }

    async fn post(&self, path: &str) {
        reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }
}

#[derive(Debug, Clone)]
enum Step {
    Poll,
    Sweep,
    /// `count` referrals sharing one `updatedDateTime`, `before` seconds before the newest one
    /// (0: tied with it): inside the overlap window or far outside it.
    Late {
        count: usize,
        before: u32,
    },
    /// `count` referrals sharing one `updatedDateTime` of now, newer than every other.
    OnTime {
        count: usize,
    },
    /// The source starts again from its stored state.
    Restart,
    /// The next poll pages while referrals move on (to now, new eTags) between its requests.
    Moving,
    /// Referrals stop moving (before the final sweep; not drawn).
    Quiet,
    /// The next poll's sends fail at this rate (per thousand): the poll fails or not.
    Flaky {
        per_mille: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let before = prop_oneof![0u32..600, 600u32..7200];
    prop_oneof![
        3 => Just(Step::Poll),
        1 => Just(Step::Sweep),
        3 => (1usize..13, before).prop_map(|(count, before)| Step::Late { count, before }),
        1 => (1usize..13).prop_map(|count| Step::OnTime { count }),
        1 => Just(Step::Restart),
        1 => Just(Step::Moving),
        1 => (20u64..400).prop_map(|per_mille| Step::Flaky { per_mille }),
    ]
}

fn missing<'a>(
    expected: impl Iterator<Item = &'a (String, String)>,
    sent: &[(String, String)],
) -> Vec<(String, String)> {
    let sent: HashSet<_> = sent.iter().collect();
    expected.filter(|v| !sent.contains(v)).cloned().collect()
}

fn run_case(
    harness: &Harness,
    initial: usize,
    seed: u64,
    page_size: u32,
    pages_in_flight: usize,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let referrals = simulator::generate_referrals(initial, seed);
    simulator::write_referrals(&harness.file, &referrals).unwrap();
    harness.runtime.block_on(async {
        let memory = Memory::default();
        memory.broker.lock().unwrap().rng = seed;
        let mut tenant = harness.tenant(page_size, None);
        let mut restarted = false;
        let mut moving = false;
        let mut flaky = false;
        // The first poll of a source reads everything; a final sweep ends every schedule.
        let steps = std::iter::once(&Step::Poll)
            .chain(steps)
            .chain([&Step::Quiet, &Step::Sweep]);
        for step in steps {
            let full = match step {
                Step::Poll => false,
                Step::Sweep => true,
                Step::Late { count, before } => {
                    harness
                        .add(&format!("count={count}&before_newest_secs={before}"))
                        .await;
                    continue;
                }
                Step::OnTime { count } => {
                    let now = Timestamp::now().to_rfc3339();
                    harness
                        .add(&format!("count={count}&at={}", urlencode(&now)))
                        .await;
                    continue;
                }
                Step::Moving => {
                    harness.post("/_simulator/mutate?rate=0.5").await;
                    moving = true;
                    continue;
                }
                Step::Quiet => {
                    harness.post("/_simulator/mutate?rate=0").await;
                    moving = false;
                    // The final sweep's sends do not fail.
                    memory.broker.lock().unwrap().fail_per_mille = 0;
                    flaky = false;
                    continue;
                }
                Step::Restart => {
                    tenant = harness.tenant(page_size, tenant.state.clone());
                    restarted = true;
                    continue;
                }
                Step::Flaky { per_mille } => {
                    memory.broker.lock().unwrap().fail_per_mille = *per_mille;
                    flaky = true;
                    continue;
                }
            };
            let from = if full {
                None
            } else {
                cursor::since(tenant.cursor().as_ref(), OVERLAP)
            };
            let mut counts = Counts::default();
            let before = tenant.state.clone();
            memory.broker.lock().unwrap().attempted.clear();
            let polled = poll::poll_pages(
                &mut tenant,
                &memory,
                OVERLAP,
                poll::Window { full, since: None },
                pages_in_flight,
                "run",
                &mut counts,
                None,
            )
            .await;
            let violations = std::mem::take(&mut memory.broker.lock().unwrap().violations);
            prop_assert!(violations.is_empty(), "{step:?}: {violations:?}");
            if std::mem::take(&mut flaky) {
                memory.broker.lock().unwrap().fail_per_mille = 0;
                if polled.is_err() {
                    // Nothing moved: the next polls start from the same cursor and are held
                    // to publishing this poll's window (the checks below, then).
                    prop_assert_eq!(&tenant.state, &before, "a failed poll moved the state");
                    if std::mem::take(&mut moving) {
                        harness.post("/_simulator/mutate?rate=0").await;
                    }
                    continue;
                }
            }
            prop_assert!(polled.is_ok(), "{step:?} failed: {:?}", polled.err());
            if std::mem::take(&mut moving) {
                // Updates landing while a tie run longer than a page is paged by `nextLink`
                // can shift its offsets (the pager's documented limit): the sweep repairs
                // that, which the final sweep checks.
                harness.post("/_simulator/mutate?rate=0").await;
                continue;
            }
            // Nothing moved since the poll began: the versions now are the ones it could read.
            let truth = harness.truth().await;
            let sent = memory.sent.lock().unwrap().clone();
            // What this poll had to read: everything (a sweep, a first poll) or its window.
            let due = truth
                .iter()
                .filter(|(_, at)| from.is_none_or(|from| **at >= from))
                .map(|(version, _)| version);
            let lost = missing(due, &sent);
            prop_assert!(
                lost.is_empty(),
                "{step:?} from {from:?} did not publish {} versions, e.g. {:?}",
                lost.len(),
                &lost[..lost.len().min(3)]
            );
        }
        let sent = memory.sent.lock().unwrap().clone();
        let truth = harness.truth().await;
        let lost = missing(truth.keys(), &sent);
        prop_assert!(lost.is_empty(), "lost after the final sweep: {lost:?}");
        if !restarted {
            let mut seen = HashSet::new();
            for version in &sent {
                prop_assert!(seen.insert(version), "published twice: {version:?}");
            }
        }
        prop_assert!(
            !memory.states.lock().unwrap().is_empty(),
            "the polls stored a state"
        );
        Ok(())
    })
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[test]
fn every_referral_is_published_by_its_window_or_the_next_sweep_at_the_latest() {
    let harness = Harness::start();
    let mut runner = TestRunner::new(Config::with_cases(32));
    let strategy = (
        1usize..30,
        any::<u64>(),
        2u32..7,
        1usize..6,
        proptest::collection::vec(step(), 1..14),
    );
    runner
        .run(
            &strategy,
            |(initial, seed, page_size, pages_in_flight, steps)| {
                run_case(&harness, initial, seed, page_size, pages_in_flight, &steps)
            },
        )
        .unwrap();
}

/// Webhook fetches (`fetch.rs`) against the simulator: a referral the source never saw is
/// published, the same version again is not, an unknown id publishes nothing, and the next poll
/// skips what the fetch published (the same `published` check).
#[test]
fn a_fetch_by_id_publishes_a_new_version_once_and_the_poll_skips_it() {
    use super::fetch::{self, Fetch, Outcome};
    let harness = Harness::start();
    harness.runtime.block_on(async {
        harness.add("count=3&at=2026-01-01T00:00:00Z").await;
        let truth = harness.truth().await;
        let (id, etag) = truth.keys().next().unwrap().clone();
        let mut tenant = harness.tenant(100, None);
        let memory = Memory::default();
        let fetch = |referral_id: &str| Fetch {
            command_id: "c-1".into(),
            referral_id: referral_id.into(),
        };
        assert_eq!(
            fetch::handle(&mut tenant, &memory, fetch(&id)).await,
            Outcome::Published,
            "never seen: published"
        );
        assert_eq!(
            memory.sent.lock().unwrap().clone(),
            vec![(id.clone(), etag.clone())]
        );
        assert_eq!(
            fetch::handle(&mut tenant, &memory, fetch(&id)).await,
            Outcome::Unchanged,
            "the same version again: nothing"
        );
        assert_eq!(
            fetch::handle(
                &mut tenant,
                &memory,
                fetch("0a1b2c3d-0000-4000-8000-00000000ffff")
            )
            .await,
            Outcome::NotFound
        );
        assert_eq!(memory.sent.lock().unwrap().len(), 1);
        // The poll publishes the two others and skips the fetched one.
        let mut counts = Counts::default();
        poll::poll_pages(
            &mut tenant,
            &memory,
            OVERLAP,
            poll::Window::default(),
            1,
            "run",
            &mut counts,
            None,
        )
        .await
        .unwrap();
        let sent = memory.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 3, "{sent:?}");
        assert_eq!(
            sent.iter().filter(|(sent_id, _)| *sent_id == id).count(),
            1,
            "published once: {sent:?}"
        );
    });
}
