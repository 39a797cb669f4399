//! The WordPress integration: the must-use plugin in
//! `examples/wordpress/optiwatch-token.php`, run by real PHP on top of
//! WordPress's real hook code (Debian's `wordpress` package), must make the
//! Optimole plugin's settings carry the token optiwatch published.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::skip::{lacks, Need};
use crate::support::{Site, Table};

const WP: &str = "/usr/share/wordpress";

/// Loads WordPress's `wp-includes/plugin.php` (the real `add_filter` /
/// `apply_filters`), then the must-use plugin, then reads the option the
/// way `get_option()` ends (`apply_filters("option_{$option}", ...)` in
/// wp-includes/option.php) and prints the settings as JSON.
const HARNESS: &str = r#"<?php
define('ABSPATH', $argv[1] . '/');
define('WP_CONTENT_DIR', $argv[2]);
if ($argv[4] !== '') {
    function is_multisite() { return true; }
    function get_current_blog_id() { global $argv; return (int) $argv[4]; }
}
require ABSPATH . 'wp-includes/plugin.php';
require $argv[3];
$stored = array('cache_buster_images' => 'stored', 'cache_buster' => 'old', 'quality' => 'auto');
echo json_encode(apply_filters('option_optml_settings', $stored, 'optml_settings'));
"#;

/// What the tests need: PHP (`php-cli`) and WordPress (`wordpress`).
const NEEDS: &[Need] = &[
    Need::Program("php"),
    Need::File("/usr/share/wordpress/wp-includes/plugin.php"),
];

fn plugin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wordpress/optiwatch-token.php")
}

/// The `cache_buster_images` WordPress hands the Optimole plugin.
fn cache_buster(site: &Site, blog: Option<u32>) -> String {
    let harness = site.at("harness.php");
    std::fs::write(&harness, HARNESS).unwrap();
    let out = Command::new("php")
        .arg(&harness)
        .arg(WP)
        .arg(site.at("wp-content"))
        .arg(plugin())
        .arg(blog.map(|b| b.to_string()).unwrap_or_default())
        .output()
        .unwrap();
    assert!(out.status.success(), "php failed: {out:?}");
    let settings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(settings["quality"], "auto", "other settings are kept");
    settings["cache_buster_images"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_optimole_plugin_reads_the_published_token() {
    if lacks(NEEDS) {
        return;
    }
    let site = Site::new()
        .setting(Table::Token, "file = \"wp-content/optiwatch-token\"")
        .files(&["2026/11/a.jpg"]);
    std::fs::create_dir(site.at("wp-content")).unwrap();
    site.scan(&[]).expect(0);
    assert_eq!(
        cache_buster(&site, None),
        "stored",
        "no token published yet: the stored setting stays"
    );

    site.write("2026/11/a.jpg", b"v2");
    site.scan(&[]).expect(0);
    let issued = site.api.tokens_issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(cache_buster(&site, None), issued[0]);

    site.write("2026/11/a.jpg", b"v3");
    site.scan(&[]).expect(0);
    let issued = site.api.tokens_issued();
    assert_eq!(
        cache_buster(&site, None),
        issued[1],
        "the newest token wins"
    );
}

#[test]
fn multisite_sites_read_their_own_token_and_bad_files_change_nothing() {
    if lacks(NEEDS) {
        return;
    }
    let site = Site::new();
    let content = site.at("wp-content");
    std::fs::create_dir(&content).unwrap();
    std::fs::write(content.join("optiwatch-token"), "network1").unwrap();
    std::fs::write(content.join("optiwatch-token-3"), "site3tok").unwrap();
    assert_eq!(cache_buster(&site, Some(3)), "site3tok");
    assert_eq!(cache_buster(&site, Some(2)), "network1", "falls back");
    assert_eq!(cache_buster(&site, None), "network1");
    for bad in ["", "0", "-rf", "a b", "<script>"] {
        std::fs::write(content.join("optiwatch-token"), bad).unwrap();
        assert_eq!(cache_buster(&site, None), "stored", "token file {bad:?}");
    }
}
