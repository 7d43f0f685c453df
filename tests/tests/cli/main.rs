//! The `cli` part: the `keyward` CLI contract end to end (`cli`), and `keyward sign` /
//! `keyward verify` (`cli_sign`).
//!
//! Run with `scripts/test cli` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test cli` once they are installed.

mod cli;
mod cli_sign;
