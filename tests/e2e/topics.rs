//! `hunter topics describe` against the real broker: offsets, compaction and each of Hunter's
//! consumer groups with its lag, before, during and after a run, and a missing topic named with
//! the fix.

use std::time::Duration;

use hunter_e2e::{
    Deployment, described_topic as topic, generated_referrals, group_view, run_hunter, wait_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_describe_shows_offsets_compaction_and_each_groups_lag() -> anyhow::Result<()> {
    let referrals = generated_referrals(40, 11)?;
    let mut deployment = Deployment::new(&referrals)?;
    deployment.start_simulator(&[]).await?;
    deployment.login_and_migrate()?;
    let prefix = deployment.prefix.clone();
    let processor = format!("{prefix}hunter-processor");
    let sink_leads = format!("{prefix}hunter-sink-leads");

    // Before any run: every topic exists, empty, the leads topic compacted, Hunter's groups
    // shown with nothing committed.
    let before = deployment.describe_topics()?;
    let leads_topic = topic(&before, &deployment.topics.leads)?;
    assert_eq!(leads_topic["exists"], true);
    assert_eq!(leads_topic["partitions"].as_array().map(Vec::len), Some(4));
    assert_eq!(leads_topic["cleanup_policy"], "compact", "{leads_topic}");
    let referral_topic = topic(&before, &deployment.topics.referrals)?;
    assert_eq!(group_view(referral_topic, &processor)?, (0, 0, 0));

    // A run: every referral read and committed, lag 0 on the processor's and the sink's groups.
    deployment.start_role("all").await?;
    deployment
        .wait_for_leads_in_api(40, 1, Duration::from_secs(90))
        .await?;
    let (records, lag) = wait_for(
        "the processor and the sink to commit everything",
        Duration::from_secs(60),
        || async {
            let now = deployment.describe_topics()?;
            let (records, lag, committed) =
                group_view(topic(&now, &deployment.topics.referrals)?, &processor)?;
            let (leads, leads_lag, leads_committed) =
                group_view(topic(&now, &deployment.topics.leads)?, &sink_leads)?;
            Ok((records >= 40
                && lag == 0
                && committed == records
                && leads >= 40
                && leads_lag == 0
                && leads_committed == leads)
                .then_some((records, lag)))
        },
    )
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", deployment.logs()))?;
    assert_eq!(lag, 0);

    // The roles stop; five more referral records arrive: the processor's lag says exactly 5.
    for index in 0..deployment.processes_len() {
        deployment.process(index).kill9();
    }
    let more = generated_referrals(5, 12)?;
    deployment.produce_referrals(&more).await?;
    let after = deployment.describe_topics()?;
    let (now_records, now_lag, _) =
        group_view(topic(&after, &deployment.topics.referrals)?, &processor)?;
    assert_eq!(now_records, records + 5, "{after}");
    assert_eq!(now_lag, 5, "{after}");

    // The text form says the same in words.
    let (ok, text) = run_hunter(
        &["topics", "describe"],
        &deployment.env,
        Duration::from_secs(60),
    )?;
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("group {processor}: lag 5")),
        "{text}"
    );
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_describe_names_a_missing_topic_and_the_fix() -> anyhow::Result<()> {
    // No `hunter migrate`: the deployment's prefixed topics do not exist.
    let deployment = Deployment::new(&[])?;
    let (ok, text) = run_hunter(
        &["topics", "describe"],
        &deployment.env,
        Duration::from_secs(60),
    )?;
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "{}\n  missing on the broker: run `hunter migrate`",
            deployment.topics.leads
        )),
        "{text}"
    );
    let description = deployment.describe_topics()?;
    assert_eq!(
        topic(&description, &deployment.topics.referrals)?["exists"],
        false
    );
    Ok(())
}
