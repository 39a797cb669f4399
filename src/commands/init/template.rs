//! The config `optiwatch init` writes: the keys it decided, each with the
//! comment watcher.example.toml gives it, and the optional tables left as
//! comments so the file stays short and `check` accepts it as written.

use std::path::{Path, PathBuf};

use crate::exit_codes::UsageError;

/// Where the API key comes from.
#[derive(Debug)]
pub enum KeyLine {
    Env,
    File(PathBuf),
    Credential(&'static str),
}

/// What init decided.
#[derive(Debug)]
pub struct Plan {
    pub rule_dir: PathBuf,
    pub url: String,
    /// `None`: the default, optiwatch.db beside the config.
    pub state: Option<PathBuf>,
    pub key: KeyLine,
    pub token: Option<PathBuf>,
    pub wordpress: bool,
}

/// A TOML string holding `text`.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn quote_path(path: &Path) -> Result<String, UsageError> {
    path.to_str().map(quote).ok_or_else(|| {
        UsageError(format!(
            "{} is not valid UTF-8: a config file cannot name it; pick another path",
            crate::display::show_path(path)
        ))
    })
}

pub fn render(plan: &Plan) -> Result<String, UsageError> {
    let state = match &plan.state {
        Some(path) => quote_path(path)?,
        None => quote("optiwatch.db"),
    };
    let key = match &plan.key {
        KeyLine::Env => "key_env = \"OPTIMOLE_API_KEY\"".to_string(),
        KeyLine::File(path) => format!("key_file = {}", quote_path(path)?),
        KeyLine::Credential(name) => format!("key_credential = {}", quote(name)),
    };
    let token = match &plan.token {
        Some(path) => format!(
            "[token]\n\
             # Written atomically (temp file + rename); contains only the token.{}\n\
             file = {}\n",
            match plan.wordpress {
                true =>
                    "\n# The must-use plugin (examples/wordpress/optiwatch-token.php) reads it\n\
                         # and puts the token into the Optimole plugin's `cb:` image property.",
                false => "",
            },
            quote_path(path)?
        ),
        None => "# [token]\n\
                 # Written atomically (temp file + rename); contains only the token.\n\
                 # file = \"/var/www/html/optimole-token\"\n\
                 # Run without a shell; \"{token}\" inside an item is replaced.\n\
                 # command = [\"/usr/local/bin/publish-token\", \"{token}\"]\n"
            .to_string(),
    };
    Ok(format!(
        "# optiwatch configuration, written by `optiwatch init`. Every key with its\n\
         # default and a comment: watcher.example.toml. Relative paths are relative\n\
         # to the folder of this file. Unknown keys are errors.\n\
         \n\
         # The state store (SQLite): file hashes and the outbox of assets still owed\n\
         # to Optimole. Keep it on a local disk; one store per optiwatch process.\n\
         # Its folder must be writable by the user optiwatch runs as (`check` tries).\n\
         state = {state}\n\
         \n\
         [api]\n\
         # Where the Root API key is read from: an environment variable (key_env),\n\
         # a file (key_file, chmod 600) or a systemd credential (key_credential:\n\
         # LoadCredential=optimole-key:/etc/optiwatch/key in the unit). One of them.\n\
         {key}\n\
         \n\
         # One [[rules]] table per media folder. A file's URL is `url` + \"/\" + its\n\
         # path relative to `dir`, each segment percent-encoded.\n\
         [[rules]]\n\
         dir = {dir}\n\
         url = {url}\n\
         # Other prefixes the same files are served under; each is invalidated too.\n\
         # also = [\"https://www.example.com/wp-content/uploads\"]\n\
         # Globs, case-insensitive. Default include: jpg jpeg png gif webp avif svg\n\
         # ico bmp tif tiff.\n\
         # exclude = [\"**/cache/**\"]\n\
         \n\
         # Where a fresh cache token goes after images were invalidated. Without it\n\
         # the token is only printed.\n\
         {token}\
         \n\
         # `optiwatch watch` (the daemon); all optional, see watcher.example.toml.\n\
         # [watch]\n\
         # debounce = \"500ms\"\n\
         # token_interval = \"60s\"\n\
         \n\
         # Prometheus metrics at /metrics and a health check at /healthz.\n\
         # [metrics]\n\
         # listen = \"127.0.0.1:9464\"\n",
        dir = quote_path(&plan.rule_dir)?,
        url = quote(&plan.url),
    ))
}
