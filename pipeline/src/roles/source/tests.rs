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
    /// (id, eTag) of every referral record sent, in order.
    sent: Arc<Mutex<Vec<(String, String)>>>,
    states: Mutex<Vec<SourceState>>,
}

impl Publish for Memory {
    async fn encode_referral(
        &self,
        referral: &hunter_core::records::Referral,
    ) -> Result<Vec<u8>, PollError> {
        let version = (
            referral.id.clone(),
            referral.e_tag.clone().unwrap_or_default(),
        );
        Ok(serde_json::to_vec(&version).expect("a pair of strings"))
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
        async move {
            let version = serde_json::from_slice(&payload).expect("encoded above");
            sent.lock().unwrap().push(version);
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

    async fn store_state(&self, state: &SourceState) -> Result<(), PollError> {
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
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let referrals = simulator::generate_referrals(initial, seed);
    simulator::write_referrals(&harness.file, &referrals).unwrap();
    harness.runtime.block_on(async {
        let memory = Memory::default();
        let mut tenant = harness.tenant(page_size, None);
        let mut restarted = false;
        let mut moving = false;
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
                    continue;
                }
                Step::Restart => {
                    tenant = harness.tenant(page_size, tenant.state.clone());
                    restarted = true;
                    continue;
                }
            };
            let from = if full {
                None
            } else {
                cursor::since(tenant.cursor().as_ref(), OVERLAP)
            };
            let mut counts = Counts::default();
            let polled = poll::poll_pages(
                &mut tenant,
                &memory,
                OVERLAP,
                poll::Window { full, since: None },
                "run",
                &mut counts,
                None,
            )
            .await;
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
        proptest::collection::vec(step(), 1..14),
    );
    runner
        .run(&strategy, |(initial, seed, page_size, steps)| {
            run_case(&harness, initial, seed, page_size, &steps)
        })
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
