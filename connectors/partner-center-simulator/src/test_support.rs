//! Shared helpers for the tests of this crate and of the connector (`hunter-partner-center`,
//! which includes this file with `#[path]`): a real simulator on `127.0.0.1:0` and signed-in
//! settings for it. Both crates are named by their package names (each crate names itself with
//! `extern crate self as ...` under `cfg(test)`), so the one file compiles in both.
// Each of the two crates uses a part of the harness.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use url::Url;

use hunter_partner_center::auth::{AuthSettings, TokenCacheFile, login_with_device_code};
use hunter_partner_center::client::{ClientSettings, Sleep};
use hunter_partner_center_simulator::{self as simulator, SimulatorOptions};

pub(crate) const TENANT: &str = "contoso.example";
pub(crate) const CLIENT_ID: &str = "11111111-2222-4333-8444-555555555555";

/// A running simulator; stops when dropped.
pub(crate) struct Sim {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub referrals_file: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sim {
    pub(crate) async fn start(
        referrals: &[Value],
        configure: impl FnOnce(&mut SimulatorOptions),
    ) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let referrals_file = dir.path().join("referrals.json");
        simulator::write_referrals(&referrals_file, referrals).unwrap();
        let mut options =
            SimulatorOptions::new(referrals_file.clone(), "127.0.0.1:0".parse().unwrap());
        options.fault_seed = Some(7);
        configure(&mut options);
        let (addr, serve) = simulator::bind(options).await.unwrap();
        let task = tokio::spawn(async move {
            serve.await.unwrap();
        });
        Sim {
            addr,
            dir,
            referrals_file,
            task,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn auth_settings(&self) -> AuthSettings {
        let mut settings = AuthSettings::new(
            TENANT,
            CLIENT_ID,
            self.dir.path().join("cache").join("tokens.json"),
        );
        settings.authority_url = Url::parse(&self.url("")).unwrap();
        settings
    }

    pub(crate) async fn sign_in(&self) -> (AuthSettings, TokenCacheFile) {
        let settings = self.auth_settings();
        let cache = login_with_device_code(&settings, |_| {}).await.unwrap();
        (settings, cache)
    }

    pub(crate) fn client_settings(&self, page_size: u32) -> ClientSettings {
        ClientSettings {
            api_url: Url::parse(&self.url("/v1.0/engagements")).unwrap(),
            page_size,
            request_timeout: Duration::from_secs(10),
            max_attempts: 10,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
            max_body_bytes: ClientSettings::body_cap(page_size),
        }
    }

    pub(crate) async fn stats(&self) -> Value {
        reqwest::get(self.url("/_simulator/stats"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Count of `endpoint` requests that answered `status`, from `/_simulator/stats`.
pub(crate) fn count(stats: &Value, endpoint: &str, status: u16) -> u64 {
    stats["requests"][endpoint][status.to_string()]
        .as_u64()
        .unwrap_or(0)
}

/// Records requested delays and returns at once.
#[derive(Default)]
pub(crate) struct RecordingSleep {
    pub delays: Mutex<Vec<Duration>>,
}

impl Sleep for RecordingSleep {
    fn sleep(
        &self,
        duration: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        self.delays.lock().unwrap().push(duration);
        Box::pin(tokio::task::yield_now())
    }
}

impl RecordingSleep {
    pub(crate) fn shared() -> Arc<Self> {
        Arc::new(Self::default())
    }
}
