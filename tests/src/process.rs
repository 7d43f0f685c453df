//! Running child processes with a deadline, so that a hung binary fails a test instead of
//! hanging it.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `command` with piped stdout and stderr, feeding it `stdin` (or an empty stdin), and
/// waits up to `timeout`. Panics (after killing it) if it runs longer.
pub fn run_with_timeout(mut command: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));

    let input = stdin.unwrap_or_default().to_vec();
    let mut child_stdin = child.stdin.take().expect("stdin is piped");
    let writer = thread::spawn(move || {
        // A child that exits without reading its input closes the pipe; that is not our error.
        let _ = child_stdin.write_all(&input);
    });
    let mut out = child.stdout.take().expect("stdout is piped");
    let stdout = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let mut err = child.stderr.take().expect("stderr is piped");
    let stderr = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            panic!(
                "{command:?} did not finish within {timeout:?}; stderr so far:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// A child's stdout as text (lossy).
pub fn stdout_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A child's stderr as text (lossy).
pub fn stderr_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Stops a test peer: SIGTERM, then SIGKILL if it is still running after `grace`, and reaps it.
pub fn terminate(mut child: std::process::Child, grace: Duration) {
    use rustix::process::{Pid, Signal, kill_process};
    let _ = kill_process(Pid::from_child(&child), Signal::TERM);
    let deadline = Instant::now() + grace;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
}

/// Starts `program` with `command`'s arguments and settings so that it dies with this test
/// process, even when no destructor runs (a peer shared by the tests of a binary lives in a
/// `static`, and statics are never dropped; a killed test run drops nothing).
///
/// The program runs under `setpriv --pdeathsig KILL` (util-linux), which asks the kernel to
/// kill it when the thread that started it ends. Test threads end after each test, so the
/// spawning happens on one keeper thread that lives as long as the process.
pub fn spawn_tied_to_this_process(
    program: &std::path::Path,
    configure: impl FnOnce(&mut Command),
) -> std::process::Child {
    type Request = (
        Command,
        std::sync::mpsc::Sender<std::io::Result<std::process::Child>>,
    );
    static KEEPER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Request>>> =
        std::sync::OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (requests, incoming) = std::sync::mpsc::channel::<Request>();
        thread::Builder::new()
            .name("keyward-peer-keeper".into())
            .spawn(move || {
                // `requests` lives in a static, so this loop (and the thread) ends only with
                // the process.
                for (mut command, answer) in incoming {
                    let _ = answer.send(command.spawn());
                }
            })
            .expect("start the peer keeper thread");
        std::sync::Mutex::new(requests)
    });
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .expect("setpriv (util-linux) is not installed; scripts/test installs it");
    let mut command = Command::new(setpriv);
    command.args(["--pdeathsig", "KILL", "--"]).arg(program);
    configure(&mut command);
    let (answer, result) = std::sync::mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((command, answer))
        .expect("the peer keeper thread runs");
    result
        .recv()
        .expect("the peer keeper thread answers")
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()))
}
