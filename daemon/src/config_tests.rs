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
fn backend_settings_errors_name_the_backend_line() {
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
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("unknown field `pathh`"), "{err}");
}
