//! The `plugins` part: backends as plugin processes (`plugins`) and plugins that crash, hang
//! or are not plugins at all (`plugins_faults`).
//!
//! Run with `scripts/test plugins` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test plugins` once they are installed.

mod plugins;
mod plugins_faults;
