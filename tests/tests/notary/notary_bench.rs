//! Wall time of `notation sign` through the keyward plugin against notation signing with its
//! own local key file (`notation cert generate-test`), in the same run, same registry, same
//! key type (RSA-2048; EC-256 through keyward too). Prints the numbers with `eprintln!`
//! (run with `--nocapture` to see them); fails only if a signature cannot be made.
//!
//! The keyward binaries are whatever profile the tests were built with (debug by default).

use std::time::{Duration, Instant};

use keyward_tests::cli::assert_ok;
use keyward_tests::notation::{Notation, Registry, tools};
use keyward_tests::{TestDaemon, run_cli};

/// Signatures timed per signer.
const RUNS: usize = 9;

fn summary(times: &mut [Duration]) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:.1} ms, min {:.1} ms, max {:.1} ms ({} runs)",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1]),
        times.len()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn notation_sign_wall_time_keyward_plugin_vs_local_key() {
    let Some(tools) = tools() else {
        return;
    };
    let registry = Registry::start(&tools);
    let daemon = TestDaemon::start("").await;
    let notation = Notation::new(&tools);
    notation.install_plugin(&daemon);
    for (id, key_type) in [("bench-rsa", "rsa-2048"), ("bench-ec", "ec-p256")] {
        let output = run_cli(
            &daemon,
            [
                "keys",
                "generate",
                "--backend",
                "local",
                "--type",
                key_type,
                id,
            ],
        );
        assert_ok(&output, id);
        let subject = format!("C=US,ST=WA,O=Example,CN={id}");
        let output = run_cli(
            &daemon,
            ["cert", "issue", "--key", id, "--subject", &subject],
        );
        assert_ok(&output, id);
        notation.add_key(id, id, daemon.socket());
    }
    // notation's own key file and certificate (RSA-2048), registered as "local-test".
    notation.ok(["cert", "generate-test", "--bits", "2048", "local-test"]);

    let signers = ["local-test", "bench-rsa", "bench-ec"];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); signers.len()];
    // Warm-up (page cache, first connection), then interleaved runs so drift hits all alike.
    for (i, signer) in signers.iter().enumerate() {
        let (_, image) = registry.push_image(&format!("warm-{i}"));
        notation.ok(["sign", "--key", signer, &image]);
    }
    for run in 0..RUNS {
        for (i, signer) in signers.iter().enumerate() {
            let (_, image) = registry.push_image(&format!("bench-{i}-{run}"));
            let started = Instant::now();
            notation.ok(["sign", "--key", signer, &image]);
            times[i].push(started.elapsed());
        }
    }
    eprintln!("notation sign wall time (notation v1.3.2, local registry, JWS):");
    for (signer, times) in signers.iter().zip(&mut times) {
        let what = match *signer {
            "local-test" => "notation local key file, RSA-2048",
            "bench-rsa" => "keyward plugin, local backend, RSA-2048",
            _ => "keyward plugin, local backend, EC-256",
        };
        eprintln!("  {what:<42} {}", summary(times));
    }
}
