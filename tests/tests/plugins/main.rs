//! The `plugins` part: backends as plugin processes (`plugins`), plugins that crash, hang or
//! are not plugins at all (`plugins_faults`), and how plugins are found and check their own
//! settings (`plugin_checks`).
//!
//! Run with `scripts/test plugins` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test plugins` once they are installed.

mod plugin_checks;
mod plugins;
mod plugins_faults;
