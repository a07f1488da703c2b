//! The one-shot subcommands, and the dispatcher for every subcommand.

use anyhow::Context as _;
use hunter_core::config::Settings;
use hunter_core::kafka;
use hunter_partner_center_simulator::{self as simulator, SimulatorOptions};

use crate::cli::{
    AuthCommand, Cli, Command, DlqCommand, DlqSelect, ReplayCommand, SimulateArgs, TopicsCommand,
};
use crate::roles;

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        // The simulator is a stand-in for Microsoft's servers: it needs none of Hunter's settings.
        Command::Simulate(args) => simulate(args).await,
        Command::Auth { command } => {
            let settings = Settings::load(cli.config.as_deref())?;
            match command {
                AuthCommand::Login { tenant } => login(&settings, tenant.as_deref()).await,
                AuthCommand::Status { tenant } => status(&settings, tenant.as_deref()),
            }
        }
        Command::Doctor => crate::doctor::run(cli.config.as_deref()).await,
        Command::Migrate(args) => {
            let settings = Settings::load(cli.config.as_deref())?;
            if args.print_grants {
                print!("{}", grants(&settings));
                return Ok(());
            }
            migrate(&settings).await
        }
        Command::Run { role } => roles::run(Settings::load(cli.config.as_deref())?, role).await,
        Command::Replay {
            command: ReplayCommand::Clickhouse { tables, into },
        } => {
            let settings = Settings::load(cli.config.as_deref())?;
            crate::replay::clickhouse(settings, &tables, into.as_deref()).await
        }
        Command::Backfill(args) => {
            crate::backfill::run(
                Settings::load(cli.config.as_deref())?,
                args.tenant.as_deref(),
                args.since.as_deref(),
                args.no_wait,
            )
            .await
        }
        Command::Topics {
            command: TopicsCommand::Describe { json },
        } => describe_topics(&Settings::load(cli.config.as_deref())?, json).await,
        Command::Dlq { command } => {
            dlq_command(&Settings::load(cli.config.as_deref())?, command).await
        }
        Command::Webhooks { command } => {
            crate::pc_webhooks::run(&Settings::load(cli.config.as_deref())?, command).await
        }
    }
}

// --- hunter dlq list | replay ----------------------------------------------------------------

/// The filter of `--stage`, `--since`, `--limit` (and `--id`), with `--since` checked.
pub fn dlq_filter(
    select: &DlqSelect,
    ids: &[crate::dlq::DeadLetterId],
    now_unix: i64,
) -> anyhow::Result<crate::dlq::Filter> {
    let since = select
        .since
        .as_deref()
        .map(|text| crate::dlq::parse_since(text, now_unix))
        .transpose()
        .map_err(|error| anyhow::anyhow!("invalid --since: {error}"))?;
    anyhow::ensure!(select.limit >= 1, "invalid --limit: must be at least 1");
    Ok(crate::dlq::Filter {
        stage: select.stage.clone(),
        since,
        ids: ids.to_vec(),
        limit: select.limit,
    })
}

async fn dlq_command(settings: &Settings, command: DlqCommand) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (select, replay) = match command {
        DlqCommand::List(select) => (select, None),
        DlqCommand::Replay(args) => (args.select.clone(), Some(args)),
    };
    let ids = replay
        .as_ref()
        .map(|args| args.ids.clone())
        .unwrap_or_default();
    let filter = dlq_filter(&select, &ids, now)?;
    let reader = hunter_clickhouse::reader::Reader::connect(
        &settings.clickhouse,
        hunter_clickhouse::reader::QueryLimits::new(
            &settings.clickhouse,
            std::time::Duration::from_secs(120),
        ),
    )
    .await?;
    let Some(args) = replay else {
        let listed = crate::dlq::list(reader.client(), &filter)
            .await
            .context("reading the dlq table in clickhouse")?;
        if select.json {
            println!("{}", serde_json::to_string_pretty(&listed)?);
        } else {
            print_dead_letters(&listed);
        }
        return Ok(());
    };
    let topics = settings.kafka.topics();
    let producer =
        kafka::producer(&settings.kafka, "hunter-dlq-replay").context("kafka producer")?;
    let request = crate::dlq::ReplayRequest {
        filter,
        max_replays: args.max_replays,
        again: args.again,
        dry_run: args.dry_run,
    };
    let outcomes = crate::dlq::replay(
        &settings.kafka,
        &topics.dlq,
        &producer,
        reader.client(),
        &request,
    )
    .await?;
    if select.json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    } else {
        for outcome in &outcomes {
            match (&outcome.topic, outcome.partition, &outcome.reason) {
                (Some(topic), Some(partition), _) => println!(
                    "{} {} to {topic} partition {partition}{} (replay count {})",
                    outcome.id,
                    outcome.outcome,
                    outcome
                        .offset
                        .map(|o| format!(" offset {o}"))
                        .unwrap_or_default(),
                    outcome.replay_count.unwrap_or_default()
                ),
                (_, _, reason) => println!(
                    "{} {}: {}",
                    outcome.id,
                    outcome.outcome,
                    reason.as_deref().unwrap_or_default()
                ),
            }
        }
        let count = |what: &str| outcomes.iter().filter(|o| o.outcome == what).count();
        println!(
            "{} dead letter(s): {} {}, {} skipped, {} missing{}",
            outcomes.len(),
            count(if args.dry_run {
                "would replay"
            } else {
                "replayed"
            }),
            if args.dry_run {
                "would be replayed"
            } else {
                "replayed"
            },
            count("skipped"),
            count("missing"),
            if args.dry_run {
                " (dry run: nothing sent)"
            } else {
                ""
            }
        );
    }
    // Flush before the producer is dropped (its deliveries were awaited: this is belt and braces).
    use rdkafka::producer::Producer as _;
    let _ = producer.flush(std::time::Duration::from_secs(10));
    Ok(())
}

fn print_dead_letters(listed: &[crate::dlq::Listed]) {
    if listed.is_empty() {
        println!("no dead letters match");
        return;
    }
    let format = time::format_description::well_known::Rfc3339;
    println!(
        "{:<10} {:<20} {:<9} {:<9} {:<40} {:>6} {:<24} ERROR",
        "ID", "RECEIVED", "STAGE", "CLASS", "FROM", "COUNT", "OUTCOME"
    );
    for letter in listed {
        let received = time::OffsetDateTime::from_unix_timestamp(letter.received_at)
            .ok()
            .and_then(|t| t.format(&format).ok())
            .unwrap_or_default();
        let from = match (letter.original_partition, letter.original_offset) {
            (Some(p), Some(o)) => format!("{}/{p}@{o}", letter.original_topic),
            _ => letter.original_topic.clone(),
        };
        let mut outcome = letter.outcome().to_owned();
        if !letter.failed_again_as.is_empty() {
            let ids: Vec<String> = letter
                .failed_again_as
                .iter()
                .map(ToString::to_string)
                .collect();
            outcome = format!("{outcome} as {}", ids.join(","));
        }
        let error: String = letter.error.chars().take(120).collect();
        println!(
            "{:<10} {:<20} {:<9} {:<9} {:<40} {:>6} {:<24} {error}",
            letter.id.to_string(),
            received,
            letter.stage,
            letter.error_class,
            from,
            letter.replay_count,
            outcome
        );
    }
}

/// `hunter topics describe`: see [`kafka::describe`].
async fn describe_topics(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let topics = settings.kafka.topics();
    let sink_reads_referrals = !roles::processor_writes_referrals(settings, false).await;
    let groups = roles::consumer_groups(settings, sink_reads_referrals);
    let description = kafka::describe::describe(&settings.kafka, &topics.specs(), &groups)
        .await
        .with_context(|| {
            format!(
                "cannot describe the topics on {} (check HUNTER_KAFKA_BROKERS and the Kafka \
                 security settings; `hunter doctor` says which)",
                settings.kafka.brokers
            )
        })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&description)?);
    } else {
        print!("{}", kafka::describe::render(&description));
    }
    Ok(())
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let faults = args
        .faults
        .parse()
        .map_err(|error| anyhow::anyhow!("invalid --faults: {error}"))?;
    anyhow::ensure!(
        args.page_size >= 1,
        "invalid --page-size: must be at least 1"
    );
    if let Some(count) = args.generate {
        simulator::write_generated_referrals(&args.referrals, count, args.seed)
            .with_context(|| format!("cannot write {}", args.referrals.display()))?;
        eprintln!(
            "wrote {count} generated referrals to {}",
            args.referrals.display()
        );
    }
    anyhow::ensure!(
        args.referrals.exists(),
        "invalid --referrals: {} does not exist (use --generate N to create it)",
        args.referrals.display()
    );
    let options = SimulatorOptions {
        referrals_file: args.referrals,
        listen: args.listen,
        faults,
        page_size: args.page_size,
        access_token_lifetime: std::time::Duration::from_secs(args.access_token_lifetime),
        fault_seed: Some(args.seed),
        mutate_rate: args.mutate,
        mutate_burst: args.mutate_burst,
        mutations_in_memory: args.mutate_in_memory,
    };
    let (address, server) = simulator::bind(options).await.context("simulator")?;
    eprintln!(
        "partner center simulator on http://{address} (api: http://{address}/v1.0/engagements, authority: http://{address})"
    );
    // The demo's DNS (docs/demo.md): stays pending forever when not asked for.
    let dns = match args.dns_listen {
        Some(listen) => {
            let (dns_address, dns) = simulator::dns::bind(listen, args.seed)
                .await
                .with_context(|| format!("invalid --dns-listen: cannot bind udp {listen}"))?;
            eprintln!(
                "simulator dns on udp {dns_address} (mx for *.example; HUNTER_ENRICH_DNS_SERVER={dns_address})"
            );
            futures::future::Either::Left(dns)
        }
        None => futures::future::Either::Right(std::future::pending()),
    };
    tokio::select! {
        result = server => result.context("simulator")?,
        result = dns => result.context("simulator dns")?,
        _ = tokio::signal::ctrl_c() => eprintln!("simulator stopped"),
    }
    Ok(())
}

async fn login(settings: &Settings, tenant: Option<&str>) -> anyhow::Result<()> {
    let pc = &settings.partner_center;
    let tenant = pc.tenant(tenant)?;
    let auth = roles::source::auth_settings(pc, tenant);
    let cache = hunter_partner_center::auth::login_with_device_code(&auth, |prompt| {
        // The operator may be on another machine: the URL and code are all they need.
        println!(
            "To sign in to tenant {}, open {} and enter the code {}",
            tenant.name, prompt.verification_uri, prompt.user_code
        );
        println!("(the code expires in {} s)", prompt.expires_in.as_secs());
    })
    .await?;
    println!(
        "signed in{}; token cache written to {}",
        cache
            .account
            .as_deref()
            .map(|a| format!(" as {a}"))
            .unwrap_or_default(),
        auth.token_cache.display()
    );
    Ok(())
}

fn status(settings: &Settings, tenant: Option<&str>) -> anyhow::Result<()> {
    let pc = &settings.partner_center;
    let tenants = match tenant {
        Some(name) => vec![pc.tenant(Some(name))?],
        None => pc.tenants.iter().collect(),
    };
    anyhow::ensure!(
        !tenants.is_empty(),
        "no partner center tenant is configured (HUNTER_PARTNER_CENTER_TENANT_ID)"
    );
    let format = time::format_description::well_known::Rfc3339;
    let mut needs_login = Vec::new();
    for tenant in tenants {
        let auth = roles::source::auth_settings(pc, tenant);
        println!("tenant {} ({}):", tenant.name, tenant.tenant_id);
        match hunter_partner_center::auth::auth_status(&auth) {
            Ok(status) => {
                println!(
                    "  account:              {}",
                    status.account.as_deref().unwrap_or("(unknown)")
                );
                println!(
                    "  access token expires: {}",
                    status
                        .access_token_expires_at
                        .format(&format)
                        .unwrap_or_default()
                );
                println!(
                    "  refresh token age:    {} days",
                    status.refresh_token_age.as_secs() / 86_400
                );
                println!("  verdict:              {}", status.verdict);
                if status.needs_login {
                    needs_login.push(tenant.name.clone());
                }
            }
            Err(error) => {
                println!("  verdict:              {error}");
                needs_login.push(tenant.name.clone());
            }
        }
    }
    anyhow::ensure!(
        needs_login.is_empty(),
        "sign-in needed for {}: run `hunter auth login --tenant NAME`",
        needs_login.join(", ")
    );
    Ok(())
}

/// The GRANTs for the configured database and users (`hunter migrate --print-grants`).
fn grants(settings: &Settings) -> String {
    let ch = &settings.clickhouse;
    let writer = hunter_clickhouse::connection::Login::writer(ch);
    let reader = hunter_clickhouse::connection::Login::reader(ch);
    hunter_clickhouse::grants::sql(&ch.database, writer.user_name(), reader.user_name())
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let writer = roles::connect_clickhouse(&settings.clickhouse).await?;
    let report = match writer.migrate(&settings.clickhouse.database).await {
        Ok(report) => report,
        // Hunter does not own the server: say what a DBA must grant, and stop.
        Err(error @ hunter_clickhouse::Error::Rights { .. }) => {
            eprintln!("{}", grants(settings));
            anyhow::bail!(
                "{error}: hunter migrate cannot create what it needs; a DBA must grant the rights printed above (`hunter migrate --print-grants` prints them again), or set HUNTER_CLICKHOUSE_USER to a user that has them"
            );
        }
        Err(error) => return Err(error.into()),
    };
    println!(
        "clickhouse database {}: {} applied, {} already applied{}{}",
        settings.clickhouse.database,
        report.applied.len(),
        report.already_applied.len(),
        if report.changed.is_empty() {
            String::new()
        } else {
            format!(", edited after release: {:?}", report.changed)
        },
        if report.waiting.is_empty() {
            String::new()
        } else {
            format!(
                ", waiting for a newer clickhouse than {}: {:?}",
                writer.version(),
                report.waiting
            )
        }
    );
    let topics = settings.kafka.topics();
    roles::check_kafka(&settings.kafka).await?;
    kafka::ensure_topics(&settings.kafka, &topics.specs())
        .await
        .with_context(|| {
            format!(
                "cannot create topics on {} (HUNTER_KAFKA_BROKERS)",
                settings.kafka.brokers
            )
        })?;
    println!(
        "kafka topics present: {}",
        topics
            .specs()
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(registry) = roles::registry(settings)? {
        register_contracts(&registry, &topics).await?;
    }
    Ok(())
}

// --- Schema Registry subjects ------------------------------------------------------------------

/// The compatibility level of every Hunter subject: a public contract changes only so that
/// every consumer, whatever version it was built with, reads every record (docs/contracts.md).
const SUBJECT_COMPATIBILITY: &str = "FULL_TRANSITIVE";

/// Sets each topic's `<topic>-value` subject to [`SUBJECT_COMPATIBILITY`] and registers the
/// current contract under it. Fails, naming the subject and the contract, when the registry
/// refuses the contract as incompatible with what it holds.
async fn register_contracts(
    registry: &hunter_core::codec::Registry,
    topics: &kafka::Topics,
) -> anyhow::Result<()> {
    use hunter_core::records::{
        Command, Lead, Record, Referral, ReferralAction, ReferralActionResult, SourceState, SyncRun,
    };
    let contracts: [(&str, &str, &str); 7] = [
        (&topics.referrals, Referral::CONTRACT, Referral::SCHEMA_TEXT),
        (&topics.leads, Lead::CONTRACT, Lead::SCHEMA_TEXT),
        (&topics.sync_runs, SyncRun::CONTRACT, SyncRun::SCHEMA_TEXT),
        (
            &topics.source_state,
            SourceState::CONTRACT,
            SourceState::SCHEMA_TEXT,
        ),
        (&topics.commands, Command::CONTRACT, Command::SCHEMA_TEXT),
        (
            &topics.referral_actions,
            ReferralAction::CONTRACT,
            ReferralAction::SCHEMA_TEXT,
        ),
        (
            &topics.referral_action_results,
            ReferralActionResult::CONTRACT,
            ReferralActionResult::SCHEMA_TEXT,
        ),
    ];
    for (topic, contract, schema) in contracts {
        let subject = format!("{topic}-value");
        let fail = |error: hunter_core::codec::CodecError| {
            anyhow::anyhow!(
                "schema registry {}: subject {subject} (schemas/{contract}.avsc): {error}",
                registry.url()
            )
        };
        registry
            .set_compatibility(&subject, SUBJECT_COMPATIBILITY)
            .await
            .map_err(fail)?;
        let id = registry.register(&subject, schema).await.map_err(fail)?;
        println!(
            "schema registry subject {subject}: {SUBJECT_COMPATIBILITY}, schemas/{contract}.avsc is id {id}"
        );
    }
    Ok(())
}
