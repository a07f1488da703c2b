//! The API fuzzed from its own OpenAPI document by schemathesis (PyPI, installed by
//! `tests/schemathesis/install.sh`) against a real deployment with data: every route, the
//! coverage, fuzzing and stateful phases, with a fixed seed so a failure repeats. No request
//! may get a 5xx.

use std::path::PathBuf;
use std::process::Command;

use hunter_e2e::{Deployment, generated_referrals};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzing_every_route_from_the_openapi_document_gets_no_server_error() -> anyhow::Result<()>
{
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let schemathesis = repo.join(".local/schemathesis-venv/bin/schemathesis");
    anyhow::ensure!(
        schemathesis.exists(),
        "schemathesis missing: run tests/schemathesis/install.sh (tests/run.sh does)"
    );
    let referrals = generated_referrals(30, 17)?;
    let mut deployment = Deployment::new(&referrals)?;
    deployment.run_all_until_leads(30).await?;
    let base = format!("{}/api/v1", deployment.api);
    let token = deployment.api_token.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis)
            .args(["run", &format!("{base}/openapi.json"), "--url", &base])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["--checks", "not_a_server_error"])
            .args(["--max-examples", "60", "--seed", "20261128"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .env("NO_COLOR", "1")
            .output()
    })
    .await??;
    let text = hunter_e2e::output_text(&output);
    if !output.status.success() {
        anyhow::bail!(
            "schemathesis found failures:\n{text}\n{}",
            deployment.logs()
        );
    }
    // Seven routes, the two of dead-letter re-drive, the four of write-back, the overview, the
    // CSV export and the Partner Center webhook receiver.
    assert!(text.contains("Tested: 16"), "every route tested:\n{text}");
    assert!(text.contains(" passed"), "{text}");
    deployment.teardown().await;
    Ok(())
}
