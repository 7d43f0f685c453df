//! Unit tests of the config parser.

use super::*;

fn parse_text(text: &str) -> Result<Config, ConfigError> {
    let overrides = Overrides {
        socket: Some("/tmp/test.sock".into()),
    };
    let mut text = text.to_string();
    if !text.contains("state_dir") {
        text = format!("state_dir = \"/tmp/state\"\n{text}");
    }
    parse(&ConfigSource::text("test.toml", text), &overrides)
}

/// (config, Ok(()) or the text the error must contain)
fn check(text: &str, expect: Result<(), &str>) {
    match (parse_text(text), expect) {
        (Ok(_), Ok(())) => {}
        (Err(e), Err(needle)) => {
            let msg = e.to_string();
            assert!(
                msg.contains(needle),
                "error {msg:?} should contain {needle:?}"
            );
        }
        (got, want) => panic!("config {text:?}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn errors_name_the_line() {
    check("", Ok(()));
    check(
        "[[backend]]\nname = \"a\"\ntype = \"local\"\npath = \"/x\"\n",
        Ok(()),
    );
    check(
        "sockett = \"/x\"\n",
        Err("test.toml line 2: unknown field `sockett`"),
    );
    check("allow_uids = \"me\"\n", Err("line 2"));
    check(
        "[[backend]]\ntype = \"local\"\n",
        Err("line 2: [[backend]]: missing `name`"),
    );
    check(
        "[[backend]]\nname = \"a\"\ntype = \"local\"\n[[backend]]\nname = \"a\"\ntype = \"local\"\n",
        Err("line 5: a second [[backend]] is named \"a\""),
    );
    check(
        "[[key]]\nid = \"k\"\nbackend = \"nope\"\nref = \"x\"\n",
        Err("line 2: [[key]] \"k\": names backend \"nope\""),
    );
    check(
        "[[backend]]\nname = \"a\"\ntype = \"local\"\n[[key]]\nid = \"k\"\nbackend = \"a\"\nref = \"x\"\nextra = 1\n",
        Err("unknown field `extra`"),
    );
    check(
        "[[backend]]\nname = \"a/b\"\ntype = \"local\"\n",
        Err("is not valid"),
    );
}

#[test]
fn backend_settings_errors_name_the_line_of_the_setting() {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        path: String,
    }
    let config =
        parse_text("\n[[backend]]\nname = \"a\"\ntype = \"local\"\npathh = \"/x\"\n").unwrap();
    let err = config.backends[0]
        .settings::<Settings>()
        .unwrap_err()
        .to_string();
    // Line 1 is the state_dir parse_text adds; `pathh` is on line 6.
    assert!(err.starts_with("test.toml line 6: "), "{err}");
    assert!(err.contains("unknown field `pathh`"), "{err}");
    let missing = config.backends[0]
        .settings::<Settings>()
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(missing.contains("line 6"), "{missing}");

    // A setting the table does not have is reported at the table's line.
    let config = parse_text("\n[[backend]]\nname = \"a\"\ntype = \"local\"\n").unwrap();
    let err = config.backends[0]
        .settings::<Settings>()
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("test.toml line 3: "), "{err}");
    assert!(err.contains("missing field `path`"), "{err}");
    let err = config.backends[0]
        .setting_error(Some("isolation"), "no")
        .to_string();
    assert!(err.starts_with("test.toml line 3: "), "{err}");

    check(
        "[[backend]]\nname = \"a\"\ntype = \"../../bin/sh\"\n",
        Err("line 4: [[backend]] \"a\": type \"../../bin/sh\" is not valid"),
    );
}
