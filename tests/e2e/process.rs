//! The processor against the real broker: dedupe, dead letters, kill -9, two processors and a
//! rebalance.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use hunter_e2e::{
    Deployment, free_port, generated_referrals, read_topic, wait_for, wait_for_no_lag,
};
use serde_json::json;

/// A later version of a referral: newer timestamp, new eTag, a status step.
fn moved_on(referral: &serde_json::Value, seconds: i64) -> serde_json::Value {
    let mut next = referral.clone();
    let updated = time::OffsetDateTime::parse(
        referral["updatedDateTime"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let later = updated + time::Duration::seconds(seconds);
    next["updatedDateTime"] = json!(
        later
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    next["eTag"] = json!(format!("\"{}\"", uuid::Uuid::new_v4()));
    let (status, substatus) = match referral["status"].as_str() {
        Some("New") => ("Active", "Accepted"),
        Some("Active") => ("Closed", "Won"),
        _ => ("Closed", "Lost"),
    };
    next["status"] = json!(status);
    next["substatus"] = json!(substatus);
    next
}

/// (lead_id, version) pairs produced more than once.
fn doubled(leads: &[hunter_core::records::Lead]) -> Vec<(String, i64)> {
    let mut seen = HashSet::new();
    leads
        .iter()
        .map(|l| (l.lead_id.clone(), l.version))
        .filter(|k| !seen.insert(k.clone()))
        .collect()
}

/// The `leads=N` of each "dedupe state rebuilt" line of a processor's log (ANSI colours, which
/// the log may carry around field names, removed first).
fn rebuilt_leads(log: &str) -> Vec<u64> {
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            plain.push(c);
        }
    }
    plain
        .lines()
        .filter(|line| line.contains("dedupe state rebuilt"))
        .filter_map(|line| {
            let (_, after) = line.split_once(" leads=")?;
            after.split(' ').next()?.parse().ok()
        })
        .collect()
}

async fn wait_for_leads(
    deployment: &Deployment,
    count: i64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let result = wait_for("leads", timeout, || async {
        Ok((deployment.topic_count(&deployment.topics.leads)? >= count).then_some(()))
    })
    .await;
    result.map_err(|error| anyhow::anyhow!("{error}\n{}", deployment.logs()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_and_older_versions_produce_no_lead_and_poison_goes_to_the_dlq()
-> anyhow::Result<()> {
    let referrals = generated_referrals(20, 51)?;
    let mut deployment = Deployment::new(&[])?;
    let (ok, output) =
        hunter_e2e::run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");

    let newer: Vec<_> = referrals
        .iter()
        .take(5)
        .map(|r| moved_on(r, 3600))
        .collect();
    deployment.produce_referrals(&referrals).await?; // 20 first versions
    deployment.produce_referrals(&referrals).await?; // 20 exact repeats
    deployment.produce_referrals(&newer).await?; // 5 newer versions
    deployment.produce_referrals(&referrals[..5]).await?; // 5 older versions, late
    // A poison record in the middle of the stream.
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &deployment.stack.brokers)
        .create()?;
    let referral_topic = deployment.topics.referrals.clone();
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&referral_topic)
                .key("poison")
                .payload(&b"\x00\x00"[..]),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    let after_poison = moved_on(&referrals[7], 7200);
    deployment
        .produce_referrals(std::slice::from_ref(&after_poison))
        .await?;

    deployment.start_role("process").await?;
    wait_for_leads(&deployment, 26, Duration::from_secs(60)).await?;
    // Whatever was going to be produced is: the processor has consumed everything.
    wait_for(
        "the processor to catch up",
        Duration::from_secs(30),
        || async {
            let metrics = reqwest::get(format!("{}/metrics", deployment.api))
                .await?
                .text()
                .await?;
            let consumed: f64 = metrics
                .lines()
                .filter(|l| l.starts_with("hunter_processor_records_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            Ok((consumed >= 52.0).then_some(()))
        },
    )
    .await?;
    let leads = deployment.leads().await?;
    assert_eq!(
        leads.len(),
        26,
        "20 created + 5 newer + 1 after the poison record"
    );
    assert!(doubled(&leads).is_empty());
    let by_type = leads
        .iter()
        .fold(HashMap::new(), |mut m: HashMap<&str, usize>, l| {
            *m.entry(l.change_type.as_str()).or_default() += 1;
            m
        });
    assert_eq!(by_type.get("created"), Some(&20), "{by_type:?}");
    for next in &newer {
        let lead = leads
            .iter()
            .find(|l| l.lead_id == next["id"].as_str().unwrap() && l.change_type != "created")
            .unwrap();
        let original = referrals.iter().find(|r| r["id"] == next["id"]).unwrap();
        assert_eq!(lead.status.as_deref(), next["status"].as_str());
        assert_eq!(lead.previous_status.as_deref(), original["status"].as_str());
        assert_eq!(lead.change_type, "status_changed");
        assert!(lead.enrichment_version >= 1 && (0..=100).contains(&lead.score));
    }

    let dlq = read_topic(&deployment.stack.brokers, &deployment.topics.dlq, 1)?;
    let (_, headers) = &dlq[0];
    assert_eq!(
        headers.get("hunter.stage").map(String::as_str),
        Some("processor")
    );
    assert_eq!(headers.get("hunter.original.topic"), Some(&referral_topic));
    assert!(
        headers.contains_key("hunter.original.partition")
            && headers.contains_key("hunter.original.offset")
    );
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_loses_no_lead_and_doubles_none() -> anyhow::Result<()> {
    let referrals = generated_referrals(12_000, 61)?;
    let mut deployment = Deployment::new(&[])?;
    let (ok, output) =
        hunter_e2e::run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    deployment.produce_referrals(&referrals).await?;

    let first = deployment.start_role("process").await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while deployment.topic_count(&deployment.topics.leads)? < 1500 {
        anyhow::ensure!(Instant::now() < deadline, "too slow\n{}", deployment.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    deployment.process(first).kill9();
    let at_kill = deployment.topic_count(&deployment.topics.leads)?;
    assert!(at_kill < 12_000, "the stream was over before the kill");

    let restarted = deployment.start_role("process").await?;
    wait_for_leads(&deployment, 12_000, Duration::from_secs(180)).await?;
    // Everything consumed is committed, so every lead it causes is on the topic: a second
    // lead of a version would be there now.
    wait_for_no_lag(
        &format!("{}/metrics", deployment.api),
        "processor",
        &deployment.topics.referrals,
        Duration::from_secs(60),
    )
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", deployment.logs()))?;
    // The restarted process itself rebuilt its dedupe state from the leads the killed one
    // had produced (the first process's log would say "rebuilt" too, with nothing to rebuild).
    let log = deployment.process(restarted).output();
    let rebuilt = rebuilt_leads(&log);
    assert!(
        rebuilt.iter().sum::<u64>() > 0,
        "the restarted processor rebuilt no dedupe state from the lead topic ({rebuilt:?} leads)\n{}",
        hunter_e2e::tail(&log, 40)
    );
    let leads = deployment.leads().await?;
    let ids: HashSet<_> = leads.iter().map(|l| l.lead_id.as_str()).collect();
    assert_eq!(ids.len(), 12_000, "every referral has its lead");
    let twice = doubled(&leads);
    assert!(
        twice.is_empty(),
        "{} versions got a second lead after the restart (killed at {at_kill})",
        twice.len()
    );
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_split_the_partitions_and_a_rebalance_loses_nothing() -> anyhow::Result<()> {
    let referrals = generated_referrals(6_000, 71)?;
    let mut deployment = Deployment::new(&[])?;
    let (ok, output) =
        hunter_e2e::run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    let one = deployment.start_role_on("process", free_port()).await?;
    let two_port = free_port();
    let two = deployment.start_role_on("process", two_port).await?;
    // Feed referrals until both processors have been given partitions (each rebuilds a
    // partition's state when its first referral arrives).
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (log_one, log_two) = (
            deployment.process(one).output(),
            deployment.process(two).output(),
        );
        if log_one.contains("dedupe state rebuilt") && log_two.contains("dedupe state rebuilt") {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline && sent < 3_000,
            "the two processors did not share the partitions\n{log_one}\n{log_two}"
        );
        deployment
            .produce_referrals(&referrals[sent..sent + 200])
            .await?;
        sent += 200;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    deployment
        .produce_referrals(&referrals[sent..3_000])
        .await?;
    wait_for_leads(&deployment, 3_000, Duration::from_secs(120)).await?;

    // One leaves (SIGTERM, graceful) while more referrals arrive: the other takes over.
    let pid = deployment.process(one).pid();
    let more = referrals[3_000..].to_vec();
    let (produced, _) = tokio::join!(deployment.produce_referrals(&more), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
    });
    produced?;
    let status = deployment.process(one).terminate(Duration::from_secs(30))?;
    assert!(status.success(), "a graceful stop exits 0: {status}");
    // The survivor alone must take over the leaver's partitions. On tansu 0.6.0 it is sometimes
    // never told to rebalance after the other member leaves (no revocation, no new assignment:
    // seen in about half the runs here; Apache Kafka does rebalance): then the orphan rejoin
    // (`rejoin_if_orphaned` in `hunter_core::kafka::consume`) must notice the leaver's
    // partitions standing still and make it rejoin. No new processor is started to help.
    wait_for_leads(&deployment, 6_000, Duration::from_secs(180)).await?;
    wait_for_no_lag(
        &format!("http://127.0.0.1:{two_port}/metrics"),
        "processor",
        &deployment.topics.referrals,
        Duration::from_secs(60),
    )
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", deployment.logs()))?;
    let survivor = deployment.process(two).output();
    let group_events: Vec<_> = survivor
        .lines()
        .filter(|line| {
            [
                "by a rebalance",
                "rejoining the group",
                "replacing this consumer",
            ]
            .iter()
            .any(|event| line.contains(event))
        })
        .collect();
    eprintln!(
        "the survivor took over (through the orphan rejoin: {}); its group events:\n{}",
        survivor.contains("rejoining the group"),
        group_events.join("\n")
    );
    let leads = deployment.leads().await?;
    let ids: HashSet<_> = leads.iter().map(|l| l.lead_id.as_str()).collect();
    assert_eq!(ids.len(), 6_000, "no referral lost across the rebalance");
    let twice = doubled(&leads);
    assert!(
        twice.is_empty(),
        "{} versions got a second lead across the rebalance, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    deployment.teardown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_enrichment_uses_a_local_dns_server_and_degrades_on_timeout() -> anyhow::Result<()> {
    let dns = hunter_e2e::MxServer::start(HashMap::from([(
        "contoso.com".to_owned(),
        vec!["contoso-com.mail.protection.outlook.com.".to_owned()],
    )]))
    .await?;
    let with_email = |id: &str, email: &str| {
        json!({
            "id": id, "updatedDateTime": "2026-11-01T10:00:00Z", "createdDateTime": "2026-10-30T10:00:00Z",
            "status": "New", "substatus": "Pending", "qualification": "SalesQualified",
            "customerProfile": { "name": "Contoso Ltd", "size": "251to1000employees",
                                 "address": { "country": "GB" }, "team": [ { "email": email } ] },
            "details": { "dealValue": 20000, "currency": "GBP" }
        })
    };
    let mut deployment = Deployment::new(&[])?;
    let (ok, output) =
        hunter_e2e::run_hunter(&["migrate"], &deployment.env, Duration::from_secs(60))?;
    assert!(ok, "{output}");
    deployment
        .env
        .insert("HUNTER_ENRICH_DNS_SERVER".into(), dns.address.to_string());
    deployment
        .env
        .insert("HUNTER_ENRICH_DNS_TIMEOUT_MS".into(), "300".into());
    deployment
        .env
        .insert("HUNTER_ENRICH_USD_RATES".into(), "GBP=1.25".into());
    deployment
        .produce_referrals(&[
            with_email("mx-1", "alex@sales.contoso.com"),
            with_email("mx-2", "sam@gmail.com"),
            with_email("mx-3", "kim@nxdomain-corp.com"),
        ])
        .await?;
    let first = deployment.start_role("process").await?;
    wait_for_leads(&deployment, 3, Duration::from_secs(60)).await?;
    let leads = deployment.leads().await?;
    let lead = |id: &str| leads.iter().find(|l| l.lead_id == id).unwrap().clone();
    let m365 = lead("mx-1");
    assert_eq!(m365.company_domain.as_deref(), Some("contoso.com"));
    assert_eq!(
        (
            m365.email_provider.as_str(),
            m365.email_provider_source.as_str()
        ),
        ("microsoft365", "mx")
    );
    assert_eq!(m365.deal_value_usd, Some(25_000.0));
    assert_eq!(m365.country.as_deref(), Some("GB"));
    let free_mail = lead("mx-2");
    assert_eq!(
        free_mail.company_domain, None,
        "free mail is never a company domain"
    );
    let nxdomain = lead("mx-3");
    assert_eq!(
        (
            nxdomain.email_provider.as_str(),
            nxdomain.email_provider_source.as_str()
        ),
        ("unknown", "dns_error")
    );

    // A DNS server that never answers: the lead still comes, as unknown, within the timeout.
    deployment.process(first).kill9();
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    deployment.env.insert(
        "HUNTER_ENRICH_DNS_SERVER".into(),
        silent.local_addr()?.to_string(),
    );
    deployment
        .produce_referrals(&[with_email("mx-4", "lee@contoso.com")])
        .await?;
    deployment.start_role("process").await?;
    wait_for_leads(&deployment, 4, Duration::from_secs(60)).await?;
    let leads = deployment.leads().await?;
    let timed_out = leads.iter().find(|l| l.lead_id == "mx-4").unwrap();
    assert_eq!(
        (
            timed_out.email_provider.as_str(),
            timed_out.email_provider_source.as_str()
        ),
        ("unknown", "dns_timeout")
    );
    assert_eq!(timed_out.company_domain.as_deref(), Some("contoso.com"));
    deployment.teardown().await;
    Ok(())
}
