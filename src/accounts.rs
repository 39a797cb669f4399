//! The Optimole accounts of a config: the `[api]` key's (the default
//! account), and one per distinct key of a rule that has its own. Each has
//! an API client, a token publisher (its rules' `[token]` destinations) and
//! the URL prefixes of its rules, which decide the account an owed asset
//! goes to. Assets, tokens and refusals are kept per account in the store.

use std::fmt;

use crate::api::Client;
use crate::config::{Config, KeySource, RuleConfig, TokenConfig};
use crate::publish::Publisher;
use crate::secret::ApiKey;

/// Which Optimole account, by its name: the `[api]` key's is `default`;
/// the one behind a rule's own key is named by the rule's `account` key,
/// or else by where that key comes from (`env:VAR`, `file:PATH`,
/// `credential:NAME`), so the name stays the same across runs. Logs,
/// `status`, `history`, metrics and `--json` all use this name; only the
/// store keeps the default account as `''` (what stores written before
/// per-rule keys hold).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccountId {
    /// The `[api]` key's account.
    Default,
    /// The account of a rule's own key.
    Key(String),
}

impl AccountId {
    /// The account of a rule: its own key's (named by its `account` key,
    /// or by the key's source), or the `[api]` one.
    pub fn of_rule(rule: &RuleConfig) -> AccountId {
        match (&rule.key, &rule.account) {
            (None, _) => AccountId::Default,
            (Some(_), Some(name)) => AccountId::Key(name.clone()),
            (Some(source), None) => AccountId::Key(source.id()),
        }
    }

    /// The account a user names (`default` for the `[api]` key's).
    pub fn named(name: &str) -> AccountId {
        match name {
            DEFAULT_NAME => AccountId::Default,
            other => AccountId::Key(other.to_string()),
        }
    }

    /// As the store keeps it: `""` for the default
    /// account (what stores written before per-rule keys hold).
    pub fn stored(&self) -> &str {
        match self {
            AccountId::Default => "",
            AccountId::Key(name) => name,
        }
    }

    /// The account a stored name means.
    pub fn from_stored(name: String) -> AccountId {
        match name.is_empty() {
            true => AccountId::Default,
            false => AccountId::Key(name),
        }
    }
}

/// The name of the `[api]` key's account.
pub const DEFAULT_NAME: &str = "default";

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountId::Default => f.write_str(DEFAULT_NAME),
            AccountId::Key(name) => f.write_str(name),
        }
    }
}

/// As a user sees it: the name (`default` for the `[api]` key's).
impl serde::Serialize for AccountId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Checks the account names of a config's rules (after rule keys equal
/// to the `[api]` key were dropped): a rule on the `[api]` key may only
/// name it `default`; one key has one name; two keys never share one.
/// Returns the message of the first conflict.
pub fn check_names(rules: &[RuleConfig]) -> Result<(), String> {
    let mut seen: Vec<(String, &KeySource)> = Vec::new();
    for rule in rules {
        let name = rule.account.as_deref();
        let Some(key) = &rule.key else {
            if let Some(name) = name.filter(|n| *n != DEFAULT_NAME) {
                return Err(format!(
                    "rules.account = {name:?} on the rule for {}: that rule uses the [api] key, whose account is \"{DEFAULT_NAME}\"; remove `account` or give the rule its own key",
                    rule.dir.display()
                ));
            }
            continue;
        };
        let id = AccountId::of_rule(rule).to_string();
        if id == DEFAULT_NAME || id.is_empty() {
            return Err(format!(
                "rules.account = {id:?} on the rule for {}: \"{DEFAULT_NAME}\" is the [api] key's account and a name cannot be empty; choose another name",
                rule.dir.display()
            ));
        }
        for (known, known_key) in &seen {
            if *known_key == key && *known != id {
                return Err(format!(
                    "the rules for {} use the same key ({}) under two account names ({known:?} and {id:?}): one key is one account; give them the same `account`",
                    rule.dir.display(),
                    key.id()
                ));
            }
            if *known == id && *known_key != key {
                return Err(format!(
                    "account {id:?} names two different keys ({} and {}): give each key its own `account` name (rule for {})",
                    known_key.id(),
                    key.id(),
                    rule.dir.display()
                ));
            }
        }
        seen.push((id, key));
    }
    Ok(())
}

/// Everything needed to talk to one Optimole account.
#[derive(Debug)]
pub struct Account {
    pub id: AccountId,
    /// Where its key comes from (`KeySource::id`): the name it had
    /// before it was given one.
    pub source: String,
    pub client: Client,
    pub publisher: Publisher,
    /// URL prefixes (`url` and `also`) of the rules whose assets this
    /// account is owed.
    pub prefixes: Vec<String>,
}

/// The accounts of a config, the `[api]` one first.
#[derive(Debug, Default)]
pub struct Accounts(Vec<Account>);

impl Accounts {
    /// Every account of `config`, the `[api]` one first. Every key is read
    /// now, so a missing one is reported before anything is sent.
    pub fn load(config: &Config) -> anyhow::Result<Accounts> {
        specs(config)
            .into_iter()
            .map(|(id, key, tokens)| {
                Ok(Account {
                    source: key.id(),
                    client: Client::new(&config.api, ApiKey::load(&key)?)?,
                    publisher: Publisher::new(tokens, config.key_env_vars()),
                    prefixes: config
                        .rules
                        .iter()
                        .filter(|r| AccountId::of_rule(r) == id)
                        .flat_map(|r| std::iter::once(&r.url).chain(&r.also).cloned())
                        .collect(),
                    id,
                })
            })
            .collect::<anyhow::Result<Vec<Account>>>()
            .map(Accounts)
    }

    /// Every account of `config`, the `[api]` one first, without reading
    /// a key (for read-only commands).
    pub fn ids_of(config: &Config) -> Vec<AccountId> {
        specs(config).into_iter().map(|(id, _, _)| id).collect()
    }

    pub fn list(&self) -> &[Account] {
        &self.0
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Account> {
        self.0.iter()
    }

    pub fn get(&self, id: &AccountId) -> Option<&Account> {
        self.0.iter().find(|a| a.id == *id)
    }

    /// The `[api]` key's account.
    pub fn api_account(&self) -> Option<&Account> {
        self.get(&AccountId::Default)
    }

    /// The account a user names (`--account NAME`); the error lists the
    /// known names.
    pub fn by_name(&self, name: &str) -> Result<&Account, String> {
        self.get(&AccountId::named(name)).ok_or_else(|| {
            let known: Vec<String> = self.0.iter().map(|a| a.id.to_string()).collect();
            format!(
                "no account named {name:?}: the config's accounts are {}",
                known.join(", ")
            )
        })
    }

    /// The account that takes over work owed under `old`, a name no
    /// account has now: the one using the key `old` had (`source`, as the
    /// store remembered it), or whose key `old` named before the account
    /// got its `account` name.
    pub fn heir(&self, old: &AccountId, source: Option<&str>) -> Option<AccountId> {
        let AccountId::Key(old) = old else {
            return None;
        };
        let source = source.unwrap_or(old);
        self.0
            .iter()
            .find(|a| a.id != AccountId::Default && a.source == source)
            .map(|a| a.id.clone())
    }

    pub fn ids(&self) -> Vec<&AccountId> {
        self.0.iter().map(|a| &a.id).collect()
    }

    /// HTTP requests sent so far, retries included, over every account.
    pub fn requests(&self) -> u32 {
        self.0.iter().map(|a| a.client.requests()).sum()
    }

    /// The account of the rule serving `asset` (its longest matching
    /// prefix); `None` for an asset no rule serves, or one two accounts
    /// serve alike.
    pub fn serving(&self, asset: &str) -> Option<&AccountId> {
        let mut best: Option<(usize, &AccountId)> = None;
        let mut tied = false;
        for account in &self.0 {
            for prefix in &account.prefixes {
                let serves = asset
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('/'));
                if !serves {
                    continue;
                }
                match best {
                    Some((len, id)) if len == prefix.len() => {
                        tied |= *id != account.id;
                    }
                    Some((len, _)) if len > prefix.len() => {}
                    _ => {
                        best = Some((prefix.len(), &account.id));
                        tied = false;
                    }
                }
            }
        }
        best.filter(|_| !tied).map(|(_, id)| id)
    }
}

impl<'a> IntoIterator for &'a Accounts {
    type Item = &'a Account;
    type IntoIter = std::slice::Iter<'a, Account>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Each account's id, key and token destinations: the `[api]` one first,
/// then those of rules with their own key, each listing its rules' token
/// destinations (a rule without `[rules.token]` uses the global `[token]`).
fn specs(config: &Config) -> Vec<(AccountId, KeySource, Vec<TokenConfig>)> {
    let mut specs = vec![(AccountId::Default, config.api.key.clone(), Vec::new())];
    for rule in &config.rules {
        let id = AccountId::of_rule(rule);
        let index = match specs.iter().position(|(known, _, _)| *known == id) {
            Some(i) => i,
            None => {
                let key = rule.key.clone().unwrap_or_else(|| config.api.key.clone());
                specs.push((id, key, Vec::new()));
                specs.len() - 1
            }
        };
        let token = rule.token.clone().unwrap_or_else(|| config.token.clone());
        if !specs[index].2.contains(&token) {
            specs[index].2.push(token);
        }
    }
    if specs[0].2.is_empty() {
        specs[0].2.push(config.token.clone());
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, std::path::Path::new("/etc/optiwatch/watcher.toml")).unwrap()
    }

    #[test]
    fn a_rule_key_equal_to_the_api_key_is_the_default_account() {
        let config = config(
            "[[rules]]\ndir = \"/a\"\nurl = \"https://a.example/m\"\nkey_env = \"OPTIMOLE_API_KEY\"\n\
             [[rules]]\ndir = \"/b\"\nurl = \"https://b.example/m\"\nkey_env = \"SHOP_KEY\"\n\
             [rules.token]\nfile = \"/b/token\"\n",
        );
        let specs = specs(&config);
        let ids: Vec<&AccountId> = specs.iter().map(|(id, _, _)| id).collect();
        assert_eq!(
            ids,
            [&AccountId::Default, &AccountId::Key("env:SHOP_KEY".into())]
        );
        assert_eq!(specs[1].2.len(), 1, "the shop's own token file");
        assert_eq!(AccountId::Default.to_string(), "default");
        assert_eq!(AccountId::Default.stored(), "");
        assert_eq!(AccountId::from_stored(String::new()), AccountId::Default);
    }

    #[test]
    fn one_key_one_name_and_default_is_the_api_keys() {
        let rule = |dir: &str, key: &str, name: Option<&str>| {
            format!(
                "[[rules]]\ndir = \"/{dir}\"\nurl = \"https://{dir}.example/m\"\nkey_env = \"{key}\"\n{}",
                name.map(|n| format!("account = \"{n}\"\n")).unwrap_or_default()
            )
        };
        let parse = |text: String| {
            Config::parse(&text, std::path::Path::new("/etc/optiwatch/watcher.toml"))
        };
        let ok = parse(rule("a", "A", Some("shop")) + &rule("b", "A", Some("shop"))).unwrap();
        assert_eq!(
            AccountId::of_rule(&ok.rules[1]),
            AccountId::Key("shop".into())
        );
        let unnamed = parse(rule("a", "A", None)).unwrap();
        assert_eq!(AccountId::of_rule(&unnamed.rules[0]).to_string(), "env:A");
        for bad in [
            rule("a", "A", Some("shop")) + &rule("b", "A", Some("store")),
            rule("a", "A", Some("shop")) + &rule("b", "B", Some("shop")),
            rule("a", "A", Some("default")),
            rule("a", "OPTIMOLE_API_KEY", Some("blog")),
            rule("a", "A", None) + &rule("b", "B", Some("env:A")),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
        assert!(parse(rule("a", "OPTIMOLE_API_KEY", Some("default"))).is_ok());
    }

    #[test]
    fn the_shipped_example_has_one_account() {
        let text = include_str!("../watcher.example.toml");
        assert_eq!(specs(&config(text)).len(), 1);
    }
}
