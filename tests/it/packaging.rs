//! What ships around the binary: the one man page (every command, FILES,
//! ENVIRONMENT, EXIT STATUS; rendered by the real `man` when installed), the
//! systemd unit (accepted by `systemd-analyze verify`, dedicated user), and
//! the deploy hook's messages on a bad config. The .deb and the static
//! binary are built and installed by packaging/build.sh and smoke.sh (too
//! slow for every run; see README, "Packaging").

use std::process::Command;

use crate::support::skip::{lacks, Need};
use crate::support::{Site, Table};

/// What `optiwatch <args>` prints; it must succeed.
fn optiwatch(args: &[&str]) -> String {
    Site::new().run(args).expect(0).stdout
}

/// The command names `optiwatch --help` lists.
fn commands() -> Vec<String> {
    let help = optiwatch(&["--help"]);
    let list = help
        .split("Commands:\n")
        .nth(1)
        .expect("--help lists commands");
    let names: Vec<String> = list
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(names.len() >= 9, "{help}");
    names
}

#[test]
fn the_man_page_has_every_command_and_the_reference_sections() {
    let page = optiwatch(&["man"]);
    for command in commands() {
        assert!(
            page.contains(&format!(".SS \"optiwatch {command}\"")),
            "no subsection for {command}:\n{page}"
        );
    }
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        ".SH COMMANDS",
        ".SH FILES",
        ".SH ENVIRONMENT",
        ".SH \"EXIT STATUS\"",
        ".SH \"SEE ALSO\"",
    ] {
        assert!(page.contains(section), "no {section}:\n{page}");
    }
    // Every variable and file the README promises (roff escapes `-`).
    for needle in [
        "OPTIWATCH_CONFIG",
        "OPTIWATCH_LOG_FORMAT",
        "OPTIMOLE_API_KEY",
        "CREDENTIALS_DIRECTORY",
        "RUST_LOG",
        "watcher.toml",
        ".lock",
        "[token] file",
        "key_file",
    ] {
        assert!(page.contains(needle), "no {needle}:\n{page}");
    }
    // Options of commands are there too, not only their names.
    assert!(page.contains("\\-\\-baseline") && page.contains("\\-\\-refused"));
    // One page: the roff preamble once, one title.
    assert_eq!(page.matches(".ie \\n(.g").count(), 1, "{page}");
    assert_eq!(page.matches("\n.TH ").count(), 1, "{page}");
    // No pointers to pages that do not exist.
    assert!(!page.contains("optiwatch\\-scan(1)"), "{page}");
    assert!(!page.contains("SUBCOMMANDS"), "{page}");
}

#[test]
fn man_renders_the_page_without_warnings() {
    if lacks(&[Need::Program("man")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("optiwatch.1");
    std::fs::write(&file, optiwatch(&["man"])).unwrap();
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&file)
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stderr.is_empty(), "{stderr}");
    for command in commands() {
        assert!(
            text.contains(&format!("optiwatch {command}")),
            "{command}:\n{text}"
        );
    }
    for section in ["FILES", "ENVIRONMENT", "EXIT STATUS", "SEE ALSO"] {
        assert!(
            text.lines().any(|l| l == section),
            "no {section} heading:\n{text}"
        );
    }
}

/// The unit's `Key=value` lines (comments and section headers skipped).
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter(|l| !l.starts_with(['#', ';', '[']) && l.contains('='))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_systemd_unit_runs_as_its_own_user_and_passes_systemd_analyze_verify() {
    let unit_path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/optiwatch.service");
    let unit = std::fs::read_to_string(unit_path).unwrap();
    let d = directives(&unit);
    let get = |key: &str| -> Vec<&str> {
        d.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("User"), ["optiwatch"]);
    assert_eq!(get("Group"), ["optiwatch"]);
    assert_eq!(get("SupplementaryGroups"), ["www-data"]);
    assert_eq!(get("LoadCredential"), ["optimole-key:/etc/optiwatch/key"]);
    assert_eq!(get("StateDirectory"), ["optiwatch"]);
    for hardening in ["ProtectSystem", "NoNewPrivileges", "CapabilityBoundingSet"] {
        assert_eq!(get(hardening).len(), 1, "{hardening} kept");
    }

    // (The checks above ran; only the verify half is skipped.)
    if lacks(&[Need::Program("systemd-analyze")]) {
        return;
    }
    // verify wants ExecStart's binary to exist: point it at the test build.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("optiwatch.service");
    let bin = env!("CARGO_BIN_EXE_optiwatch");
    let text = unit.replace(
        "ExecStart=/usr/local/bin/optiwatch ",
        &format!("ExecStart={bin} "),
    );
    assert_ne!(
        text, unit,
        "ExecStart=/usr/local/bin/optiwatch is what build.sh rewrites"
    );
    std::fs::write(&copy, text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 on an unknown key ("ignoring"): any output is a finding.
    assert!(out.status.success() && output.trim().is_empty(), "{output}");
}

#[test]
fn the_deploy_hook_explains_a_bad_config_without_a_traceback() {
    let site = Site::new().setting(Table::Watch, "debounce = 500");
    for config in [site.config_path(), site.at("missing.toml")] {
        let out = site.deploy_hook(&config).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
        assert!(!stderr.contains("Traceback"), "{stderr}");
        assert!(stdout.is_empty(), "no summary without a report: {stdout}");
        assert!(
            stderr.contains("configuration or usage error")
                && stderr.contains(&config.display().to_string()),
            "{stderr}"
        );
    }
    // optiwatch's own message (line, column, what to write) is passed on.
    let out = site
        .deploy_hook(&site.config_path())
        .env_remove("OPTIMOLE_API_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 11, column 12") && stderr.contains("\"500ms\""),
        "{stderr}"
    );
    assert!(site.api.requests().is_empty());
}
