//! `nomad-driver-systemd`: the Nomad plugin (no subcommand, launched by Nomad) and the operator
//! CLI (`validate`, `list`, `schema`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use nomad_driver_systemd::driver::Driver;
use nomad_driver_systemd::systemd::DbusSystemd;
use nomad_driver_systemd::{cli, logging, plugin};

#[derive(Parser)]
#[command(
    version,
    about = "Nomad task driver that runs every task as a systemd unit"
)]
struct Cli {
    /// Plugin log level (trace, debug, info, warn, error).
    #[arg(long, global = true, default_value = "info")]
    log_level: tracing::Level,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check Nomad job files (HCL2 or JSON) the way the plugin would judge their systemd tasks.
    Validate {
        /// Plugin config (TOML); default /etc/nomad-driver-systemd/config.toml when it exists.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Judge job properties against this systemd major version (e.g. 245); default: the
        /// host's systemd when it answers on the system bus, else no version check.
        #[arg(long, value_name = "VERSION")]
        systemd_version: Option<u32>,
        /// Job files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run a job's systemd tasks locally through the plugin, the way a Nomad client drives it
    /// (to try the driver without Nomad). Stops them on Ctrl-C.
    Run {
        /// Job file (HCL2 or JSON).
        file: PathBuf,
        /// Plugin config (TOML); default /etc/nomad-driver-systemd/config.toml when it exists.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Boot a private systemd in namespaces first (for hosts whose PID 1 is not systemd).
        #[arg(long)]
        private_systemd: bool,
        /// Stop the tasks after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        stop_after: Option<u64>,
        /// Where alloc dirs are made.
        #[arg(long, default_value_os_t = cli::run::default_alloc_root())]
        alloc_dir: PathBuf,
    },
    /// List the units this driver manages on this host.
    List {
        /// Plugin config (TOML), for the slice; default /etc/nomad-driver-systemd/config.toml
        /// when it exists.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the plugin config's keys, types and defaults (what the NixOS module's options follow).
    Schema {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run_plugin(cli.log_level),
        Some(Command::Validate {
            config,
            json,
            systemd_version,
            files,
        }) => cli::validate::run(config.as_deref(), &files, json, systemd_version),
        Some(Command::Run {
            file,
            config,
            private_systemd,
            stop_after,
            alloc_dir,
        }) => cli::run::run(&cli::run::Options {
            file: &file,
            config: config.as_deref(),
            private_systemd,
            stop_after: stop_after.map(std::time::Duration::from_secs),
            alloc_root: &alloc_dir,
        }),
        Some(Command::List { config, json }) => cli::list::run(config.as_deref(), json),
        Some(Command::Schema { json }) => cli::schema::run(json),
    }
}

fn say(msg: &str) {
    // stderr may be gone; never panic over it
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn run_plugin(level: tracing::Level) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    if !plugin::launched_by_nomad(&env) {
        say(plugin::NOT_A_PLUGIN_HOST);
        return ExitCode::from(1);
    }
    if let Err(e) = plugin::negotiate(&env) {
        say(&e);
        return ExitCode::from(1);
    }
    logging::init(level);
    match plugin::raise_nofile_limit() {
        Ok((before, after)) if before != after => {
            tracing::info!(
                before,
                after,
                "raised the soft RLIMIT_NOFILE to the hard limit"
            );
        }
        Ok((_, now)) => tracing::debug!(limit = now, "RLIMIT_NOFILE already at the hard limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE"),
    }
    // One thread: the plugin waits on systemd, the kernel and Nomad, and does little work of
    // its own; on a second worker, every hand-off between tasks (a D-Bus signal to the task's
    // monitor, its result to a waiting gRPC call, a sample to the connection) was a futex
    // wake-up of the other thread, an inter-processor interrupt on a VM (ARCHITECTURE.md,
    // *One thread*, which lists what goes to `spawn_blocking` and what stays inline).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve_plugin(&env)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "plugin failed");
            ExitCode::from(1)
        }
    }
}

async fn serve_plugin(env: plugin::Env<'_>) -> Result<(), Box<dyn std::error::Error>> {
    let path = plugin::socket_path(env);
    let listener = plugin::listen(&path, env)?;
    // Nomad's Ctrl-C reaches us too (same process group); tasks and plugin stay up.
    tokio::spawn(async {
        while tokio::signal::ctrl_c().await.is_ok() {
            tracing::debug!("ignoring SIGINT: the plugin stops only when Nomad asks");
        }
    });
    // The runtime dir can be redirected (tests reach a private systemd's /run from outside).
    let runtime_dir = env(cli::RUNTIME_DIR_ENV)
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| cli::DEFAULT_RUNTIME_DIR.to_string());
    let journal = nomad_driver_systemd::journal::JournalPaths::from_runtime_dir(
        std::path::Path::new(&runtime_dir),
    );
    let systemd = DbusSystemd::new(runtime_dir);
    let driver = Driver::new(systemd.clone(), cli::CGROUP_ROOT);
    driver.set_journal(journal);
    let shutdown = CancellationToken::new();
    plugin::write_handshake(&path)?;
    tracing::info!(socket = %path.display(), version = env!("CARGO_PKG_VERSION"), "plugin serving");
    let served = plugin::serve(listener, driver.clone(), shutdown).await;
    driver.shutdown();
    systemd.close();
    let _ = std::fs::remove_file(&path);
    tracing::debug!("plugin exiting; tasks keep running");
    served.map_err(Into::into)
}
