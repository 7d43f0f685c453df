//! `keywardd`: the keyward signing agent daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use keyward_daemon::config::{self, ConfigSource, Overrides};
use keyward_daemon::{paths, server};

/// The keyward signing agent: holds private keys in its backends and signs for local clients
/// over a Unix socket.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "keywardd",
    version,
    after_help = "\
With no config file, keywardd runs on an embedded default: one `local` backend keeping keys
under $XDG_DATA_HOME/keyward/keys, and a socket at $XDG_RUNTIME_DIR/keyward/agent.sock.
Clients find the socket through KEYWARD_SOCK (like SSH_AUTH_SOCK).

SIGHUP reloads the config: backends and keys added, changed or removed take effect for new
requests; a config with an error is refused (logged) and the running one stays.

Under systemd: sockets passed by socket activation (LISTEN_FDS) are served when they are bound
to the config's socket or [ssh_agent] socket (same directory, owner and mode checks as a socket
keywardd binds), and with NOTIFY_SOCKET keywardd says READY=1 once it serves, RELOADING=1 and
READY=1 around a SIGHUP reload, STOPPING=1 on SIGTERM (Type=notify). Units: dist/systemd/.

Logging: on stderr, text (no timestamps when stderr is the systemd journal, which stamps lines
itself) or JSON lines (--log-format json, or log_format = \"json\" in the config).
KEYWARD_LOG sets the filter (e.g. `debug`, `keyward_daemon=trace`); default `info`.

Exit status: 0 stopped cleanly (or --check-config found no error), 1 failed (a socket it cannot
bind, ...), 2 a config error (at its file and line)."
)]
struct Args {
    /// The config file [default: $XDG_CONFIG_HOME/keyward/keywardd.toml if it exists]
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The Unix socket to listen on (overrides the config)
    #[arg(long, short)]
    socket: Option<PathBuf>,
    /// Log format: text or json [default: the config's log_format, else text]
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Check the config's syntax and every backend's settings (each plugin checks its own),
    /// then exit: 0 when fine, 2 on an error (creates nothing, reads no secret)
    #[arg(long)]
    check_config: bool,
    /// Print keywardd's man page (roff, section 8) and exit (scripts/install, the package)
    #[arg(long, hide = true)]
    man: bool,
    /// Print the completion script of SHELL (bash, zsh, fish, ...) and exit
    #[arg(long, value_name = "SHELL", hide = true)]
    completions: Option<clap_complete::Shell>,
}

/// `--man` and `--completions`: generated from the same definitions that parse the command
/// line, so they never drift from `--help`.
fn print_manual(args: &Args) -> Option<ExitCode> {
    let mut command = Args::command();
    if let Some(shell) = args.completions {
        clap_complete::generate(shell, &mut command, "keywardd", &mut std::io::stdout());
        return Some(ExitCode::SUCCESS);
    }
    if !args.man {
        return None;
    }
    let page = clap_mangen::Man::new(command).section("8");
    Some(match page.render(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keywardd: error: cannot write the man page: {e}");
            ExitCode::FAILURE
        }
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(code) = print_manual(&args) {
        return code;
    }
    // Sockets passed by systemd (socket activation): taken before any thread starts, since
    // taking them removes LISTEN_FDS and LISTEN_PID from the environment.
    let inherited = match keyward_daemon::activation::take_inherited() {
        Ok(count) => count,
        Err(message) => {
            eprintln!("keywardd: error: {message}");
            return ExitCode::FAILURE;
        }
    };
    // Everything the daemon creates (sockets, keys, state) is private to its user.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));

    // The config chooses the log format, so it is read before logging starts; its errors go
    // to stderr as they are.
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("keywardd: error: {message}");
            return ExitCode::from(2);
        }
    };
    let log_format = args
        .log_format
        .as_deref()
        .and_then(config::LogFormat::from_name)
        .or(config.log_format)
        .unwrap_or(config::LogFormat::Text);
    keyward_daemon::logging::init(log_format);
    match &config.file {
        Some(file) => tracing::info!(config = %file.display(), "config read"),
        None => tracing::info!("no config file; using the embedded default"),
    }
    if inherited > 0 {
        tracing::info!(
            sockets = inherited,
            "sockets passed by the service manager (LISTEN_FDS)"
        );
    }
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
                config::embedded_default().map_err(|e| e.to_string())?
            }
        }
    };
    let overrides = Overrides {
        socket: args.socket.clone(),
    };
    config::parse(&source, &overrides).map_err(|e| e.to_string())
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
                    keyward_daemon::activation::reloading();
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
