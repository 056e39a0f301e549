//! The `agent-manager` binary: parses the command line, sets up logging, and runs the
//! daemon from the library.

use std::path::PathBuf;
use std::process::ExitCode;

use agent_manager::cli::{self, CliError, Format};
use agent_manager::{Config, Manager};
use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Look at the agents: their records and events (Redis), their logs (Docker).
    Agents {
        #[command(subcommand)]
        command: AgentsCmd,
    },
    /// Preflight: Docker (and its socket's permission), the agent image and network,
    /// RabbitMQ, Redis. Exit 0 when all pass, 1 when one fails (each failure says what
    /// to do), 2 for a configuration error.
    Check(CheckArgs),
}

#[derive(Subcommand)]
enum AgentsCmd {
    /// List the agents (all, or one customer's), optionally of one status.
    List {
        /// Only this customer's agents.
        #[arg(long)]
        customer: Option<String>,
        /// Only agents in this status (running, stopped, failed, ...).
        #[arg(long)]
        status: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one agent's whole record. Exit 1 when there is no such agent.
    Show {
        agent_id: String,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Print the agent's recent events (its Redis stream); with --follow, new ones as they come.
    Events {
        agent_id: String,
        /// Keep printing new events (until the agent is deleted or Ctrl-C).
        #[arg(short, long)]
        follow: bool,
        /// How many of the latest events to print first.
        #[arg(short = 'n', long, default_value_t = 20)]
        count: usize,
        /// json: one event per line, as published.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Freeze every process of the agent (agent.pause). Exit 1 on agent.error.
    Pause(ActArgs),
    /// Thaw a paused agent (agent.resume). Exit 1 on agent.error.
    Resume(ActArgs),
    /// Stop the agent (agent.stop): with --force at once, no grace period; --reason and
    /// who asked (AGENT_MANAGER_OPERATOR, else the OS user) are recorded and announced.
    Stop {
        #[command(flatten)]
        act: ActArgs,
        /// Kill at once (SIGKILL), no grace period.
        #[arg(long)]
        force: bool,
        /// Why (at most 500 characters; kept in the record until the agent starts again).
        #[arg(long)]
        reason: Option<String>,
        /// Grace period before SIGKILL, in seconds (default: the manager's STOP_TIMEOUT_S).
        #[arg(long)]
        timeout_s: Option<u32>,
    },
    /// Print the agent container's output (Docker logs of agent-<id>).
    Logs {
        agent_id: String,
        /// Keep printing new output (until the container stops or Ctrl-C).
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(short = 'n', long)]
        tail: Option<usize>,
        /// Prefix each line with Docker's timestamp.
        #[arg(short, long)]
        timestamps: bool,
    },
}

/// What every acting command takes: the agent, and whether to wait for the answer.
#[derive(Args)]
struct ActArgs {
    agent_id: String,
    /// Wait for the manager's answer (exit 1 with its code and message on agent.error).
    #[arg(short, long)]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    wait_s: u64,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

impl ActArgs {
    fn wait(&self) -> Option<std::time::Duration> {
        self.wait
            .then(|| std::time::Duration::from_secs(self.wait_s))
    }
}

#[derive(Args)]
struct CheckArgs {
    /// Print only failures (nothing when all pass), e.g. for a health check.
    #[arg(short, long)]
    quiet: bool,
    /// Check only Docker, RabbitMQ and Redis (not the agent image and network): what the
    /// container's HEALTHCHECK runs.
    #[arg(long)]
    services_only: bool,
    /// Seconds to wait for each service.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    timeout_s: u64,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

/// `-o`: for people or for scripts.
#[derive(Clone, Copy, Default, ValueEnum)]
enum Output {
    #[default]
    Table,
    Json,
}

impl From<Output> for Format {
    fn from(o: Output) -> Format {
        match o {
            Output::Table => Format::Table,
            Output::Json => Format::Json,
        }
    }
}

/// The daemon logs to stdout (`info` by default); the operator's commands log to stderr
/// and only warnings by default, so their output stays clean. `RUST_LOG` overrides both.
fn init_logging(json: bool, daemon: bool) {
    let default = if daemon {
        "info,lapin=warn"
    } else {
        "warn,lapin=off"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (json, daemon) {
        (true, true) => builder.json().init(),
        (false, true) => builder.init(),
        (true, false) => builder.json().with_writer(std::io::stderr).init(),
        (false, false) => builder.with_writer(std::io::stderr).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json, matches!(cli.command, Cmd::Run));
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent-manager: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Cmd::Config => {
            // The sections holding credentials show their URLs through
            // `agent_manager::redact::url` in their Debug output.
            println!("{config:#?}");
            ExitCode::SUCCESS
        }
        Cmd::Run => actix_rt::System::new().block_on(run(config)),
        Cmd::Agents { command } => operate(agents(&config, command)),
        Cmd::Check(args) => operate(check(&config, args)),
    }
}

/// Runs an operator's command on a small runtime of its own and turns its outcome into
/// the exit code (README "Operate").
fn operate(command: impl std::future::Future<Output = Result<(), CliError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agent-manager: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_FAILED);
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        // The failed checks are in the output already.
        Err(e @ CliError::ChecksFailed { .. }) => ExitCode::from(e.exit_code()),
        Err(e) => {
            eprintln!("agent-manager: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Columns for tables: `COLUMNS` when set, else the terminal's width (`stty size`) when
/// stdout is one, else 120.
fn terminal_width() -> usize {
    use std::io::IsTerminal;
    let usable = |w: usize| (w >= 40).then_some(w);
    let from_env = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .and_then(usable);
    let from_tty = || {
        if !std::io::stdout().is_terminal() {
            return None;
        }
        let tty = std::fs::File::open("/dev/tty").ok()?;
        let out = std::process::Command::new("stty")
            .arg("size")
            .stdin(tty)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
            .and_then(usable)
    };
    from_env.or_else(from_tty).unwrap_or(120)
}

async fn agents(config: &Config, command: AgentsCmd) -> Result<(), CliError> {
    let out = &mut std::io::stdout();
    match command {
        AgentsCmd::List {
            customer,
            status,
            output,
        } => {
            cli::agents::list(
                config,
                customer.as_deref(),
                status.as_deref(),
                output.into(),
                terminal_width(),
                out,
            )
            .await
        }
        AgentsCmd::Show { agent_id, output } => {
            cli::agents::show(config, &agent_id, output.into(), out).await
        }
        AgentsCmd::Events {
            agent_id,
            follow,
            count,
            output,
        } => cli::agents::events(config, &agent_id, count, follow, output.into(), out).await,
        AgentsCmd::Pause(act) => {
            let order = cli::act::Order::pause(&act.agent_id);
            cli::act::send(config, &order, act.wait(), act.output.into(), out).await
        }
        AgentsCmd::Resume(act) => {
            let order = cli::act::Order::resume(&act.agent_id);
            cli::act::send(config, &order, act.wait(), act.output.into(), out).await
        }
        AgentsCmd::Stop {
            act,
            force,
            reason,
            timeout_s,
        } => {
            let operator = cli::act::operator_name(config.operator(), |k| std::env::var(k).ok());
            let order = cli::act::Order::stop(
                &act.agent_id,
                force,
                timeout_s,
                reason.as_deref(),
                operator.as_deref(),
            );
            cli::act::send(config, &order, act.wait(), act.output.into(), out).await
        }
        AgentsCmd::Logs {
            agent_id,
            follow,
            tail,
            timestamps,
        } => {
            let mut err = std::io::stderr();
            cli::agents::logs(config, &agent_id, tail, follow, timestamps, out, &mut err).await
        }
    }
}

async fn check(config: &Config, args: CheckArgs) -> Result<(), CliError> {
    use std::io::Write;
    let out = &mut std::io::stdout();
    let opts = cli::check::CheckOptions {
        services_only: args.services_only,
        timeout: std::time::Duration::from_secs(args.timeout_s),
    };
    let results = cli::check::run(config, &opts).await;
    match Format::from(args.output) {
        Format::Table => out.write_all(cli::check::render(&results, args.quiet).as_bytes())?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &results).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    match results
        .iter()
        .filter(|r| r.status == cli::check::Status::Fail)
        .count()
    {
        0 => Ok(()),
        failed => Err(CliError::ChecksFailed { failed }),
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
