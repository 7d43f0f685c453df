//! The daemon's config parser (`keyward_daemon::config::parse`) on arbitrary text: it must
//! answer with a config or an error naming the line, never panic.
#![no_main]

use keyward_daemon::config::{ConfigSource, Overrides, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = ConfigSource::text("fuzz.toml", text.to_string());
    let overrides = Overrides {
        socket: Some("/nonexistent/keyward-fuzz.sock".into()),
    };
    if let Err(error) = parse(&source, &overrides) {
        // Every error says where it is.
        assert!(error.to_string().starts_with("fuzz.toml"), "{error}");
    }
});
