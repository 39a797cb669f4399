//! Arbitrary text as a config file: `Config::parse` must return Ok or an
//! error message, never panic, and a config it accepts must compile into a
//! `RuleSet` without panicking.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use optiwatch::config::Config;
use optiwatch::rules::RuleSet;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(cfg) = Config::parse(&text, Path::new("/etc/optiwatch/watcher.toml")) else {
        return;
    };
    assert!(!cfg.rules.is_empty(), "an accepted config has rules");
    for rule in &cfg.rules {
        assert!(
            rule.dir.is_absolute(),
            "rule dir {:?} is relative",
            rule.dir
        );
        for prefix in std::iter::once(&rule.url).chain(&rule.also) {
            assert!(!prefix.ends_with('/'), "prefix {prefix:?} ends with /");
        }
    }
    // An error (a pattern the rule compiler refuses) is allowed; a panic is not.
    if let Ok(set) = RuleSet::new(&cfg.rules) {
        assert_eq!(set.rules().len(), cfg.rules.len());
    }
});
