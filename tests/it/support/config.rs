//! The config file of a test site, kept as tables of `key = value` lines
//! so a test sets one key without caring where it goes or whether it was
//! set before; or, for tests of the config itself, raw text written as is.

/// A table of the config file (the rules are kept as text: see
/// [`ConfigText::rules`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Table {
    /// Keys before any table (`state`, `invalidate_new`).
    Top,
    Api,
    Watch,
    Token,
    Metrics,
    History,
    /// `[shared]`: the PostgreSQL store of several nodes.
    Shared,
}

#[derive(Debug, Clone, Default)]
pub struct ConfigText {
    top: Vec<String>,
    /// Starts with the fake API's `base_url` and a short `retry_for`.
    api: Vec<String>,
    /// The `[[rules]]` tables as text; tests may replace or extend it.
    pub rules: String,
    watch: Vec<String>,
    token: Vec<String>,
    metrics: Vec<String>,
    history: Vec<String>,
    shared: Vec<String>,
    /// When set, the whole file, written as is.
    raw: Option<String>,
}

impl ConfigText {
    pub fn new(base_url: &str, rules: String) -> ConfigText {
        ConfigText {
            api: vec![
                format!("base_url = \"{base_url}\""),
                "retry_for = \"3s\"".into(),
            ],
            rules,
            ..ConfigText::default()
        }
    }

    /// Sets `line` (`key = value`) in `table`, in place of a line with the
    /// same key.
    pub fn set(&mut self, table: Table, line: &str) {
        let line = line.trim_end().to_string();
        let lines = self.table(table);
        match lines.iter_mut().find(|l| key(l) == key(&line)) {
            Some(old) => *old = line,
            None => lines.push(line),
        }
    }

    /// Removes `key` from `table`.
    pub fn unset(&mut self, table: Table, key_name: &str) {
        self.table(table).retain(|l| key(l) != key_name);
    }

    fn table(&mut self, table: Table) -> &mut Vec<String> {
        match table {
            Table::Top => &mut self.top,
            Table::Api => &mut self.api,
            Table::Watch => &mut self.watch,
            Table::Token => &mut self.token,
            Table::Metrics => &mut self.metrics,
            Table::History => &mut self.history,
            Table::Shared => &mut self.shared,
        }
    }

    /// From now on the file is exactly `text`.
    pub fn raw(&mut self, text: &str) {
        self.raw = Some(text.to_string());
    }

    /// The file's text. The top keys, an empty line and `[api]` come first,
    /// so a test's first `[api]` key is on line 5 when there are no top keys.
    pub fn render(&self) -> String {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let lines = |l: &[String]| l.iter().map(|l| format!("{l}\n")).collect::<String>();
        let mut text = format!(
            "{}\n[api]\n{}\n{}\n",
            lines(&self.top),
            lines(&self.api),
            self.rules
        );
        for (name, table) in [
            ("watch", &self.watch),
            ("token", &self.token),
            ("metrics", &self.metrics),
            ("history", &self.history),
            ("shared", &self.shared),
        ] {
            if !table.is_empty() {
                text.push_str(&format!("[{name}]\n{}", lines(table)));
            }
        }
        text
    }
}

/// The key of a `key = value` line.
fn key(line: &str) -> &str {
    line.split('=').next().unwrap_or("").trim()
}
