//! The `notary` part: certificates attached to keys (`cert_validation`), the
//! `notation-keyward` plugin contract (`notary_plugin`), the real `notation` CLI end to end
//! (`notary`) and its wall time against notation's own key file (`notary_bench`).
//!
//! Run with `scripts/test notary` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test notary` once they are installed.

mod cert_validation;
mod notary;
mod notary_bench;
mod notary_plugin;
