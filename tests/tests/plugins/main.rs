//! The `plugins` part: backends as plugin processes (`plugins`), plugins that crash or hang
//! (`plugins_faults`), executables that are unsafe or no plugins at all (`bad_plugins`),
//! executables loosened after start and refused at their next restart (`plugin_recheck`), and
//! how plugins are found and check their own settings (`plugin_checks`).
//!
//! Run with `scripts/test plugins` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test plugins` once they are installed.

mod bad_plugins;
mod plugin_checks;
mod plugin_recheck;
mod plugins;
mod plugins_faults;
