//! The `ops` part: keyward as an operator installs and runs it (issue #19). The systemd units
//! pass `systemd-analyze verify` and say what they must (`units`); keywardd started by
//! `systemd-socket-activate` on its first connection serves the inherited agent and ssh-agent
//! sockets, signs, and tells a `NOTIFY_SOCKET` READY/RELOADING/STOPPING (`activation`);
//! `scripts/install` into a prefix whose keywardd finds its plugins in `libexec/keyward` and
//! signs with SoftHSM, then `--uninstall` (`install`); and the "Done when" path: the Debian
//! package built with cargo-deb, `dpkg -i`, the installed keywardd socket-activated with the
//! docs' PKCS#11 example, `keyward status` green, metrics scraped, a signature verified by
//! openssl, `dpkg --purge` (`package`); the CI recipes in examples/ci pass actionlint and
//! GitLab's CI schema (`recipes`); the Containerfile's paths, libraries, user and entrypoint
//! (`container`); `scripts/quickstart` into a temporary home (`quickstart`).
//!
//! Run with `scripts/test ops` (installs cargo-deb and the tools), or
//! `cargo test -p keyward-tests --test ops` once they are installed.

mod activation;
mod common;
mod container;
mod install;
mod package;
mod quickstart;
mod recipes;
mod units;
