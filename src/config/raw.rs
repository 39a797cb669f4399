//! The TOML schema as written: every table and key a config file may hold,
//! each value checked as it is parsed (see `values`). `Config::parse` turns
//! this into the resolved [`super::Config`].

use serde::Deserialize;
use toml::Spanned;

use super::values::limits::{DAY, HOUR, YEAR};
use super::values::{ApiBase, Argv, BatchSize, HumanDuration, ListenAddr, Pattern, SitePrefix};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) state: Option<String>,
    #[serde(default)]
    pub(super) invalidate_new: bool,
    #[serde(default)]
    pub(super) api: RawApi,
    pub(super) rules: Option<Vec<Spanned<RawRule>>>,
    #[serde(default)]
    pub(super) token: RawToken,
    #[serde(default)]
    pub(super) watch: RawWatch,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    pub(super) shared: Option<super::shared::RawShared>,
    #[serde(default)]
    pub(super) history: RawHistory,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHistory {
    pub(super) keep: Option<HumanDuration<{ 10 * YEAR }>>,
    pub(super) max_rows: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<ListenAddr>,
    pub(super) max_owed_age: Option<HumanDuration<YEAR>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWatch {
    pub(super) debounce: Option<HumanDuration<HOUR>>,
    pub(super) token_interval: Option<HumanDuration<DAY>>,
    pub(super) poll: Option<bool>,
    pub(super) poll_interval: Option<Spanned<HumanDuration<DAY>>>,
    pub(super) event_queue: Option<Spanned<usize>>,
    pub(super) max_backoff: Option<HumanDuration<DAY>>,
    pub(super) control: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub(super) base_url: Option<ApiBase>,
    pub(super) key_env: Option<Spanned<String>>,
    pub(super) key_file: Option<Spanned<String>>,
    pub(super) key_credential: Option<Spanned<String>>,
    pub(super) batch_size: Option<BatchSize>,
    pub(super) timeout: Option<HumanDuration<HOUR>>,
    pub(super) retry_for: Option<HumanDuration<DAY>>,
    pub(super) domain_threshold: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) dir: String,
    pub(super) url: SitePrefix,
    #[serde(default)]
    pub(super) also: Vec<SitePrefix>,
    pub(super) include: Option<Vec<Pattern>>,
    #[serde(default)]
    pub(super) exclude: Vec<Pattern>,
    /// Only `false` is accepted now (see `Config::parse`).
    pub(super) follow_symlinks: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) allow_outside: Vec<String>,
    pub(super) key_env: Option<Spanned<String>>,
    pub(super) key_file: Option<Spanned<String>>,
    pub(super) key_credential: Option<Spanned<String>>,
    /// The name of the rule's own key's account.
    pub(super) account: Option<String>,
    pub(super) token: Option<RawToken>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub(super) file: Option<String>,
    pub(super) command: Option<Argv>,
    pub(super) command_timeout: Option<HumanDuration<DAY>>,
}
