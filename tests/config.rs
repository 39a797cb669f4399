//! Configuration and command-line errors: exit code 2, a message that names
//! the key with line and column, and nothing attempted.

mod support;

use support::{Site, SITE_URL};

fn config_error(site: &Site) -> String {
    let run = site.scan(&[]).expect(2);
    assert!(site.api.requests().is_empty());
    assert!(
        !site.root.path().join("optiwatch.db").exists(),
        "nothing attempted"
    );
    run.stderr
}

#[test]
fn unknown_keys_are_named_with_line_and_column() {
    let mut site = Site::new();
    site.config.api.push_str("bacth_size = 10\n");
    let err = config_error(&site);
    assert!(err.contains("bacth_size"), "{err}");
    assert!(err.contains("line 5, column 1"), "{err}");
}

#[test]
fn bad_values_are_named_with_line_and_column() {
    let cases = [
        ("batch_size = 101\n", "batch_size 101"),
        ("timeout = \"soon\"\n", "invalid duration"),
        ("batch_size = \"ten\"\n", "batch_size"),
    ];
    for (line, want) in cases {
        let mut site = Site::new();
        site.config.api.push_str(line);
        let err = config_error(&site);
        assert!(err.contains(want), "{line}: {err}");
        assert!(err.contains("line 5"), "{line}: {err}");
    }
}

#[test]
fn plain_http_to_a_remote_api_is_refused() {
    let mut site = Site::new();
    site.config.top = "[api]\nbase_url = \"http://dashboard.optimole.com/api\"\n".into();
    // The harness adds its own [api] table; write the file by hand instead.
    let text = format!(
        "{}\n[[rules]]\ndir = \"media\"\nurl = \"{SITE_URL}\"\n",
        site.config.top
    );
    std::fs::write(site.config_path(), text).unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_optiwatch"))
        .arg("--config")
        .arg(site.config_path())
        .arg("scan")
        .env("OPTIMOLE_API_KEY", "k")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(
        err.contains("base_url") && err.contains("https://"),
        "{err}"
    );
    assert!(err.contains("line 2"), "{err}");
    site.config.top.clear();
}

#[test]
fn rules_are_checked() {
    let mut site = Site::new();
    site.config.rules = "[[rules]]\ndir = \"media\"\nurl = \"example.com/uploads\"\n".into();
    assert!(config_error(&site).contains("not an absolute URL"));

    site.config.rules = format!(
        "[[rules]]\ndir = \"media\"\nurl = \"{SITE_URL}\"\n[[rules]]\ndir = \"./media/\"\nurl = \"{SITE_URL}\"\n"
    );
    assert!(config_error(&site).contains("used by two [[rules]]"));

    site.config.rules =
        format!("[[rules]]\ndir = \"media\"\nurl = \"{SITE_URL}\"\ninclude = [\"[\"]\n");
    assert!(config_error(&site).contains("bad include/exclude pattern"));

    site.config.rules.clear();
    assert!(config_error(&site).contains("no [[rules]]"));
}

#[test]
fn a_missing_key_is_a_usage_error_naming_the_variable() {
    let site = Site::new();
    site.write("a.jpg", b"1");
    let run = site
        .optiwatch()
        .args(&["scan"])
        .env_remove("OPTIMOLE_API_KEY")
        .run()
        .expect(2);
    assert!(run.stderr.contains("OPTIMOLE_API_KEY"), "{run}");
    // A dry run needs no key.
    site.optiwatch()
        .args(&["scan", "--dry-run"])
        .env_remove("OPTIMOLE_API_KEY")
        .run()
        .expect(0);
}

#[test]
fn the_key_can_come_from_a_file() {
    let mut site = Site::new();
    let key_file = site.root.path().join("key");
    std::fs::write(&key_file, format!("{}\n", site.key)).unwrap();
    site.config.api.push_str("key_file = \"key\"\n");
    site.write("a.jpg", b"1");
    site.scan(&[]).expect(0);
    site.write("a.jpg", b"2");
    let run = site
        .optiwatch()
        .args(&["scan"])
        .env_remove("OPTIMOLE_API_KEY")
        .run()
        .expect(0);
    assert!(
        run.stderr.contains("chmod 600"),
        "world-readable key file warned about:\n{run}"
    );
    assert_eq!(site.api.invalidated_assets().len(), 1);
}

#[test]
fn config_lookup_order_is_flag_then_env_then_working_dir() {
    let site = Site::new();
    site.write("a.jpg", b"1");
    site.write_config();
    let bin = env!("CARGO_BIN_EXE_optiwatch");
    let run = |cmd: &mut std::process::Command| {
        cmd.current_dir(site.root.path())
            .env("OPTIMOLE_API_KEY", &site.key)
            .output()
            .unwrap()
            .status
            .code()
    };
    // ./watcher.toml in the working directory.
    assert_eq!(
        run(std::process::Command::new(bin)
            .env_remove("OPTIWATCH_CONFIG")
            .args(["scan", "--dry-run"])),
        Some(0)
    );
    // $OPTIWATCH_CONFIG beats the working directory.
    assert_eq!(
        run(std::process::Command::new(bin)
            .env("OPTIWATCH_CONFIG", "nope.toml")
            .args(["scan", "--dry-run"])),
        Some(2)
    );
    // --config beats $OPTIWATCH_CONFIG.
    assert_eq!(
        run(std::process::Command::new(bin)
            .env("OPTIWATCH_CONFIG", "nope.toml")
            .args(["--config", "watcher.toml", "scan", "--dry-run"])),
        Some(0)
    );
}

#[test]
fn bad_command_lines_exit_2() {
    let site = Site::new();
    site.optiwatch()
        .args(&["scan", "--no-such-flag"])
        .run()
        .expect(2);
    site.optiwatch()
        .args(&["scan", "--baseline", "--dry-run"])
        .run()
        .expect(2);
}

#[test]
fn a_foreign_or_corrupt_store_is_refused_and_left_untouched() {
    let site = Site::new();
    site.write("a.jpg", b"1");
    let db = site.root.path().join("optiwatch.db");
    std::fs::write(
        &db,
        b"this is not a database, it is someone's notes\n".repeat(100),
    )
    .unwrap();
    let before = std::fs::read(&db).unwrap();
    let run = site.scan(&[]).expect(1);
    assert!(run.stderr.contains("not an optiwatch state store"), "{run}");
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn a_top_level_key_after_a_table_says_to_move_it_above() {
    let mut site = Site::new();
    // Lands after [api] (line 2), so TOML reads it as a key of [api].
    site.config.api.push_str("state = \"elsewhere.db\"\n");
    let err = config_error(&site);
    assert!(err.contains("line 5, column 1"), "{err}");
    assert!(
        err.contains("top-level keys such as `state` must come before the first [table]"),
        "{err}"
    );
    assert!(err.contains("above [api] on line 2"), "{err}");
}

#[test]
fn a_token_command_written_as_a_string_shows_the_list_to_write() {
    let mut site = Site::new();
    site.config
        .tail
        .push_str("[token]\ncommand = \"wp option update my_token {token}\"\n");
    let err = config_error(&site);
    assert!(
        err.contains(r#"write it as command = ["wp", "option", "update", "my_token", "{token}"]"#),
        "{err}"
    );
    assert!(err.contains("line 11, column 11"), "{err}");
}

#[test]
fn a_duration_written_as_a_number_shows_the_string_to_write() {
    let mut site = Site::new();
    site.config.tail.push_str("[watch]\ndebounce = 500\n");
    let err = config_error(&site);
    assert!(err.contains(r#"write "500ms""#), "{err}");
    assert!(err.contains("line 11, column 12"), "{err}");
}
