//! Configuration and command-line errors: exit code 2, a message that names
//! the key with line and column, and nothing attempted.

use crate::support::{Site, Table, SITE_URL};

fn config_error(site: &Site) -> String {
    let run = site.scan(&[]).expect(2);
    assert!(site.api.requests().is_empty());
    assert!(!site.at("optiwatch.db").exists(), "nothing attempted");
    run.stderr
}

#[test]
fn unknown_keys_are_named_with_line_and_column() {
    let site = Site::new().setting(Table::Api, "bacth_size = 10");
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
        let site = Site::new().setting(Table::Api, line);
        let err = config_error(&site);
        assert!(err.contains(want), "{line}: {err}");
        assert!(err.contains("line 5"), "{line}: {err}");
    }
}

#[test]
fn plain_http_to_a_remote_api_is_refused() {
    let mut site = Site::new();
    site.config.raw(&format!(
        "[api]\nbase_url = \"http://dashboard.optimole.com/api\"\n\
         [[rules]]\ndir = \"media\"\nurl = \"{SITE_URL}\"\n"
    ));
    let run = site.run(&["scan"]).expect(2);
    let err = &run.stderr;
    assert!(
        err.contains("base_url") && err.contains("https://"),
        "{err}"
    );
    assert!(err.contains("line 2"), "{err}");
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
    let site = Site::new()
        .setting(Table::Api, "key_file = \"key\"")
        .files(&["a.jpg"]);
    std::fs::write(site.at("key"), format!("{}\n", site.key)).unwrap();
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
    let site = Site::new().files(&["a.jpg"]);
    let dry_run = || {
        site.optiwatch_looking_up_config()
            .args(&["scan", "--dry-run"])
    };
    // ./watcher.toml in the working directory.
    dry_run().run().expect(0);
    // $OPTIWATCH_CONFIG beats the working directory.
    let missing = dry_run().env("OPTIWATCH_CONFIG", "nope.toml").run();
    assert!(missing.expect(2).stderr.contains("nope.toml"));
    // --config beats $OPTIWATCH_CONFIG.
    site.optiwatch_looking_up_config()
        .args(&["--config", "watcher.toml", "scan", "--dry-run"])
        .env("OPTIWATCH_CONFIG", "nope.toml")
        .run()
        .expect(0);
    // Set but empty is not set (a shell's `OPTIWATCH_CONFIG= cmd`).
    dry_run().env("OPTIWATCH_CONFIG", "").run().expect(0);
}

#[test]
fn bad_command_lines_exit_2() {
    let site = Site::new();
    site.run(&["scan", "--no-such-flag"]).expect(2);
    site.run(&["scan", "--baseline", "--dry-run"]).expect(2);
}

#[test]
fn a_foreign_or_corrupt_store_is_refused_and_left_untouched() {
    let site = Site::new();
    site.write("a.jpg", b"1");
    let db = site.at("optiwatch.db");
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
    // Lands after [api] (line 2), so TOML reads it as a key of [api].
    let site = Site::new().setting(Table::Api, "state = \"elsewhere.db\"");
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
    let site = Site::new().setting(
        Table::Token,
        "command = \"wp option update my_token {token}\"",
    );
    let err = config_error(&site);
    assert!(
        err.contains(r#"write it as command = ["wp", "option", "update", "my_token", "{token}"]"#),
        "{err}"
    );
    assert!(err.contains("line 11, column 11"), "{err}");
}

#[test]
fn a_duration_written_as_a_number_shows_the_string_to_write() {
    let site = Site::new().setting(Table::Watch, "debounce = 500");
    let err = config_error(&site);
    assert!(err.contains(r#"write "500ms""#), "{err}");
    assert!(err.contains("line 11, column 12"), "{err}");
}

#[test]
fn a_state_store_inside_a_rule_folder_is_refused() {
    let site = Site::new().setting(Table::Top, "state = \"media/optiwatch.db\"");
    let run = site.scan(&[]).expect(2);
    assert!(
        run.stderr.contains("inside the rule folder") && run.stderr.contains("put `state` outside"),
        "{run}"
    );
    assert!(!site.path("optiwatch.db").exists(), "no store was made");
}
