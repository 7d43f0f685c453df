//! The `operate` part: what an operator runs against a live agent. `keyward status` and
//! `keyward doctor`, green and red (`status`); the Prometheus endpoint scraped, checked by
//! `promtool check metrics` and by a real Prometheus server (`metrics`); JSON log lines
//! (`logs`); `keyward keys delete` on the local backend and on SoftHSM, refused for a protected
//! key, audited (`delete`); `--json` output read by `jq`, and `keyward verify --public-key`
//! with no agent (`json`).
//!
//! Run with `scripts/test operate` (installs the peers), or
//! `cargo test -p keyward-tests --test operate` once they are installed.

mod common;
mod delete;
mod json;
mod logs;
mod metrics;
mod status;
