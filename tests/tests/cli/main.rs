//! The `cli` part: the `keyward` CLI contract end to end (`cli`), `keyward sign` /
//! `keyward verify` (`cli_sign`), and the exit codes a script can rely on (`cli_exit`).
//!
//! Run with `scripts/test cli` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test cli` once they are installed.

mod cli;
mod cli_exit;
mod cli_sign;
