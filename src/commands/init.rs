//! `optiwatch init [DIR]`: writes a commented config for one media folder
//! or WordPress install, so an operator starts from a config that `check`
//! accepts instead of editing the example by hand. It never overwrites a
//! file and never asks: what it cannot find out (the site URL without
//! WP-CLI) must come as a flag.

mod template;
mod wordpress;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::config::lookup::{LOCAL_CONFIG, SYSTEM_CONFIG};
use crate::display::{from_cwd, show_path};
use crate::exit_codes::{ExitCode, UsageError};
use template::{KeyLine, Plan};
use wordpress::WordPress;

/// Where a `--system` install keeps its store and token (the unit's
/// StateDirectory, writable by the service, readable by the site).
const SYSTEM_STATE: &str = "/var/lib/optiwatch/optiwatch.db";
const SYSTEM_TOKEN: &str = "/var/lib/optiwatch/optimole-token";
/// The credential the systemd unit hands over (LoadCredential=).
const SYSTEM_CREDENTIAL: &str = "optimole-key";

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The media folder, a WordPress root (holds wp-config.php) or its wp-content/uploads
    #[arg(value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Public URL of DIR; for WordPress the site URL (/wp-content/uploads is added), else asked of WP-CLI
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Where to write the config [default: ./watcher.toml; /etc/optiwatch/watcher.toml with --system]
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// For the systemd unit: /etc/optiwatch/watcher.toml, store and token in /var/lib/optiwatch, key as credential
    #[arg(long)]
    pub system: bool,
    /// The state store [default: optiwatch.db beside the config; /var/lib/optiwatch/optiwatch.db with --system]
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Read the API key from this file (chmod 600) instead of $OPTIMOLE_API_KEY or the credential
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// WordPress: copy the must-use plugin that hands the token to Optimole into wp-content/mu-plugins
    #[arg(long)]
    pub install_mu_plugin: bool,
}

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let output = match (&args.output, args.system) {
        (Some(out), _) => from_cwd(out)?,
        (None, true) => PathBuf::from(SYSTEM_CONFIG),
        (None, false) => from_cwd(LOCAL_CONFIG)?,
    };
    if std::fs::symlink_metadata(&output).is_ok() {
        return Err(UsageError(format!(
            "{} exists: remove it or pass --output FILE (init never overwrites a config)",
            show_path(&output)
        ))
        .into());
    }
    let dir = from_cwd(&args.dir)?;
    let dir = std::fs::canonicalize(&dir)
        .ok()
        .filter(|d| d.is_dir())
        .ok_or_else(|| UsageError(format!("{} is not a folder", show_path(&dir))))?;
    let wp = WordPress::find(&dir);
    let mut notes = Vec::new();
    let plan = plan(&args, &dir, wp.as_ref(), &mut notes)?;
    let text = template::render(&plan)?;
    // Proves the text is a config `check` accepts before anything is written.
    crate::config::Config::parse(&text, &output).map_err(|e| {
        UsageError(format!(
            "the config for {} would be refused: {e}; pick another --output or --state",
            show_path(&dir)
        ))
    })?;
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", show_path(parent)))?;
    }
    write_new(&output, &text)?;
    println!("wrote {}", show_path(&output));
    if let Some(wp) = &wp {
        if args.install_mu_plugin {
            notes.push(wp.install_mu_plugin()?);
        } else {
            notes.push(format!(
                "the must-use plugin that hands the token to the Optimole plugin is not \
                 installed: copy examples/wordpress/{} into {}/ (or remove {} and run init \
                 again with --install-mu-plugin)",
                wordpress::MU_PLUGIN_NAME,
                show_path(&wp.content().join("mu-plugins")),
                show_path(&output)
            ));
        }
    }
    for note in notes {
        println!("note: {note}");
    }
    print!("{}", next_steps(&args, &output));
    Ok(ExitCode::Success)
}

/// Everything the config will say, decided from the flags and the folder.
fn plan(
    args: &InitArgs,
    dir: &Path,
    wp: Option<&WordPress>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Plan> {
    let (rule_dir, url) = match wp {
        Some(wp) => {
            let uploads = wp.uploads();
            if !uploads.is_dir() {
                return Err(UsageError(format!(
                    "WordPress at {} has no uploads folder {}: create it (upload one image) \
                     or point init at the media folder",
                    show_path(&wp.root),
                    show_path(&uploads)
                ))
                .into());
            }
            let cannot = |why: String| {
                UsageError(format!(
                    "cannot learn the site URL of the WordPress at {}: {why}; \
                     pass it with --url https://example.com",
                    show_path(&wp.root)
                ))
            };
            let site = match &args.url {
                Some(url) => flag_url(url)?,
                // The answer is WP-CLI's: its faults are not --url's.
                None => site_url(&wp.home_url().map_err(cannot)?)
                    .map_err(|e| cannot(format!("WP-CLI's `home` option is not usable: {e}")))?,
            };
            notes.push(format!("WordPress at {}, site {site}", show_path(&wp.root)));
            (uploads, format!("{site}/wp-content/uploads"))
        }
        None => {
            let url = args.url.as_deref().ok_or_else(|| {
                UsageError(format!(
                    "{} is not a WordPress install (no wp-config.php): pass the public URL \
                     of the folder with --url https://example.com/media",
                    show_path(dir)
                ))
            })?;
            (dir.to_path_buf(), flag_url(url)?)
        }
    };
    let state = match (&args.state, args.system) {
        (Some(state), _) => Some(from_cwd(state)?),
        (None, true) => Some(PathBuf::from(SYSTEM_STATE)),
        (None, false) => None,
    };
    let key = match (&args.key_file, args.system) {
        (Some(file), _) => KeyLine::File(from_cwd(file)?),
        (None, true) => KeyLine::Credential(SYSTEM_CREDENTIAL),
        (None, false) => KeyLine::Env,
    };
    let token = match (wp, args.system) {
        (Some(_), true) => {
            notes.push(format!(
                "the unit may only write in /var/lib/optiwatch: add \
                 define('OPTIWATCH_TOKEN_FILE', '{SYSTEM_TOKEN}'); to wp-config.php \
                 so the must-use plugin reads the token there"
            ));
            Some(PathBuf::from(SYSTEM_TOKEN))
        }
        (Some(wp), false) => Some(wp.content().join(wordpress::TOKEN_NAME)),
        (None, _) => {
            notes.push(
                "no [token] file: the token is only printed; set [token] file or command \
                 in the config to hand it to the site (README, \"After invalidating\")"
                    .into(),
            );
            None
        }
    };
    Ok(Plan {
        rule_dir,
        url,
        state,
        key,
        token,
        wordpress: wp.is_some(),
    })
}

/// `--url`, checked by [`site_url`].
fn flag_url(text: &str) -> Result<String, UsageError> {
    site_url(text)
        .map_err(|why| UsageError(format!("--url: {why}; e.g. --url https://example.com")))
}

/// An http(s) URL without credentials, query or trailing slash, or why
/// not (never echoing the text: it may hold a password).
fn site_url(text: &str) -> Result<String, String> {
    let bad = |why: &str| why.to_string();
    let url = url::Url::parse(text.trim()).map_err(|e| bad(&format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("only http:// and https:// URLs are served"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "a user name or password would reach Optimole in every asset URL",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("no query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Creates `path`; an existing file is never replaced.
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::Error::new(UsageError(format!(
                "{} exists: remove it or pass --output FILE",
                show_path(path)
            ))),
            _ => anyhow::Error::new(e).context(format!("cannot write {}", show_path(path))),
        })?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", show_path(path)))
}

/// The three commands that follow init.
fn next_steps(args: &InitArgs, output: &Path) -> String {
    let config = match args.output.is_none() {
        true => String::new(),
        false => format!("--config {} ", show_path(output)),
    };
    if args.system {
        let run = "systemd-run --pipe --wait --quiet -p User=optiwatch \
                   -p LoadCredential=optimole-key:/etc/optiwatch/key optiwatch";
        format!(
            "next (put the Root API key in /etc/optiwatch/key first, chmod 600):\n  \
             {run} {config}check --online   # as the service user, with its key\n  \
             {run} {config}scan             # first run = baseline: invalidates nothing\n  \
             systemctl enable --now optiwatch\n"
        )
    } else {
        format!(
            "next (set OPTIMOLE_API_KEY, or the key file the config names):\n  \
             optiwatch {config}check --online   # config, folders, key, store, one harmless request\n  \
             optiwatch {config}scan             # first run = baseline: invalidates nothing\n  \
             systemctl enable --now optiwatch   # the unit reads {SYSTEM_CONFIG}: write it with `init --system`\n"
        )
    }
}
