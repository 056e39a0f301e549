//! The `agent-manager` binary: parses the command line, sets up logging, and runs the
//! daemon from the library.

use std::path::PathBuf;
use std::process::ExitCode;

use agent_manager::{Config, Manager};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agent-manager",
    version,
    about = "Runs AutoGen agents as Docker containers"
)]
struct Cli {
    /// TOML file overriding config/default.toml (environment variables override both).
    #[arg(long, global = true, env = "AGENT_MANAGER_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon: consume commands, manage agent containers, publish events.
    Run,
    /// Print the effective configuration (secrets redacted) and exit.
    Config,
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent-manager: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Cmd::Config => {
            let mut shown = config.clone();
            shown.rabbitmq.url = agent_manager::config::redact_url(&shown.rabbitmq.url);
            shown.redis.url = agent_manager::config::redact_url(&shown.redis.url);
            shown.agents.rabbitmq_url =
                agent_manager::config::redact_url(&shown.agents.rabbitmq_url);
            shown.agents.redis_url = agent_manager::config::redact_url(&shown.agents.redis_url);
            println!("{shown:#?}");
            ExitCode::SUCCESS
        }
        Cmd::Run => actix_rt::System::new().block_on(run(config)),
    }
}

async fn run(config: Config) -> ExitCode {
    let manager = match Manager::start(config).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("agent-manager: {e}");
            return ExitCode::from(1);
        }
    };
    wait_for_signal().await;
    tracing::info!("signal received; shutting down (agents keep running)");
    manager.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
