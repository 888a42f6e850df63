//! The `vespid` command line: parse and hand over.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vespid::app::config::Config;
use vespid::app::telemetry;
use vespid::node_agent;
use vespid::platform::db::migrate;
use vespid::roles::{self, Roles};

/// jemalloc rather than glibc's malloc, so memory freed after a burst goes back to the OS. With glibc, the
/// first freed argon2 working memory (19 MiB, mmapped) raises its dynamic mmap threshold above that size,
/// so later ones come from per-thread heap arenas that are never trimmed: `serve --role=all` went from
/// 14 MiB idle to ~380 MiB after 50 concurrent signups and stayed there. jemalloc purges allocations of
/// 8 MiB and more as soon as they are freed, and the rest after a decay time, without background threads.
/// Measured by `bench/api.sh` (see bench/README.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "vespid",
    version,
    about = "Vespid: multi-tenant automation platform in one binary"
)]
struct Cli {
    /// A TOML file layered over the built-in defaults (environment variables still win).
    #[arg(long, global = true, env = "VESPID_CONFIG")]
    config: Option<String>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the agent's flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run one or more roles in this process.
    ///
    /// Roles: `api` (HTTP API: auth, orgs, workflows, runs, secrets, agents, meta), `worker` (executes
    /// queued workflow runs), `continuation` (resumes runs blocked on a remote executor), `gateway` (agent
    /// WebSocket edge and session brain). `all` = every role, for a single-node install; give a comma list
    /// (e.g. `api,worker`) to scale roles out over one PostgreSQL and one Redis.
    Serve {
        /// `all`, or a comma-separated list of api, worker, continuation, gateway.
        #[arg(long, default_value = "all")]
        role: Roles,
        /// Do not apply pending migrations at start-up.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending database migrations (as DATABASE_MIGRATE_URL, the owner role) and exit.
    Migrate,
    /// Connector-secret maintenance.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Print the OpenAPI 3.1 document of the HTTP API (as served at `/v1/openapi.json`) and exit. Needs no
    /// configuration, database or network: for generating clients in CI.
    Openapi,
    /// The node agent: pair this machine with an org and run it as an executor.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Pair with a pairing token (from `POST /v1/orgs/{org}/agents/pairing-tokens`), write the config
    /// file (0600) and run.
    Connect(node_agent::ConnectArgs),
    /// Run from the config file, or from flags when --executor-id, --executor-token and
    /// --gateway-ws-url are all given.
    Start(node_agent::StartArgs),
}

/// `vespid agent …`: needs none of the server's configuration; logs to stderr (`VESPID_AGENT_LOG`).
fn run_agent(command: AgentCommand) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VESPID_AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vespid agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            vespid::app::shutdown::signal().await;
            let _ = stop_tx.send(true);
        });
        match command {
            AgentCommand::Connect(args) => node_agent::connect(args, stop_rx).await,
            AgentCommand::Start(args) => node_agent::start(args, stop_rx).await,
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vespid agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_openapi() -> ExitCode {
    match serde_json::to_string_pretty(&roles::openapi::document()) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vespid openapi: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Re-wrap every secret's data key under the active KEK (SECRETS_KEK_ID/SECRETS_KEK_BASE64), reading
    /// old keys from SECRETS_KEK_PREVIOUS. Idempotent and resumable; runs while the service is up.
    Rotate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cli = match cli.command {
        Command::Agent { command } => return run_agent(command),
        Command::Openapi => return print_openapi(),
        command => Cli { command, ..cli },
    };
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vespid: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vespid: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Work on the blocking pool (a large document being parsed, a password hash) must not keep the
    // process alive past the grace period once the roles have stopped.
    let grace = std::time::Duration::from_secs(config.server.shutdown_grace_secs + 5);
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { role, no_migrate } => roles::serve(config, role, !no_migrate)
                .await
                .map_err(|e| e.to_string()),
            Command::Migrate => {
                let url = if config.database.migrate_url.is_empty() {
                    config.database.url.expose().to_string()
                } else {
                    config.database.migrate_url.expose().to_string()
                };
                migrate::run(&url)
                    .await
                    .map(|applied| {
                        for m in &applied {
                            println!("applied {m}");
                        }
                        println!("{} migration(s) applied", applied.len());
                    })
                    .map_err(|e| e.to_string())
            }
            Command::Secrets {
                command: SecretsCommand::Rotate,
            } => roles::rotate_secrets(config)
                .await
                .map_err(|e| e.to_string()),
            // Handled before the server's configuration is loaded.
            Command::Agent { .. } | Command::Openapi => Ok(()),
        }
    });
    runtime.shutdown_timeout(grace);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "vespid stopped with an error");
            eprintln!("vespid: {e}");
            ExitCode::FAILURE
        }
    }
}
