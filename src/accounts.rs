//! The Optimole accounts of a config: the `[api]` key's, and one per
//! distinct key of a rule that has its own. Each has an API client, a
//! token publisher (its rules' `[token]` destinations) and the URL
//! prefixes of its rules, which decide the account an owed asset goes to.

use crate::api::Client;
use crate::config::Config;
use crate::publish::Publisher;
use crate::secret::ApiKey;

/// Everything needed to talk to one Optimole account.
#[derive(Debug)]
pub struct Account {
    /// The account's name in the store (`""`: the `[api]` key's).
    pub id: String,
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
    /// Every account of `config`. Every key is read now, so a missing one
    /// is reported before anything is sent.
    pub fn load(config: &Config) -> anyhow::Result<Accounts> {
        config
            .accounts()
            .into_iter()
            .map(|account| {
                Ok(Account {
                    client: Client::new(&config.api, ApiKey::load(&account.key)?)?,
                    publisher: Publisher::new(account.tokens, config.key_env_vars()),
                    prefixes: config
                        .rules
                        .iter()
                        .filter(|r| r.account == account.id)
                        .flat_map(|r| std::iter::once(&r.url).chain(&r.also).cloned())
                        .collect(),
                    id: account.id,
                })
            })
            .collect::<anyhow::Result<Vec<Account>>>()
            .map(Accounts)
    }

    pub fn list(&self) -> &[Account] {
        &self.0
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Account> {
        self.0.iter()
    }

    pub fn get(&self, id: &str) -> Option<&Account> {
        self.0.iter().find(|a| a.id == id)
    }

    /// The `[api]` key's account (`invalidate --domain` and `--all` go
    /// there).
    pub fn api_account(&self) -> Option<&Account> {
        self.get("")
    }

    pub fn ids(&self) -> Vec<&str> {
        self.0.iter().map(|a| a.id.as_str()).collect()
    }

    /// HTTP requests sent so far, retries included, over every account.
    pub fn requests(&self) -> u32 {
        self.0.iter().map(|a| a.client.requests()).sum()
    }

    /// The account of the rule serving `asset` (its longest matching
    /// prefix); `None` for an asset no rule serves, or one two accounts
    /// serve alike.
    pub fn serving(&self, asset: &str) -> Option<&str> {
        let mut best: Option<(usize, &str)> = None;
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
                        tied |= id != account.id;
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
