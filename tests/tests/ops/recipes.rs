//! The CI recipes in examples/ci pass real linters: actionlint for the GitHub Actions
//! workflow (which catches the `runner` context in a job's `env` that the workflow once had)
//! (with shellcheck on its `run:` scripts) and GitLab's CI schema, through check-jsonschema, for the GitLab pipeline. Each linter is
//! shown to reject a broken recipe, so the test can fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use keyward_tests::{peers, stderr_text, stdout_text};

use crate::common;

/// A linter `scripts/test ops` installs and names in `var`.
fn linter(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(path) if path.is_file() => Some(path),
        _ => {
            peers::missing(
                &format!("{var} does not name the linter"),
                "scripts/test ops installs actionlint, shellcheck and check-jsonschema (install_ci_linters in scripts/lib.sh)",
            );
            None
        }
    }
}

fn run(program: &Path, args: &[&str], file: &Path) -> (bool, String) {
    let mut command = Command::new(program);
    command.args(args).arg(file);
    let output = keyward_tests::run_with_timeout(command, None, common::DEADLINE);
    (
        output.status.success(),
        format!("{}{}", stdout_text(&output), stderr_text(&output)),
    )
}

#[test]
fn the_github_actions_workflow_passes_actionlint() {
    let Some(actionlint) = linter("KEYWARD_TEST_ACTIONLINT") else {
        return;
    };
    // The run: scripts go through shellcheck (Debian's, which actionlint calls), the
    // workflow's structure, contexts and expressions through actionlint itself.
    let Some(shellcheck) = linter("KEYWARD_TEST_SHELLCHECK") else {
        return;
    };
    let shellcheck = format!("-shellcheck={}", shellcheck.display());
    let args = [shellcheck.as_str(), "-pyflakes=", "-no-color"];
    let workflow = common::repo().join("examples/ci/github-actions-awskms.yml");
    let (ok, said) = run(&actionlint, &args, &workflow);
    assert!(ok, "actionlint {}:\n{said}", workflow.display());

    // The mistake it once had: the runner context in a job-level env.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yml");
    let text = std::fs::read_to_string(&workflow).unwrap().replacen(
        "    runs-on: ubuntu-24.04\n",
        "    runs-on: ubuntu-24.04\n    env:\n      KEYWARD_SOCK: ${{ runner.temp }}/keyward/agent.sock\n",
        1,
    );
    std::fs::write(&broken, text).unwrap();
    let (ok, said) = run(&actionlint, &args, &broken);
    assert!(
        !ok && said.contains("context \"runner\" is not allowed here"),
        "{said}"
    );
}

#[test]
fn the_gitlab_pipeline_passes_gitlab_ci_schema() {
    let Some(check) = linter("KEYWARD_TEST_CHECK_JSONSCHEMA") else {
        return;
    };
    let args = ["--builtin-schema", "vendor.gitlab-ci"];
    let pipeline = common::repo().join("examples/ci/gitlab-ci-awskms.yml");
    let (ok, said) = run(&check, &args, &pipeline);
    assert!(ok, "check-jsonschema {}:\n{said}", pipeline.display());

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yml");
    let text = std::fs::read_to_string(&pipeline).unwrap().replacen(
        "  before_script:\n",
        "  before_scripts:\n",
        1,
    );
    std::fs::write(&broken, text).unwrap();
    let (ok, said) = run(&check, &args, &broken);
    assert!(!ok && said.contains("before_scripts"), "{said}");
}
