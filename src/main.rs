//! The `agent-manager` binary: parses the command line, sets up logging, and runs the
//! daemon from the library.

use std::path::PathBuf;
use std::process::ExitCode;

use agent_manager::cli::order::Order;
use agent_manager::cli::{self, CliError, Format};
use agent_manager::{Config, OnDeposed, Standby};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "agent-manager",
    version = agent_manager::build_info::LONG_VERSION,
    about = "Runs AutoGen agents as Docker containers",
    after_help = "Examples:\n  agent-manager run\n  agent-manager check\n  agent-manager agents list -o wide\n  agent-manager agents restart trading-1\n  agent-manager agents task acme-analyst \"Assess ACME\"\n  agent-manager halt engage --customer acme --reason \"leaked key\" --wait\n  agent-manager completions bash > /etc/bash_completion.d/agent-manager"
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
    /// Print the effective configuration (passwords redacted) and exit; `-o toml` as a
    /// file that --config loads back.
    #[command(
        after_help = "Examples:\n  agent-manager config\n  agent-manager config -o toml --show-secrets > /etc/agent-manager.toml\n  agent-manager --config /etc/agent-manager.toml check"
    )]
    Config {
        /// text (for people) or toml (a file --config loads).
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: ConfigOutput,
        /// -o toml: URLs with their passwords, so the file works as it is.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Look at the agents (records and events in Redis, logs from Docker) and act on
    /// them (commands over RabbitMQ, as the Core Engine sends them).
    Agents {
        #[command(subcommand)]
        command: AgentsCmd,
    },
    /// Halts (contract section 10): take agents out of the platform at once (their
    /// logins cut, then frozen) until a person releases them; list and show halts.
    Halt {
        #[command(subcommand)]
        command: HaltCmd,
    },
    /// Preflight: Docker (and its socket's permission), the agent image and network,
    /// RabbitMQ, Redis. Exit 0 when all pass, 1 when one fails (each failure says what
    /// to do), 2 for a configuration error.
    Check(CheckArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  agent-manager completions bash > /etc/bash_completion.d/agent-manager\n  agent-manager completions zsh > \"${fpath[1]}/_agent-manager\"\n  agent-manager completions fish > ~/.config/fish/completions/agent-manager.fish"
    )]
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum AgentsCmd {
    /// List the agents (all, or one customer's), optionally of one status.
    #[command(
        after_help = "Examples:\n  agent-manager agents list --status failed\n  agent-manager agents list -o wide --watch\n  agent-manager agents list --customer acme -o json | jq -r '.[].agent_id'"
    )]
    List {
        /// Only this customer's agents.
        #[arg(long)]
        customer: Option<String>,
        /// Only agents in this status (running, stopped, failed, ...).
        #[arg(long)]
        status: Option<String>,
        /// table, wide (adds image and container), json or yaml.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: ListOutput,
        /// After the table, print a row whenever an agent's status, health, restarts,
        /// name or image changes, and when it is deleted (until Ctrl-C).
        #[arg(short, long)]
        watch: bool,
        /// Print values whole, however wide the table gets.
        #[arg(long)]
        no_trunc: bool,
        /// Leave out the header line.
        #[arg(long)]
        no_headers: bool,
    },
    /// Describe one agent for people: its record, its container's state and its last
    /// events. Exit 1 when there is no such agent.
    Describe { agent_id: String },
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
    /// Create an agent from a spec file (agent.create): JSON or YAML with the contract's
    /// fields; customer_id is required, agent_id is made when absent. --wait waits for
    /// agent.started (agent.created with "auto_start": false).
    #[command(
        after_help = "Examples:\n  agent-manager agents create -f trading-1.yaml\n  agent-manager agents create -f - --no-wait < spec.json"
    )]
    Create {
        /// The spec: a .json or .yaml file, or - for standard input.
        #[arg(short = 'f', long)]
        file: PathBuf,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Change an agent (agent.update) with the fields of a patch file: name, config,
    /// autogen_config, resources, image.
    #[command(
        after_help = "Example:\n  echo 'resources: {memory_mb: 512}' | agent-manager agents update trading-1 -f -"
    )]
    Update {
        agent_id: String,
        /// The patch: a .json or .yaml file, or - for standard input.
        #[arg(short = 'f', long)]
        file: PathBuf,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Start a stopped agent (agent.start).
    Start(ActArgs),
    /// Stop the agent (agent.stop): with --force at once, no grace period; --reason and
    /// who asked (AGENT_MANAGER_OPERATOR, else the OS user) are recorded and announced.
    #[command(
        after_help = "Example:\n  agent-manager agents stop trading-1 --force --reason \"runaway order loop\""
    )]
    Stop {
        #[command(flatten)]
        act: ActArgs,
        /// Kill at once (SIGKILL), no grace period.
        #[arg(long)]
        force: bool,
        /// Why (at most 500 characters; kept in the record until the agent starts again).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        grace: GraceArgs,
    },
    /// Restart the agent (agent.restart): a crash-looped (failed) agent runs again.
    Restart {
        #[command(flatten)]
        act: ActArgs,
        #[command(flatten)]
        grace: GraceArgs,
    },
    /// Delete the agent (agent.delete): its container, its state and its users.
    Delete {
        #[command(flatten)]
        act: ActArgs,
        #[command(flatten)]
        grace: GraceArgs,
    },
    /// Freeze every process of the agent (agent.pause).
    Pause(ActArgs),
    /// Thaw a paused agent (agent.resume).
    Resume(ActArgs),
    /// Give the agent a task and wait for its result (contract section 8).
    ///
    /// Publishes {"task_id", "task"} with routing key agent:<ID>:task and prints the team's
    /// messages, then status, stop reason and token usage (-o json: the result as the
    /// agent published it). Exit 0 when the result is completed; 1 when it failed, when
    /// none came within --timeout, or when there is no such agent (at once). An agent
    /// that is stopped, paused or failed is refused at once and nothing is sent: its
    /// durable inbox would keep the task, but no result would come while you wait (start,
    /// resume or restart it first); one that is starting or restarting is waited for.
    #[command(
        after_help = "Examples:\n  agent-manager agents task acme-analyst \"Assess ACME for a 2% position\"\n  agent-manager agents task acme-analyst -f task.json -o json\n  echo '{\"task_id\": \"t-42\", \"task\": \"Assess ACME\"}' | agent-manager agents task acme-analyst -f -"
    )]
    Task {
        agent_id: String,
        /// The task's text; sent as {"task_id": <a new UUID>, "task": TEXT}.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        text: Option<String>,
        /// The task's body instead: a JSON (or YAML) object with "task" (text) and any
        /// other fields, "task_id" made when absent; - for standard input.
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        /// How long to wait for the result: seconds, or with a unit (90s, 5m, 1h).
        #[arg(long, default_value = "60s", value_parser = cli::parse_wait)]
        timeout: std::time::Duration,
        /// table (for people) or json (the result as published).
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
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

#[derive(Subcommand)]
enum HaltCmd {
    /// Take agents out at once (halt.engage): each agent in scope is cut (its own
    /// RabbitMQ and Redis logins deleted, its connections closed), then frozen, until
    /// `halt release`. Prints the halt id (made when --halt-id is not given);
    /// --wait waits for halt.engaged: the agents, cut_ms, frozen_ms and any that failed
    /// (exit 0), or agent.error (exit 1). requested_by is AGENT_MANAGER_OPERATOR, else
    /// the OS user.
    #[command(
        after_help = "Examples:\n  agent-manager halt engage --agent trading-1 --reason \"runaway order loop\" --wait\n  agent-manager halt engage --customer acme --type trading --reason \"leaked key\" --wait=2m\n  agent-manager halt engage --platform --customer-id ops --reason \"exchange outage\" --halt-id outage-1"
    )]
    Engage(EngageArgs),
    /// Give a halt's agents back (halt.release): each agent no other halt holds gets
    /// its logins back and returns to its desired state. Sent as the customer that
    /// engaged it (from halt:<HALT_ID>); exit 1 at once when no such halt is engaged.
    #[command(
        after_help = "Example:\n  agent-manager halt release halt-20250304T050607-0a1f --reason \"strategy fixed\" --wait"
    )]
    Release {
        halt_id: String,
        /// Why (1-500 characters; kept in halts:events and agent.released).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        wait: HaltWait,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Every engaged halt: id, customer, scope, agents, age, who, why.
    List {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// One halt: its record, each of its agents (status, halted at, when it was cut and
    /// frozen) and its entries of halts:events. Exit 1 when it is not engaged.
    Show {
        halt_id: String,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
}

/// `halt engage`'s arguments: one scope, its narrowing, why, and how to send it.
#[derive(Args)]
#[command(group(
    clap::ArgGroup::new("scope")
        .required(true)
        .args(["agent", "team", "customer", "platform"])
))]
struct EngageArgs {
    /// These agents (repeat, or comma-separated); all of one customer.
    #[arg(long, value_name = "ID", num_args = 1.., value_delimiter = ',')]
    agent: Vec<String>,
    /// The members of this team.
    #[arg(long, value_name = "TEAM_ID")]
    team: Option<String>,
    /// Every agent of this customer.
    #[arg(long, value_name = "CUSTOMER_ID")]
    customer: Option<String>,
    /// Every agent of this installation (needs --customer-id).
    #[arg(long)]
    platform: bool,
    /// Only agents of these types (trading, analysis, risk_management,
    /// portfolio_optimization, custom; repeat, or comma-separated).
    #[arg(long = "type", value_name = "TYPE", num_args = 1.., value_delimiter = ',')]
    types: Vec<String>,
    /// Why (1-500 characters; on each agent's record and in halts:events).
    #[arg(long)]
    reason: String,
    /// The halt's id (letters, digits, '_', '.', '-'); default: halt-<UTC time>-<4 hex>.
    #[arg(long)]
    halt_id: Option<String>,
    /// The customer the command is sent as: required with --platform; else the owner
    /// of the agents or team, read from Redis.
    #[arg(long)]
    customer_id: Option<String>,
    #[command(flatten)]
    wait: HaltWait,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

/// Whether and how long a halt command waits for the manager's answer.
#[derive(Args)]
struct HaltWait {
    /// Wait for the answer (default 60s; --wait=DURATION: 90, 90s, 5m, 1h); without it,
    /// done once the broker has confirmed the command.
    #[arg(
        long,
        value_name = "DURATION",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "60s",
        value_parser = cli::parse_wait
    )]
    wait: Option<std::time::Duration>,
}

/// What every acting command on one agent takes.
#[derive(Args)]
struct ActArgs {
    agent_id: String,
    #[command(flatten)]
    wait: WaitArgs,
}

/// Whether and how long an acting command waits for the manager's answer.
#[derive(Args)]
struct WaitArgs {
    /// Wait for the answer (the default when stdout is a terminal); exit 1 with its
    /// code and message on agent.error.
    #[arg(short, long, overrides_with = "no_wait")]
    wait: bool,
    /// Do not wait: done once the broker has confirmed the command (the default when
    /// stdout is not a terminal).
    #[arg(long, overrides_with = "wait")]
    no_wait: bool,
    /// How long to wait for the answer: seconds, or with a unit (90s, 5m, 1h).
    #[arg(long, alias = "wait-s", default_value = "60s", value_parser = cli::parse_wait)]
    timeout: std::time::Duration,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

impl WaitArgs {
    /// How long to wait, when waiting.
    fn wait(&self) -> Option<std::time::Duration> {
        use std::io::IsTerminal;
        let waiting = !self.no_wait && (self.wait || std::io::stdout().is_terminal());
        waiting.then_some(self.timeout)
    }
}

/// The grace period of a command that stops the container.
#[derive(Args)]
struct GraceArgs {
    /// Seconds between SIGTERM and SIGKILL (default: the manager's STOP_TIMEOUT_S).
    #[arg(long, alias = "timeout-s")]
    grace_period: Option<u32>,
}

#[derive(Args)]
struct CheckArgs {
    /// Print only failures (nothing when all pass), e.g. for a health check.
    #[arg(short, long)]
    quiet: bool,
    /// Check only Docker, RabbitMQ and Redis (not the agent image and network).
    #[arg(long)]
    services_only: bool,
    /// Ask only the running manager's own /readyz (at ADMIN_LISTEN; 0.0.0.0 is asked on
    /// 127.0.0.1): what the container's HEALTHCHECK runs. Fails when the manager is
    /// hung or not consuming, not only when a service is away.
    #[arg(long, conflicts_with = "services_only")]
    ready: bool,
    /// Seconds to wait for each service.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    timeout_s: u64,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

/// `-o` of `config`.
#[derive(Clone, Copy, Default, ValueEnum)]
enum ConfigOutput {
    #[default]
    Text,
    Toml,
}

/// `-o` of `agents list`.
#[derive(Clone, Copy, Default, ValueEnum)]
enum ListOutput {
    #[default]
    Table,
    Wide,
    Json,
    Yaml,
}

impl From<ListOutput> for cli::list::ListFormat {
    fn from(o: ListOutput) -> Self {
        match o {
            ListOutput::Table => Self::Table,
            ListOutput::Wide => Self::Wide,
            ListOutput::Json => Self::Json,
            ListOutput::Yaml => Self::Yaml,
        }
    }
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
    if let Cmd::Completions { shell } = cli.command {
        // Needs no configuration: works before any is written.
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "agent-manager", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    init_logging(cli.log_json, matches!(cli.command, Cmd::Run));
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent-manager: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Cmd::Config {
            output: ConfigOutput::Text,
            ..
        } => {
            // The sections holding credentials show their URLs through
            // `agent_manager::redact::url` in their Debug output.
            println!("{config:#?}");
            ExitCode::SUCCESS
        }
        Cmd::Config {
            output: ConfigOutput::Toml,
            show_secrets,
        } => match config.to_toml(show_secrets) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("agent-manager: cannot write the configuration as TOML: {e}");
                ExitCode::from(cli::EXIT_FAILED)
            }
        },
        Cmd::Run => actix_rt::System::new().block_on(run(config)),
        Cmd::Agents { command } => operate(agents(&config, command)),
        Cmd::Halt { command } => operate(halt(&config, command)),
        Cmd::Check(args) => operate(check(&config, args)),
        Cmd::Completions { .. } => ExitCode::SUCCESS,
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
            watch,
            no_trunc,
            no_headers,
        } => {
            let opts = cli::list::ListOptions {
                customer,
                status,
                format: output.into(),
                no_trunc,
                no_headers,
                watch,
                width: terminal_width(),
            };
            cli::list::list(config, &opts, out).await
        }
        AgentsCmd::Describe { agent_id } => cli::describe::describe(config, &agent_id, out).await,
        AgentsCmd::Show { agent_id, output } => {
            cli::agents::show(config, &agent_id, output.into(), out).await
        }
        AgentsCmd::Events {
            agent_id,
            follow,
            count,
            output,
        } => cli::agents::events(config, &agent_id, count, follow, output.into(), out).await,
        AgentsCmd::Create { file, wait } => {
            let order = cli::order::Order::create(cli::spec_file::read(&file)?)?;
            act(config, &order, &wait, out).await
        }
        AgentsCmd::Update {
            agent_id,
            file,
            wait,
        } => {
            let order = cli::order::Order::update(&agent_id, cli::spec_file::read(&file)?)?;
            act(config, &order, &wait, out).await
        }
        AgentsCmd::Start(a) => act(config, &Order::start(&a.agent_id), &a.wait, out).await,
        AgentsCmd::Restart { act: a, grace } => {
            let order = Order::restart(&a.agent_id, grace.grace_period);
            act(config, &order, &a.wait, out).await
        }
        AgentsCmd::Delete { act: a, grace } => {
            let order = Order::delete(&a.agent_id, grace.grace_period);
            act(config, &order, &a.wait, out).await
        }
        AgentsCmd::Pause(a) => act(config, &Order::pause(&a.agent_id), &a.wait, out).await,
        AgentsCmd::Resume(a) => act(config, &Order::resume(&a.agent_id), &a.wait, out).await,
        AgentsCmd::Stop {
            act: a,
            force,
            reason,
            grace,
        } => {
            let operator = cli::act::operator_name(config.operator(), |k| std::env::var(k).ok());
            let order = Order::stop(
                &a.agent_id,
                force,
                grace.grace_period,
                reason.as_deref(),
                operator.as_deref(),
            );
            act(config, &order, &a.wait, out).await
        }
        AgentsCmd::Task {
            agent_id,
            text,
            file,
            timeout,
            output,
        } => {
            let body = cli::task::body(text.as_deref(), file.as_deref())?;
            let opts = cli::task::TaskOptions {
                wait: timeout,
                format: output.into(),
            };
            let mut err = std::io::stderr();
            cli::task::run(config, &agent_id, &body, opts, out, &mut err).await
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

async fn halt(config: &Config, command: HaltCmd) -> Result<(), CliError> {
    let out = &mut std::io::stdout();
    let operator = || cli::act::operator_name(config.operator(), |k| std::env::var(k).ok());
    match command {
        HaltCmd::Engage(a) => {
            let target = match (a.agent, a.team, a.customer, a.platform) {
                (_, Some(team), _, _) => cli::halt::Target::Team(team),
                (_, _, Some(customer), _) => cli::halt::Target::Customer(customer),
                (_, _, _, true) => cli::halt::Target::Platform,
                (agents, _, _, false) => cli::halt::Target::Agents(agents),
            };
            let opts = cli::halt::EngageOptions {
                target,
                types: a.types,
                reason: a.reason,
                halt_id: a.halt_id,
                customer_id: a.customer_id,
                requested_by: operator(),
                wait: a.wait.wait,
                format: a.output.into(),
            };
            cli::halt::engage(config, &opts, out).await
        }
        HaltCmd::Release {
            halt_id,
            reason,
            wait,
            output,
        } => {
            let opts = cli::halt::ReleaseOptions {
                halt_id,
                reason,
                requested_by: operator(),
                wait: wait.wait,
                format: output.into(),
            };
            cli::halt::release(config, &opts, out).await
        }
        HaltCmd::List { output } => {
            cli::halt::list(config, output.into(), terminal_width(), out).await
        }
        HaltCmd::Show { halt_id, output } => {
            cli::halt::show(config, &halt_id, output.into(), out).await
        }
    }
}

/// Sends `order` and, as `wait` says, waits for its answer.
async fn act(
    config: &Config,
    order: &Order,
    wait: &WaitArgs,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    cli::act::send(config, order, wait.wait(), wait.output.into(), out).await
}

async fn check(config: &Config, args: CheckArgs) -> Result<(), CliError> {
    use std::io::Write;
    let out = &mut std::io::stdout();
    let opts = cli::check::CheckOptions {
        services_only: args.services_only,
        ready: args.ready,
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
    let fail = |e: &dyn std::fmt::Display| {
        tracing::error!("{e}");
        eprintln!("agent-manager: {e}");
        ExitCode::from(1)
    };
    let standby = match Standby::prepare(config, OnDeposed::Exit).await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    // Standing by until the lease is ours (at once when no other manager of this
    // installation leads); a signal meanwhile ends it without acting.
    let signal = wait_for_signal();
    tokio::pin!(signal);
    let lead = standby.lead();
    tokio::pin!(lead);
    let manager = tokio::select! {
        r = &mut lead => match r {
            Ok(m) => m,
            Err(e) => return fail(&e),
        },
        _ = &mut signal => {
            tracing::info!("signal received while standing by; stopping");
            return ExitCode::SUCCESS;
        }
    };
    signal.await;
    tracing::info!("signal received; shutting down and handing over (agents keep running)");
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
