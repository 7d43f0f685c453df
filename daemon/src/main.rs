//! `keywardd`: the keyward signing agent daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use keyward_daemon::config::{self, ConfigSource, Overrides};
use keyward_daemon::{paths, server};

/// The keyward signing agent: holds private keys in its backends and signs for local clients
/// over a Unix socket.
#[derive(Clone, Debug, Parser)]
#[command(
    version,
    after_help = "\
With no config file, keywardd runs on an embedded default: one `local` backend keeping keys
under $XDG_DATA_HOME/keyward/keys, and a socket at $XDG_RUNTIME_DIR/keyward/agent.sock.
Clients find the socket through KEYWARD_SOCK (like SSH_AUTH_SOCK).

SIGHUP reloads the config: backends and keys added, changed or removed take effect for new
requests; a config with an error is refused (logged) and the running one stays.

Logging: KEYWARD_LOG sets the filter (e.g. `debug`, `keyward_daemon=trace`); default `info`."
)]
struct Args {
    /// The config file [default: $XDG_CONFIG_HOME/keyward/keywardd.toml if it exists]
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The Unix socket to listen on (overrides the config)
    #[arg(long, short)]
    socket: Option<PathBuf>,
    /// Log format
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    /// Check the config's syntax and every backend's settings (each plugin checks its own),
    /// then exit: 0 when fine, 2 on an error (creates nothing, reads no secret)
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args.log_format);
    // Everything the daemon creates (sockets, keys, state) is private to its user.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));

    let config = match load_config(&args) {
        Ok(config) => config,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("keywardd: error: {message}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        return check_config(&config);
    }
    // Before any backend reads a key, PIN or passphrase.
    keyward_daemon::hardening::Hardening::apply().log();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("keywardd: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let reloads = reload_on_sighup(args.clone());
        server::run_with_reload(config, shutdown_signal(), reloads).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("keywardd: error: {error}");
            match error {
                // A config error exits 2 whether the parser or a backend's plugin found it.
                server::DaemonError::Config(_) => ExitCode::from(2),
                server::DaemonError::Failed(_) => ExitCode::FAILURE,
            }
        }
    }
}

/// `--check-config`: every backend's settings checked by the backend itself (its plugin's
/// `--check-settings`, or the settings type of an in-process backend), every plugin executable
/// found. Prints every error (exit 2) or a summary (exit 0). Creates nothing, reads no secret.
fn check_config(config: &config::Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("keywardd: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let plugin_dirs = keyward_daemon::plugin_dir::search_dirs(config.plugin_dir.as_deref());
    let mut errors = 0;
    for backend in &config.backends {
        match runtime.block_on(keyward_daemon::backends::check(backend, &plugin_dirs)) {
            Ok(keyward_daemon::backends::Plan::Process {
                program,
                unchecked: Some(why),
                ..
            }) => println!(
                "backend {:?}: {} will run; its settings were not checked: {why}",
                backend.name,
                program.display()
            ),
            Ok(_) => {}
            Err(error) => {
                errors += 1;
                eprintln!("keywardd: error: {error}");
            }
        }
    }
    if errors > 0 {
        return ExitCode::from(2);
    }
    println!(
        "config OK: {} backend(s), {} key(s)",
        config.backends.len(),
        config.keys.len()
    );
    ExitCode::SUCCESS
}

fn load_config(args: &Args) -> Result<config::Config, String> {
    let source = match &args.config {
        Some(path) => ConfigSource::file(path).map_err(|e| e.to_string())?,
        None => {
            let default_path = paths::default_config_path()?;
            if default_path.exists() {
                ConfigSource::file(&default_path).map_err(|e| e.to_string())?
            } else {
                tracing::info!(
                    "no config file at {}; using the embedded default",
                    default_path.display()
                );
                config::embedded_default().map_err(|e| e.to_string())?
            }
        }
    };
    let overrides = Overrides {
        socket: args.socket.clone(),
    };
    config::parse(&source, &overrides).map_err(|e| e.to_string())
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        // Every field and message escaped: no caller string or plugin line can forge a line.
        builder
            .fmt_fields(keyward_daemon::shown::EscapingFields)
            .init();
    }
}

/// Reads the config again on every SIGHUP and hands the result to the server. The handler is
/// installed before this returns, so an early SIGHUP never kills the daemon.
fn reload_on_sighup(args: Args) -> tokio::sync::mpsc::Receiver<Result<config::Config, String>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    match signal(SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP received: reloading the config");
                    let loaded = load_config(&args);
                    if sender.send(loaded).await.is_err() {
                        break;
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot install the SIGHUP handler ({e}); config reload is off"),
    }
    receiver
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop keywardd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
