//! Late referrals against the real broker, ClickHouse, the `hunter` binary and the simulator:
//! a referral that shows up after the source's cursor moved past it, with an `updatedDateTime`
//! older than `cursor - overlap`, and a run of ties (one `updatedDateTime`) longer than a page.
//! An incremental poll cannot see either (its filter starts at `cursor - overlap`); the periodic
//! full sweep (no filter, docs/partner-center-api.md "Late referrals") must publish every one of
//! them, once, and the pipeline must make them leads.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hunter_core::records::{SyncRun, Timestamp};
use hunter_e2e::{Deployment, generated_referrals, wait_for};

/// `$top` the source asks for; the tie run is longer than three pages of it.
const PAGE_SIZE: usize = 5;
const TIE_RUN: usize = 3 * PAGE_SIZE + 2;
const OVERLAP_SECS: i64 = 60;
/// Long enough that several incremental polls run between the injection and the sweep.
const SWEEP_SECS: u64 = 30;

/// `POST /_simulator/late?...`: the (id, eTag) of each referral added.
async fn add_late(deployment: &Deployment, query: &str) -> anyhow::Result<Vec<(String, String)>> {
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/_simulator/late?{query}", deployment.simulator))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let strings = |key: &str| -> Vec<String> {
        reply[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    Ok(strings("ids").into_iter().zip(strings("eTags")).collect())
}

fn succeeded_after(run: &SyncRun, at: Timestamp) -> bool {
    run.status == "succeeded" && run.started_at > at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_referrals_and_a_tie_run_longer_than_a_page_are_published_by_the_next_sweep()
-> anyhow::Result<()> {
    let referrals = generated_referrals(30, 41)?;
    let mut deployment = Deployment::new(&referrals)?;
    deployment.start_simulator(&[]).await?;
    deployment.login_and_migrate()?;
    for (name, value) in [
        ("HUNTER_PARTNER_CENTER_PAGE_SIZE", PAGE_SIZE.to_string()),
        ("HUNTER_SYNC_INTERVAL_SECS", "1".into()),
        ("HUNTER_SYNC_OVERLAP_SECS", OVERLAP_SECS.to_string()),
        ("HUNTER_SYNC_FULL_SWEEP_SECS", SWEEP_SECS.to_string()),
    ] {
        deployment.env.insert(name.into(), value);
    }
    deployment.start_role("all").await?;

    // The first poll reads everything (it counts as a sweep) and puts the cursor on the newest
    // referral.
    let first = deployment
        .wait_for_run("the first poll", Duration::from_secs(120), |r| {
            r.status == "succeeded"
        })
        .await?;
    assert_eq!(first.published, 30, "{first:?}");

    // Now referrals show up late: one an hour before the cursor and a run of ties two hours
    // before it, both far outside `cursor - overlap`.
    let late = add_late(&deployment, "count=1&before_newest_secs=3600").await?;
    let ties = add_late(
        &deployment,
        &format!("count={TIE_RUN}&before_newest_secs=7200"),
    )
    .await?;
    let added_at = Timestamp::now();
    assert_eq!((late.len(), ties.len()), (1, TIE_RUN));
    let injected: HashSet<(String, String)> = late.iter().chain(&ties).cloned().collect();
    let truth = deployment.simulator_truth().await?;
    assert_eq!(truth.len(), 30 + 1 + TIE_RUN, "the simulator serves them");

    // Incremental polls run before the sweep and cannot see them: that they are outside the
    // overlap window is what makes the sweep the one to find them.
    let incremental = deployment
        .wait_for_run(
            "an incremental poll after the late referrals",
            Duration::from_secs(60),
            |r| succeeded_after(r, added_at) && r.trigger == "schedule",
        )
        .await?;
    assert_eq!(incremental.published, 0, "{incremental:?}");
    let sweep = deployment
        .wait_for_run(
            "the next full sweep",
            Duration::from_secs(SWEEP_SECS + 120),
            |r| succeeded_after(r, added_at) && r.trigger == "sweep",
        )
        .await?;
    let runs = deployment.sync_runs().await?;
    for run in runs.iter().filter(|r| {
        succeeded_after(r, added_at) && r.trigger != "sweep" && r.started_at < sweep.started_at
    }) {
        assert_eq!(
            run.published, 0,
            "an incremental poll reached past cursor - overlap: {run:?}"
        );
    }

    // The sweep published exactly the late ones, ties across pages included, each once.
    assert_eq!(sweep.published, (1 + TIE_RUN) as i64, "{sweep:?}");
    assert!(
        sweep.pages as usize > (30 + 1 + TIE_RUN) / PAGE_SIZE,
        "the sweep read every page: {sweep:?}"
    );
    let published = deployment.published_versions().await?;
    let mut times: HashMap<&(String, String), usize> = HashMap::new();
    for version in &published {
        *times.entry(version).or_default() += 1;
    }
    let lost: Vec<_> = injected.iter().filter(|v| !times.contains_key(v)).collect();
    assert!(
        lost.is_empty(),
        "{} late referrals never published: {lost:?}",
        lost.len()
    );
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published more than once: {twice:?}");
    let published: HashSet<_> = published.into_iter().collect();
    let truth: HashSet<_> = truth.into_iter().collect();
    assert_eq!(published, truth, "the topic holds every current version");

    // And the pipeline makes each of them a lead.
    let expected = 30 + 1 + TIE_RUN;
    let clickhouse = &deployment.clickhouse;
    let leads = wait_for(
        "every referral as a lead",
        Duration::from_secs(120),
        || async {
            let rows = clickhouse.rows("SELECT lead_id FROM leads FINAL").await?;
            let ids: HashSet<String> = rows
                .iter()
                .filter_map(|row| row["lead_id"].as_str().map(str::to_owned))
                .collect();
            Ok((ids.len() >= expected).then_some(ids))
        },
    )
    .await;
    let leads = match leads {
        Ok(leads) => leads,
        Err(error) => anyhow::bail!("{error}\n{}", deployment.logs()),
    };
    for (id, _) in &injected {
        assert!(leads.contains(id), "late referral {id} is not a lead");
    }
    assert_eq!(leads.len(), expected);
    deployment.teardown().await;
    Ok(())
}
