//! The one-shot subcommands, and the dispatcher for every subcommand.

use anyhow::Context as _;
use hunter_core::config::Settings;
use hunter_core::kafka;
use hunter_partner_center::simulator::{self, SimulatorOptions};

use crate::cli::{AuthCommand, Cli, Command, SimulateArgs};
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
        Command::Migrate => migrate(&Settings::load(cli.config.as_deref())?).await,
        Command::Run { role } => roles::run(Settings::load(cli.config.as_deref())?, role).await,
    }
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
    tokio::select! {
        result = server => result.context("simulator")?,
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

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let writer = roles::connect_clickhouse(&settings.clickhouse).await?;
    let report = writer.migrate(&settings.clickhouse.database).await?;
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
    Ok(())
}
