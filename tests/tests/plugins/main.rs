//! The `plugins` part: backends as plugin processes (`plugins`), plugins that crash or hang
//! (`plugins_faults`), and executables that are unsafe or no plugins at all (`bad_plugins`).
//!
//! Run with `scripts/test plugins` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test plugins` once they are installed.

mod bad_plugins;
mod plugins;
mod plugins_faults;
