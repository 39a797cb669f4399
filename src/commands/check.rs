//! `optiwatch check`: everything that can be verified before a run — the
//! config (already parsed strictly by then), the rule folders, the key, the
//! store and the token destinations — and with `--online` one harmless
//! authenticated request.

use std::os::unix::fs::PermissionsExt;

use clap::Args;
use serde::Serialize;

use super::JsonArg;

use crate::api::Client;
use crate::config::{Config, KeySource};
use crate::display::show_path;
use crate::exit_codes::ExitCode;
use crate::retry::{retry, RetryPolicy};
use crate::secret::ApiKey;
use crate::session::{Access, Session};
use crate::state::{lock_holder, OutdatedStore};

#[derive(Debug, Serialize)]
pub struct Finding {
    pub ok: bool,
    pub what: String,
    pub detail: String,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also make one harmless authenticated request (see README)
    #[arg(long)]
    pub online: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Runs every check; exit 1 when any is not ok.
pub async fn run(config: &Config, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let findings = check(config, &args).await;
    let failed: Vec<String> = findings
        .iter()
        .filter(|f| !f.ok)
        .map(|f| f.detail.clone())
        .collect();
    let body = CheckReport {
        ok: failed.is_empty(),
        findings: &findings,
    };
    super::emit(args.json.json, &body, || human(&findings), &failed)
}

/// The `--json` object: `ok` when every finding is.
#[derive(Serialize)]
struct CheckReport<'a> {
    ok: bool,
    findings: &'a [Finding],
}

async fn check(config: &Config, args: &CheckArgs) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut note = |ok: bool, what: &str, detail: String| {
        out.push(Finding {
            ok,
            what: what.into(),
            detail,
        })
    };
    note(
        true,
        "config",
        format!("{} is valid", show_path(&config.path)),
    );
    for (i, rule) in config.rules.iter().enumerate() {
        let what = format!("rule {}", i + 1);
        match std::fs::read_dir(&rule.dir) {
            Ok(_) => note(
                true,
                &what,
                match crate::links::resolved_dir(&rule.dir) {
                    Some(real) => format!(
                        "{} -> {} is a readable folder",
                        show_path(&rule.dir),
                        show_path(&real)
                    ),
                    None => format!("{} is a readable folder", show_path(&rule.dir)),
                },
            ),
            Err(e) => note(
                false,
                &what,
                format!(
                    "{}: {e}: fix `dir` or mount the folder",
                    show_path(&rule.dir)
                ),
            ),
        }
    }
    let key = ApiKey::load(&config.api.key);
    match (&key, &config.api.key) {
        (Err(e), _) => note(false, "api key", e.to_string()),
        (Ok(_), KeySource::Env(var)) => note(
            true,
            "api key",
            format!("read from environment variable {var}"),
        ),
        (Ok(_), KeySource::Credential(name)) => note(
            true,
            "api key",
            format!("read from systemd credential {name}"),
        ),
        (Ok(_), KeySource::File(path)) => {
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            if mode & 0o077 != 0 {
                note(
                    false,
                    "api key",
                    format!(
                        "{} is readable by other users (mode {mode:o}): chmod 600 it",
                        show_path(path)
                    ),
                );
            } else {
                note(
                    true,
                    "api key",
                    format!("read from {} (mode {mode:o})", show_path(path)),
                );
            }
        }
    }
    let session = Session::open(config, Access::ReadOnly);
    let files = session
        .as_ref()
        .map(|s| s.store().map(|store| store.file_count()));
    let user = || lock_holder(&config.state).map_or(String::new(), |h| format!("; in use by {h}"));
    match files {
        Ok(Some(Ok(files))) => note(
            true,
            "state store",
            format!("{} holds {files} files{}", show_path(&config.state), user()),
        ),
        Ok(Some(Err(e))) => note(false, "state store", format!("{e:#}")),
        // Written by an older optiwatch: the next scan upgrades it.
        Err(e) if e.chain().any(|c| c.is::<OutdatedStore>()) => note(
            true,
            "state store",
            format!(
                "{} was written by an older optiwatch; the next `scan` or `watch` upgrades it{}",
                show_path(&config.state),
                user()
            ),
        ),
        Err(e) => note(false, "state store", format!("{e:#}")),
        Ok(None) => {
            let folder = config.state.parent().filter(|p| p.is_dir());
            note(
                folder.is_some(),
                "state store",
                match folder {
                    Some(_) => format!(
                        "{} will be created by the first scan",
                        show_path(&config.state)
                    ),
                    None => format!(
                        "the folder of {} does not exist: create it",
                        show_path(&config.state)
                    ),
                },
            );
        }
    }
    if let Some(argv) = &config.token.command {
        let found = which(&argv[0]);
        note(
            found.is_some(),
            "token command",
            match found {
                Some(path) => format!("{} found at {}", argv[0], show_path(&path)),
                None => format!("{:?} is not an executable file nor on PATH", argv[0]),
            },
        );
    }
    // What the run writes, tried as this user.
    out.extend(super::probe::state(config));
    out.extend(super::probe::token_files(config));
    let mut rule_keys = Vec::new();
    for (i, rule) in config.rules.iter().enumerate() {
        let Some(source) = &rule.key else { continue };
        if rule_keys.iter().any(|(_, s, _)| *s == source) {
            continue;
        }
        let what = format!("rule {} key", i + 1);
        match ApiKey::load(source) {
            Ok(key) => {
                out.push(Finding {
                    ok: true,
                    what,
                    detail: format!("[[rules]] #{} key: read from {}", i + 1, source.id()),
                });
                rule_keys.push((i, source, Some(key)));
            }
            Err(e) => {
                out.push(Finding {
                    ok: false,
                    what,
                    detail: format!("[[rules]] #{}: {e}", i + 1),
                });
                rule_keys.push((i, source, None));
            }
        }
    }
    if args.online {
        // The [api] account answers for the rules without a key of their own.
        let api_url = config
            .rules
            .iter()
            .find(|r| r.key.is_none())
            .unwrap_or(&config.rules[0])
            .url
            .clone();
        let finding = match key {
            Ok(key) => match online_check(config, key, &api_url).await {
                Ok(detail) => (true, detail),
                Err(e) => (false, format!("[api] key: {e}")),
            },
            Err(_) => (false, "skipped: no API key".into()),
        };
        out.push(Finding {
            ok: finding.0,
            what: "online".into(),
            detail: finding.1,
        });
        for (i, source, key) in rule_keys {
            let (ok, detail) = match key {
                Some(key) => match online_check(config, key, &config.rules[i].url).await {
                    Ok(detail) => (true, format!("[[rules]] #{} key: {detail}", i + 1)),
                    Err(e) => (
                        false,
                        format!("[[rules]] #{} key ({}): {e}", i + 1, source.id()),
                    ),
                },
                None => (false, format!("[[rules]] #{}: skipped: no API key", i + 1)),
            };
            out.push(Finding {
                ok,
                what: format!("online rule {}", i + 1),
                detail,
            });
        }
    }
    out
}

/// One invalidation of a URL that cannot be cached (a name no file has), so
/// it proves the key and base_url work while invalidating nothing.
async fn online_check(config: &Config, key: ApiKey, url: &str) -> Result<String, String> {
    let client = Client::new(&config.api, key).map_err(|e| e.to_string())?;
    let probe = format!("{url}/.optiwatch-check-{}", std::process::id());
    match retry(RetryPolicy::bounded(config.api.timeout), "check", || {
        client.invalidate_assets(std::slice::from_ref(&probe))
    })
    .await
    {
        Ok(()) => Ok(format!(
            "{} accepted an invalidation of {probe}",
            config.api.base_url
        )),
        // Refusing the probe by name still proves the key and the URL.
        Err(crate::api::ApiError::Refused { message, .. }) => Ok(format!(
            "{} answered for the key and refused the probe {probe}: {message}",
            config.api.base_url
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = std::path::PathBuf::from(program);
        return executable(&path).then_some(path);
    }
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|p| executable(p))
}

fn human(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            format!(
                "{}  {:<14} {}\n",
                if f.ok { "ok  " } else { "FAIL" },
                f.what,
                f.detail
            )
        })
        .collect()
}
