//! One account model everywhere: each account has a name (`default` for
//! the `[api]` key's, `rules.account` or the key's source for a rule's
//! own key) that `status`, `history`, logs and `invalidate --account` use;
//! `invalidate --all` reaches every account; names and keys must agree.

use crate::support::fake_api::Recorded;
use crate::support::http::{free_addr, metrics};
use crate::support::{shop_url, wait_until, Site, Table, KEY_A, KEY_B, WAIT};

/// The blog on the `[api]` key and a shop named `shop` on its own key.
fn two_accounts() -> Site {
    let site = Site::with_keys(&[KEY_A, KEY_B])
        .shop(KEY_B)
        .rule_setting("account = \"shop\"")
        .files(&["a.jpg"]);
    std::fs::write(site.at("shop/s.jpg"), b"1").unwrap();
    site.baselined()
}

/// The keys of the accepted requests to `route`.
fn keys_at(requests: &[Recorded], route: &str) -> Vec<String> {
    let mut keys: Vec<String> = requests
        .iter()
        .filter(|r| r.path == route && r.status == 200)
        .filter_map(|r| r.authorization.clone())
        .collect();
    keys.sort();
    keys
}

#[test]
fn invalidate_all_reaches_every_account_and_account_chooses_one() {
    let site = two_accounts();
    site.api.clear();
    site.run(&["invalidate", "--all", "--yes"]).expect(0);
    assert_eq!(
        keys_at(&site.api.requests(), "/invalidate/all"),
        [format!("Bearer {KEY_A}"), format!("Bearer {KEY_B}")]
    );
    // Each account got its fresh token after it.
    assert_eq!(keys_at(&site.api.requests(), "/token").len(), 2);

    site.api.clear();
    site.run(&["invalidate", "--all", "--yes", "--account", "shop"])
        .expect(0);
    assert_eq!(
        keys_at(&site.api.requests(), "/invalidate/all"),
        [format!("Bearer {KEY_B}")]
    );

    let unknown = site
        .run(&["invalidate", "--all", "--yes", "--account", "blog"])
        .expect(2);
    assert!(
        unknown.stderr.contains("default") && unknown.stderr.contains("shop"),
        "names the known accounts: {unknown}"
    );

    // --domain goes to the account whose rules serve that domain.
    site.api.clear();
    site.run(&["invalidate", "--domain", "shop.example.com"])
        .expect(0);
    assert_eq!(
        keys_at(&site.api.requests(), "/invalidate/domain"),
        [format!("Bearer {KEY_B}")]
    );

    // History names the accounts.
    let out = site
        .optiwatch()
        .args(&["history", "--json", "--account", "shop"])
        .run()
        .expect(0);
    let json = out.json();
    let reasons: Vec<&str> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["all", "all", "domain"], "{out}");
    assert!(json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["account"] == "shop"));
}

#[test]
fn status_shows_each_account_by_name() {
    let site = two_accounts();
    std::fs::write(site.at("shop/s.jpg"), b"2").unwrap();
    site.write("a.jpg", b"2");
    site.api.revoke_key(KEY_A);
    site.scan(&[]).expect(1);
    let status = site.status();
    let accounts = status["accounts"].as_array().unwrap();
    let names: Vec<&str> = accounts
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "shop"], "{status}");
    assert_eq!(accounts[0]["assets_owed"], 1);
    assert_eq!(accounts[0]["token"], "owed");
    assert_eq!(accounts[1]["assets_owed"], 0);
    assert_eq!(accounts[1]["token"], "settled");
    assert!(accounts[1]["last_flush_at"].is_string(), "{status}");
    let text = site.run(&["status"]).expect(0).stdout;
    assert!(
        text.lines()
            .any(|l| l.starts_with("account") && l.contains("shop: 0 owed")),
        "{text}"
    );
    // The shop's asset is in history under its name.
    let out = site
        .optiwatch()
        .args(&["history", "--json"])
        .run()
        .expect(0);
    let json = out.json();
    let entries = json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{out}");
    assert_eq!(entries[0]["url"], shop_url("s.jpg"));
    assert_eq!(entries[0]["account"], "shop");
}

#[test]
fn names_and_keys_must_agree() {
    // Two keys under one name.
    let site = Site::with_keys(&[KEY_A, KEY_B])
        .shop(KEY_B)
        .rule_setting("account = \"shop\"")
        .rule("other", "https://other.example.com")
        .rule_setting("key_env = \"OTHER_KEY\"")
        .rule_setting("account = \"shop\"");
    std::fs::create_dir(site.at("other")).unwrap();
    let out = site.run(&["check"]).expect(2);
    assert!(
        out.stderr.contains("\"shop\" names two different keys"),
        "{out}"
    );

    // One key under two names.
    let site = Site::with_keys(&[KEY_A, KEY_B])
        .shop(KEY_B)
        .rule_setting("account = \"shop\"")
        .rule("other", "https://other.example.com")
        .rule_setting("key_env = \"SHOP_KEY\"")
        .rule_setting("account = \"store\"");
    let out = site.run(&["check"]).expect(2);
    assert!(out.stderr.contains("same key"), "{out}");

    // A rule on the [api] key is the default account.
    let site = Site::new().rule_setting("account = \"blog\"");
    let out = site.run(&["check"]).expect(2);
    assert!(out.stderr.contains("[api] key"), "{out}");
}

#[test]
fn metrics_carry_the_account_name() {
    let addr = free_addr();
    let site = two_accounts()
        .fast_watch("100ms")
        .setting(Table::Metrics, &format!("listen = \"{addr}\""));
    let daemon = site.watch();
    std::fs::write(site.at("shop/s.jpg"), b"2").unwrap();
    // The owed gauge is set after the flush that counts the send: wait
    // for both, whatever order a loaded machine shows them in.
    let shop = [
        "optiwatch_account_assets_invalidated_total{account=\"shop\"} 1",
        "optiwatch_account_assets_owed{account=\"shop\"} 0",
    ];
    wait_until("the shop's series", WAIT, || {
        let body = metrics(&addr);
        shop.iter().all(|line| body.contains(line))
    });
    // Logs name the account the same way.
    daemon.wait_log("account=shop", WAIT);
    assert!(!daemon.log().contains("account= "), "{}", daemon.log());
}

#[test]
fn naming_an_account_keeps_the_token_it_owes() {
    let mut site = Site::with_keys(&[KEY_A, KEY_B])
        .shop(KEY_B)
        .rule_setting("[rules.token]\ncommand = [\"/bin/false\"]");
    std::fs::write(site.at("shop/s.jpg"), b"1").unwrap();
    site.scan(&[]).expect(0);
    std::fs::write(site.at("shop/s.jpg"), b"2").unwrap();
    // Accepted, but its token cannot be published: still owed.
    site.scan(&[]).expect(1);
    site.config.rules = site
        .config
        .rules
        .replace(
            "key_env = \"SHOP_KEY\"\n",
            "key_env = \"SHOP_KEY\"\naccount = \"shop\"\n",
        )
        .replace("command = [\"/bin/false\"]", "file = \"token-b\"");
    site.scan(&[]).expect(0);
    let token = std::fs::read_to_string(site.at("token-b")).unwrap_or_default();
    assert_eq!(
        &token,
        site.api.tokens_issued().last().unwrap(),
        "the shop's token reached its file"
    );
    let status = site.status();
    assert!(
        status["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["name"] != "env:SHOP_KEY"),
        "{status}"
    );

    // Renamed again, from one name to another, with a token owed.
    site.config.rules = site
        .config
        .rules
        .replace("file = \"token-b\"", "command = [\"/bin/false\"]");
    std::fs::write(site.at("shop/s.jpg"), b"3").unwrap();
    site.scan(&[]).expect(1);
    site.config.rules = site
        .config
        .rules
        .replace("account = \"shop\"", "account = \"store\"")
        .replace("command = [\"/bin/false\"]", "file = \"token-b\"");
    site.scan(&[]).expect(0);
    let token = std::fs::read_to_string(site.at("token-b")).unwrap_or_default();
    let last = site.api.tokens_issued().last().cloned().unwrap();
    assert_eq!(token, last, "the renamed account published its token");
}
