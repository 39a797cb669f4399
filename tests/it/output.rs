//! What operators see: every `--json` is one object with `"version": 1`
//! first; `scan --json` lists what changed, not every file; times are
//! RFC 3339; the `scan` summary names changed paths (capped, all with
//! `-v`); `-q` prints nothing but errors; JSON logs carry real arrays.

use std::time::Instant;

use serde_json::Value;

use crate::support::{url, Site};

/// `2026-11-29T16:43:36Z`
fn is_rfc3339(value: &Value) -> bool {
    let Some(text) = value.as_str() else {
        return false;
    };
    let b = text.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && humantime::parse_rfc3339(text).is_ok()
}

#[test]
fn every_json_output_is_one_object_with_the_version_first() {
    let site = Site::new().files(&["a.jpg"]).baselined();
    site.write("a.jpg", b"v2");
    let runs = [
        site.run(&["scan", "--json"]).expect(0),
        site.run(&["invalidate", "--json", "media/a.jpg"]).expect(0),
        site.run(&["token", "--json"]).expect(0),
        site.run(&["urls", "--json", "media/a.jpg"]).expect(0),
        site.run(&["check", "--json"]).expect(0),
        site.run(&["status", "--json"]).expect(0),
    ];
    for run in &runs {
        assert!(
            run.stdout.starts_with("{\"version\":1,") && run.stdout.trim_end().ends_with('}'),
            "{run}"
        );
        assert_eq!(run.stdout.trim_end().lines().count(), 1, "{run}");
        assert_eq!(run.json()["version"], 1, "{run}");
    }
    let [_, _, _, urls, check, _] = &runs;
    assert_eq!(urls.json()["paths"][0]["urls"][0], url("a.jpg").as_str());
    assert_eq!(check.json()["ok"], true, "{check}");
    assert!(check.json()["findings"].as_array().is_some(), "{check}");
}

#[test]
fn status_shows_times_as_rfc3339_in_json_and_text() {
    let site = Site::new().files(&["a.jpg"]).baselined();
    site.write("a.jpg", b"v2");
    site.scan(&[]).expect(0);
    let status = site.status();
    for field in ["last_flush_at", "last_token_at"] {
        assert!(is_rfc3339(&status[field]), "{field}: {status}");
    }
    assert!(status["oldest_owed_at"].is_null(), "{status}");
    let text = site.run(&["status"]).expect(0);
    let flushed = status["last_flush_at"].as_str().unwrap();
    assert!(
        text.stdout.contains(&format!("last flush   {flushed}")),
        "{text}"
    );
}

/// A baselined site of `n` one-byte files, written directly (1,000 a folder).
fn tree(n: usize) -> Site {
    let site = Site::new();
    for dir in 0..n.div_ceil(1000) {
        let folder = site.path(format!("d{dir}"));
        std::fs::create_dir(&folder).unwrap();
        for i in 0..1000.min(n - dir * 1000) {
            std::fs::write(folder.join(format!("{i}.jpg")), b"x").unwrap();
        }
    }
    site.run(&["-q", "scan"]).expect(0);
    site
}

/// The measure is 100,000 unchanged files in less than 1 KiB
/// (`OPTIWATCH_TEST_FILES=100000` runs exactly that). By default 20,000,
/// and the proof that the size does not grow with the tree: the same
/// object for 2,000 files, apart from the counts, has the same length.
#[test]
fn scan_json_on_unchanged_files_is_small_and_does_not_grow_with_the_tree() {
    let n: usize = std::env::var("OPTIWATCH_TEST_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let started = Instant::now();
    let mut sizes = Vec::new();
    for n in [2_000, n] {
        let site = tree(n);
        let run = site.scan(&[]).expect(0);
        let mut json = run.json();
        assert_eq!(json["counts"]["unchanged"], n, "{run}");
        assert!(json.get("scanned").is_none(), "{run}");
        assert!(json.get("unchanged").is_none(), "{run}");
        assert!(run.stdout.len() < 1024, "{} bytes: {run}", run.stdout.len());
        eprintln!(
            "{n} files: {} bytes ({:?})",
            run.stdout.len(),
            started.elapsed()
        );
        json.as_object_mut().unwrap().remove("counts");
        sizes.push(json.to_string().len());
    }
    assert_eq!(sizes[0], sizes[1], "the output grows with the tree");
}

#[test]
fn scan_json_lists_changes_and_all_paths_adds_every_file() {
    let site = Site::new().files(&["a.jpg", "b.jpg", "c.jpg", "gone.jpg"]);
    // A baseline counts its files as new without listing them.
    let baseline = site.scan(&[]).expect(0);
    assert_eq!(baseline.json()["counts"]["new"], 4, "{baseline}");
    assert!(baseline.list("new").is_empty(), "{baseline}");
    site.write("a.jpg", b"v2");
    site.touch("b.jpg");
    site.remove("gone.jpg");
    site.write("new.jpg", b"v1");
    let all = site.scan(&["--dry-run", "--all-paths"]).expect(0);
    assert_eq!(all.list("scanned").len(), 4, "{all}");
    assert_eq!(all.list("unchanged").len(), 1, "{all}");
    let run = site.scan(&[]).expect(0);
    let json = run.json();
    assert!(json.get("scanned").is_none() && json.get("unchanged").is_none());
    let path = |rel: &str| site.path(rel).display().to_string();
    assert_eq!(run.list("changed"), vec![path("a.jpg")]);
    assert_eq!(run.list("touched"), vec![path("b.jpg")]);
    assert_eq!(run.list("new"), vec![path("new.jpg")]);
    assert_eq!(run.list("deleted"), vec![path("gone.jpg")]);
    assert_eq!(json["counts"]["scanned"], 4);
    assert_eq!(json["counts"]["unchanged"], 1);
    // --all-paths only means something with --json.
    site.run(&["scan", "--all-paths"]).expect(2);
}

#[test]
fn scan_text_names_changed_new_and_deleted_paths_capped_unless_verbose() {
    let names: Vec<String> = (0..26).map(|i| format!("{i:02}.jpg")).collect();
    let site = Site::new().files(&names).baselined();
    for name in &names[..25] {
        site.write(name, b"v2");
    }
    site.remove(&names[25]);
    site.write("fresh.jpg", b"v1");
    let changed_lines = |out: &str| out.lines().filter(|l| l.contains("changed  ")).count();

    let run = site.run(&["scan", "--dry-run"]).expect(0);
    assert_eq!(changed_lines(&run.stdout), 20, "{run}");
    assert!(run.stdout.contains("… and 5 more changed"), "{run}");
    let new = format!("new      {}", site.path("fresh.jpg").display());
    let deleted = format!("deleted  {}", site.path(&names[25]).display());
    assert!(run.stdout.contains(&new), "{run}");
    assert!(run.stdout.contains(&deleted), "{run}");

    let verbose = site.run(&["-v", "scan", "--dry-run"]).expect(0);
    assert_eq!(changed_lines(&verbose.stdout), 25, "{verbose}");
    assert!(!verbose.stdout.contains("more changed"), "{verbose}");
}

#[test]
fn quiet_prints_nothing_but_errors() {
    let site = Site::new().files(&["a.jpg"]).baselined();
    site.write("a.jpg", b"v2");
    let run = site.run(&["-q", "scan"]).expect(0);
    assert_eq!(run.stdout, "", "{run}");
    assert_eq!(run.stderr, "", "{run}");
    assert_eq!(site.api.invalidated_assets(), vec![url("a.jpg")]);
    let invalidate = site.run(&["-q", "invalidate", "media/a.jpg"]).expect(0);
    assert_eq!(invalidate.stdout, "", "{invalidate}");

    // A failure: only error lines, on stderr, and the exit code.
    std::fs::rename(&site.media, site.at("moved")).unwrap();
    let failed = site.run(&["-q", "scan"]).expect(1);
    assert_eq!(failed.stdout, "", "{failed}");
    assert!(!failed.stderr.is_empty(), "{failed}");
    for line in failed.stderr.lines() {
        assert!(line.contains("ERROR"), "{failed}");
    }
}

#[test]
fn json_logs_carry_lists_as_arrays() {
    let names: Vec<String> = (0..5).map(|i| format!("{i}.jpg")).collect();
    let site = Site::new().files(&names).baselined();
    site.api.set_asset_limit(2);
    for name in &names {
        site.write(name, b"v2");
    }
    let run = site.run(&["--log-format", "json", "scan"]).expect(0);
    let lines: Vec<Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{run}")))
        .collect();
    for line in &lines {
        assert!(is_rfc3339_micros(&line["timestamp"]), "{line}");
        assert!(line["level"].is_string(), "{line}");
    }
    let split = lines
        .iter()
        .find(|l| l.get("sizes").is_some())
        .unwrap_or_else(|| panic!("no batch split logged:\n{run}"));
    let sizes = split["sizes"]
        .as_array()
        .unwrap_or_else(|| panic!("{split}"));
    assert!(sizes.iter().all(Value::is_u64), "{split}");
    assert_eq!(site.api.invalidated_assets().len(), 5);
}

fn is_rfc3339_micros(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|t| t.ends_with('Z') && humantime::parse_rfc3339(t).is_ok())
}
