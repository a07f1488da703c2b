//! "Offsets move only after a durable write", tested where it matters: a role killed with
//! SIGKILL while a batch it has consumed waits on something downstream that does not answer,
//! for much longer than the consumer's commit interval, then restarted. Whatever the killed
//! process had consumed but not made durable must be read again by its successor.
//!
//! - The sink: its insert hangs on a ClickHouse that accepts the request and never answers
//!   (a [`SilentProxy`] in front of the stack's server, held) until `HUNTER_SINK_INSERT_TIMEOUT_MS`
//!   says it failed, and the stream stalls on the batch, retrying; the rows must all arrive
//!   after the restart.
//! - The processor: its leads wait on MX lookups sent to a DNS server that never answers
//!   ([`SilentDnsServer`]) with a timeout longer than the test; every lead must arrive after the
//!   restart (with a DNS server that answers at once).
//!
//! Each test first shows that commits do happen within it (a first batch gets written and its
//! offsets committed), then holds the stall for [`STALL`], five commit intervals, after seeing
//! that the stalled batch was consumed (the proxy holds its INSERT and the sink's
//! `hunter_sink_consumption_paused` says it stalled; the DNS server was asked about every
//! domain of it). A role that stored offsets when it consumed, or before the write,
//! would have committed them in that time and its successor would skip the batch.

use std::collections::HashSet;
use std::time::Duration;

use hunter_core::records::{Ingest, Lead, Referral, Timestamp};
use hunter_e2e::{
    ClickHouse, Deployment, SilentDnsServer, SilentProxy, generated_referrals, run_hunter, wait_for,
};
use serde_json::json;

/// librdkafka's `auto.commit.interval.ms` for every role's consumer
/// (`hunter_core::kafka::GroupConsumer::subscribe`): stored offsets are committed this often.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// How long a stall lasts before the kill: the fault's duration, not a wait for an event.
const STALL: Duration = Duration::from_secs(5 * COMMIT_INTERVAL.as_secs());

async fn count(clickhouse: &ClickHouse, sql: &str) -> anyhow::Result<u64> {
    let rows = clickhouse.rows(sql).await?;
    let n = &rows[0]["n"];
    Ok(n.as_str()
        .map(str::parse)
        .transpose()?
        .or(n.as_u64())
        .unwrap_or_default())
}

/// Leads built the way the processor builds them, from `count` generated referrals.
fn leads_from_generated(count: usize, seed: u64) -> anyhow::Result<Vec<Lead>> {
    let mut leads = Vec::with_capacity(count);
    for raw in generated_referrals(count, seed)? {
        let referral = Referral::from_api_json(&raw.to_string(), Ingest::default())?;
        leads.push(Lead::from_referral(&referral, Timestamp::now())?);
    }
    Ok(leads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_killed_while_its_insert_hangs_on_a_silent_clickhouse_loses_no_row()
-> anyhow::Result<()> {
    let leads = leads_from_generated(1_000, 91)?;
    let (first, stalled) = leads.split_at(500);
    let mut deployment = Deployment::new(&[])?;
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");

    // The sink talks to the stack's ClickHouse through a proxy that can stop answering; the
    // test reads ClickHouse directly. Batches fill by rows only: 500 leads are one insert.
    let url = reqwest::Url::parse(&deployment.stack.clickhouse_url)?;
    let upstream = tokio::net::lookup_host((
        url.host_str().unwrap_or("127.0.0.1"),
        url.port_or_known_default().unwrap_or(8123),
    ))
    .await?
    .next()
    .ok_or_else(|| anyhow::anyhow!("no address for {url}"))?;
    let proxy = SilentProxy::start(upstream).await?;
    for (name, value) in [
        ("HUNTER_CLICKHOUSE_URL", proxy.url()),
        ("HUNTER_SINK_BATCH_ROWS", "500".into()),
        ("HUNTER_SINK_BATCH_MAX_WAIT_MS", "600000".into()),
        // An unanswered insert counts as failed after 2 s: the stream stalls and retries.
        ("HUNTER_SINK_INSERT_TIMEOUT_MS", "2000".into()),
    ] {
        deployment.env.insert(name.into(), value);
    }
    let group = "hunter-sink-leads";
    let topic = deployment.topics.leads.clone();

    // Commits happen here: the first batch is written and its offsets committed.
    deployment.produce_leads(first).await?;
    let sink = deployment.start_role("sink").await?;
    let committed = wait_for(
        "the first batch in clickhouse and its offsets committed",
        Duration::from_secs(120),
        || async {
            let rows = count(
                &deployment.clickhouse,
                "SELECT toString(count()) AS n FROM leads FINAL",
            )
            .await?;
            let committed = deployment.committed_records(group, &topic)?;
            Ok((rows == 500 && committed == 500).then_some(()))
        },
    )
    .await;
    if let Err(error) = committed {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }

    // ClickHouse stops answering; the next batch is consumed and its insert sent, unanswered,
    // until the insert times out and the stream stalls on the batch (its paused gauge).
    proxy.hold();
    deployment.produce_leads(stalled).await?;
    let stalled_gauge = r#"hunter_sink_consumption_paused{stream="leads"} 1"#;
    let held = wait_for(
        "the second batch's insert held at the silent clickhouse, and the stream stalled",
        Duration::from_secs(60),
        || async {
            let paused = deployment
                .metrics()
                .await?
                .lines()
                .any(|line| line == stalled_gauge);
            Ok((paused && proxy.held().contains("INSERT")).then_some(()))
        },
    )
    .await;
    if let Err(error) = held {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }
    tokio::time::sleep(STALL).await;
    let committed_at_kill = deployment.committed_records(group, &topic)?;
    let rows_at_kill = count(
        &deployment.clickhouse,
        "SELECT toString(count()) AS n FROM leads",
    )
    .await?;
    anyhow::ensure!(
        rows_at_kill == 500,
        "{rows_at_kill} rows in clickhouse while it did not answer: the stall was not real"
    );
    anyhow::ensure!(
        deployment.process(sink).is_running(),
        "the sink exited during the stall\n{}",
        deployment.logs()
    );
    let timeouts = deployment
        .metrics()
        .await?
        .lines()
        .filter(|line| {
            line.starts_with("hunter_sink_failures_total{")
                && line.contains(r#"table="leads""#)
                && line.contains(r#"class="timeout""#)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    anyhow::ensure!(
        timeouts >= 1.0,
        "the unanswered insert left no timeout in hunter_sink_failures_total\n{}",
        deployment.logs()
    );
    deployment.process(sink).kill9();

    // ClickHouse answers again; a new sink must write the batch the killed one held.
    proxy.forward();
    deployment.start_role("sink").await?;
    let clickhouse = deployment.clickhouse.clone();
    let every = wait_for(
        "every lead in clickhouse after the restart",
        Duration::from_secs(120),
        || async {
            let ids = count(
                &clickhouse,
                "SELECT toString(uniqExact(lead_id)) AS n FROM leads FINAL",
            )
            .await?;
            // `lead_history` goes in after `leads` in the same flush: wait for it too.
            let history = count(
                &clickhouse,
                "SELECT toString(count()) AS n FROM lead_history FINAL",
            )
            .await?;
            Ok((ids == 1_000 && history >= 1_000).then_some(()))
        },
    )
    .await;
    if let Err(error) = every {
        anyhow::bail!(
            "{error}: the killed sink's group had committed {committed_at_kill} of 1000 lead \
             records at the kill, with 500 rows written\n{}",
            deployment.logs()
        );
    }
    let live = count(
        &clickhouse,
        "SELECT toString(count()) AS n FROM leads FINAL",
    )
    .await?;
    assert_eq!(live, 1_000, "one live row per lead");
    let history = count(
        &clickhouse,
        "SELECT toString(count()) AS n FROM lead_history FINAL",
    )
    .await?;
    assert_eq!(history, 1_000, "every lead version once in lead_history");
    deployment.teardown().await;
    Ok(())
}

/// A referral in the API's shape whose company domain comes from its one contact's email.
fn referral_with_email(id: &str, email: &str) -> serde_json::Value {
    json!({
        "id": id, "updatedDateTime": "2026-11-01T10:00:00Z", "createdDateTime": "2026-10-30T10:00:00Z",
        "status": "New", "substatus": "Pending", "qualification": "SalesQualified",
        "customerProfile": { "name": format!("Customer {id}"), "size": "251to1000employees",
                             "address": { "country": "GB" }, "team": [ { "email": email } ] },
        "details": { "dealValue": 20000, "currency": "GBP" }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_killed_while_its_leads_wait_on_a_silent_dns_server_loses_no_lead()
-> anyhow::Result<()> {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    // Free mail: no company domain, no lookup; these leads go out at once.
    let quick: Vec<_> = (0..50)
        .map(|i| referral_with_email(&format!("quick-{i}"), &format!("buyer{i}@gmail.com")))
        .collect();
    // A company domain each: each lead waits on its own MX lookup.
    let domains: Vec<String> = (0..200).map(|i| format!("durable{i}-{tag}.com")).collect();
    let slow: Vec<_> = domains
        .iter()
        .enumerate()
        .map(|(i, domain)| referral_with_email(&format!("slow-{i}"), &format!("buyer@{domain}")))
        .collect();
    let expected: HashSet<String> = quick
        .iter()
        .chain(&slow)
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect();

    let dns = SilentDnsServer::start().await?;
    let mut deployment = Deployment::new(&[])?;
    let (ok, output) = run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    // Lookups wait ten minutes for an answer that never comes: longer than the test.
    for (name, value) in [
        ("HUNTER_ENRICH_DNS_SERVER", dns.address.to_string()),
        ("HUNTER_ENRICH_DNS_TIMEOUT_MS", "600000".into()),
    ] {
        deployment.env.insert(name.into(), value);
    }
    let group = "hunter-processor";
    let topic = deployment.topics.referrals.clone();

    // Commits happen here: the quick leads go out and their referrals' offsets are committed.
    deployment.produce_referrals(&quick).await?;
    let processor = deployment.start_role("process").await?;
    let committed = wait_for(
        "the quick leads out and their offsets committed",
        Duration::from_secs(120),
        || async {
            let leads = deployment.topic_count(&deployment.topics.leads)?;
            let committed = deployment.committed_records(group, &topic)?;
            Ok((leads == 50 && committed == 50).then_some(()))
        },
    )
    .await;
    if let Err(error) = committed {
        anyhow::bail!("{error}\n{}", deployment.logs());
    }

    // The slow referrals are consumed: the silent server is asked about every domain.
    deployment.produce_referrals(&slow).await?;
    let asked = wait_for(
        "an MX question for every slow referral's domain",
        Duration::from_secs(60),
        || async {
            let questions = dns.questions();
            Ok(domains
                .iter()
                .all(|domain| questions.contains(domain))
                .then_some(()))
        },
    )
    .await;
    if let Err(error) = asked {
        anyhow::bail!(
            "{error}: asked about {:?}\n{}",
            dns.questions().len(),
            deployment.logs()
        );
    }
    tokio::time::sleep(STALL).await;
    let committed_at_kill = deployment.committed_records(group, &topic)?;
    let leads_at_kill = deployment.topic_count(&deployment.topics.leads)?;
    anyhow::ensure!(
        leads_at_kill == 50,
        "{leads_at_kill} leads while every slow lead waited on dns: the stall was not real"
    );
    anyhow::ensure!(
        deployment.process(processor).is_running(),
        "the processor exited during the stall\n{}",
        deployment.logs()
    );
    deployment.process(processor).kill9();

    // A successor whose DNS answers at once (a closed local port: `dns_error`) must produce
    // every lead the killed one was waiting on.
    for (name, value) in [
        ("HUNTER_ENRICH_DNS_SERVER", "127.0.0.1:9"),
        ("HUNTER_ENRICH_DNS_TIMEOUT_MS", "200"),
    ] {
        deployment.env.insert(name.into(), value.into());
    }
    deployment.start_role("process").await?;
    let every = wait_for(
        "a lead for every referral after the restart",
        Duration::from_secs(120),
        || async {
            let ids: HashSet<String> = deployment
                .leads()
                .await?
                .into_iter()
                .map(|lead| lead.lead_id)
                .collect();
            Ok((ids == expected).then_some(()))
        },
    )
    .await;
    if let Err(error) = every {
        anyhow::bail!(
            "{error}: the killed processor's group had committed {committed_at_kill} of 250 \
             referrals at the kill, with 50 leads out\n{}",
            deployment.logs()
        );
    }
    // The successor replayed only what was not committed: no lead version twice.
    let leads = deployment.leads().await?;
    let mut seen = HashSet::new();
    let doubled: Vec<_> = leads
        .iter()
        .filter(|lead| !seen.insert((lead.lead_id.clone(), lead.version)))
        .map(|lead| lead.lead_id.clone())
        .collect();
    assert!(doubled.is_empty(), "leads produced twice: {doubled:?}");
    deployment.teardown().await;
    Ok(())
}
