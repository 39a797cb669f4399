//! The one man page, `optiwatch(1)`: the top-level synopsis and global
//! options that clap_mangen renders, every command (each with its own
//! synopsis and options) as a subsection of COMMANDS, and the hand-written
//! FILES, ENVIRONMENT, EXIT STATUS and SEE ALSO sections.
//!
//! Commands come from the clap definitions at run time, so a command added
//! to the CLI shows up here without a change; there are no per-command pages
//! to point at (clap_mangen's own SUBCOMMANDS section names
//! `optiwatch-scan(1)` and the like, which nothing installs).

use std::io::Write;

use clap::Command;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

/// Writes the whole page as roff.
pub fn render(cli: Command, out: &mut dyn Write) -> std::io::Result<()> {
    let mut page = Vec::new();
    render_parts(cli, &mut page)?;
    // Every part rendered on its own starts with the roff crate's
    // apostrophe definitions; the page needs them once, at the top.
    let preamble = Roff::new().render();
    let page = String::from_utf8_lossy(&page).replace(&preamble, "");
    out.write_all(preamble.as_bytes())?;
    out.write_all(page.as_bytes())
}

fn render_parts(cli: Command, out: &mut dyn Write) -> std::io::Result<()> {
    let mut top = cli;
    top.build();
    let man = Man::new(top.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    section(DESCRIPTION).to_writer(out)?;
    man.render_options_section(out)?;

    Roff::new().control("SH", ["COMMANDS"]).to_writer(out)?;
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        command(sub, out)?;
    }

    for part in [FILES, ENVIRONMENT, EXIT_STATUS, SEE_ALSO] {
        section(part).to_writer(out)?;
    }
    man.render_version_section(out)
}

/// One command as a `.SS` subsection: synopsis, description, own options.
fn command(sub: &Command, out: &mut dyn Write) -> std::io::Result<()> {
    let name = format!("optiwatch {}", sub.get_name());
    // The global options (and --help) are described once, at the top.
    let own = sub
        .clone()
        .bin_name(&name)
        .mut_args(|a| {
            if a.is_global_set() || a.get_id() == "help" {
                a.hide(true)
            } else {
                a
            }
        })
        .disable_help_flag(true);
    let has_options = own.get_arguments().any(|a| !a.is_hide_set());
    let man = Man::new(own);

    Roff::new().control("SS", [name.as_str()]).to_writer(out)?;
    without_heading(|w| man.render_synopsis_section(w), out)?;
    Roff::new().control("PP", []).to_writer(out)?;
    without_heading(|w| man.render_description_section(w), out)?;
    if has_options {
        without_heading(|w| man.render_options_section(w), out)?;
    }
    Ok(())
}

/// clap_mangen renders each part under its own `.SH`; inside a command's
/// subsection that heading would start a new section, so it is dropped.
fn without_heading(
    part: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    part(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    for line in text.lines().filter(|l| !l.starts_with(".SH ")) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// A hand-written section: a title, an optional paragraph, then tagged
/// entries (`term`, explanation).
struct Section {
    title: &'static str,
    intro: &'static [&'static str],
    entries: &'static [(&'static str, &'static str)],
}

fn section(s: Section) -> Roff {
    let mut roff = Roff::new();
    if !s.title.is_empty() {
        roff.control("SH", [s.title]);
    }
    for paragraph in s.intro {
        roff.control("PP", []).text(inline(paragraph));
    }
    for (term, text) in s.entries {
        roff.control("TP", []).text(inline(term)).text(inline(text));
    }
    roff
}

/// `*bold*` and backquoted (italic) spans, the rest roman; roff escaping is the
/// roff crate's.
fn inline(text: &str) -> Vec<Inline> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(['*', '`']) {
        let marker = &rest[start..start + 1];
        let Some(len) = rest[start + 1..].find(marker) else {
            break;
        };
        parts.push(roman(&rest[..start]));
        let inner = &rest[start + 1..start + 1 + len];
        parts.push(if marker == "*" {
            bold(inner)
        } else {
            italic(inner)
        });
        rest = &rest[start + 2 + len..];
    }
    parts.push(roman(rest));
    parts
}

const DESCRIPTION: Section = Section {
    title: "",
    intro: &[
        "optiwatch finds images whose content really changed (BLAKE3 hashes, not \
         mtimes), maps their paths to public URLs through the *[[rules]]* of its \
         config file, invalidates exactly those assets through Optimole's cache API \
         (at most 100 per request), then requests one fresh cache token and \
         publishes it (*[token] file*, *[token] command*). Run it once from a \
         deploy hook or cron job (*optiwatch scan*) or as a daemon beside the media \
         folder (*optiwatch watch*). The first scan of a folder records a baseline \
         and invalidates nothing.",
        "Logs go to standard error, results to standard output. Every setting other \
         than the global options below is in the config file; the commented \
         reference is `watcher.example.toml` (installed in \
         `/usr/share/doc/optiwatch/examples/` by the Debian package).",
        "*-q* prints nothing but errors: no summary, no progress bar, only error \
         lines on standard error and the exit code (logs at warn; in *watch* that \
         is all it changes). *-v* lists every changed, new and deleted path in the \
         *scan* summary (20 of each kind otherwise).",
        "*--json* prints one JSON object on standard output whose first field is \
         *\"version\": 1*; within a version fields may be added, never removed or \
         renamed. Times are RFC 3339 in UTC (`2026-11-29T16:43:36Z`), in text \
         output too. *scan --json* lists the changed, touched, new and deleted \
         paths and counts the rest; *--all-paths* adds every scanned and \
         unchanged path. The README's \"JSON output\" section gives every schema.",
    ],
    entries: &[],
};

const FILES: Section = Section {
    title: "FILES",
    intro: &[],
    entries: &[
        (
            "`./watcher.toml`",
            "The config file when neither *--config* nor *OPTIWATCH_CONFIG* names one. \
             Relative paths inside a config file are relative to the file's folder. \
             *optiwatch init* writes it (or *--output FILE*).",
        ),
        (
            "`/etc/optiwatch/watcher.toml`",
            "The config file when none of *--config*, *OPTIWATCH_CONFIG* and \
             `./watcher.toml` gives one (*optiwatch init --system* writes it). When \
             neither file exists, every command but *init*, *completions* and *man* \
             exits 2 naming each place tried.",
        ),
        (
            "`/usr/share/doc/optiwatch/examples/watcher.example.toml`",
            "Every key with its default and a comment (Debian package). Copy it to \
             `/etc/optiwatch/watcher.toml` and edit it; the systemd unit passes \
             *--config /etc/optiwatch/watcher.toml*.",
        ),
        (
            "`state` (default `optiwatch.db` beside the config; `/var/lib/optiwatch/optiwatch.db` under systemd)",
            "The SQLite state store: file hashes, the outbox of assets still owed to \
             Optimole, the refused list, the token state and the history of what \
             Optimole accepted (*optiwatch history*; bounded by *[history] keep* and \
             *max_rows*). SQLite keeps `-wal` and \
             `-shm` files beside it; move all three together. One process per store.",
        ),
        (
            "`state`*.lock*",
            "Holds the pid of the process using the store. *scan* and *watch* take an \
             flock on it and on the store; a second process refuses to start and \
             names the first. The kernel drops the locks when their holder dies.",
        ),
        (
            "`state`*.sock*",
            "The control socket of a running *watch* (mode 0600; only its user and \
             root are answered). *scan*, *invalidate* and *token* hand their work to \
             the daemon through it and wait (*--timeout*); *status* adds the daemon's \
             live state. A stale one (daemon killed) is ignored and replaced. \
             *[watch] control = false* turns it off.",
        ),
        (
            "`[token] file`",
            "Where a fresh cache token is written (temporary file in the same folder, \
             then rename; mode 0644; the token only). The folder must be writable by \
             the user optiwatch runs as; *check* tries it with a probe file \
             `.optiwatch-check-`*pid*, as it does in the state store's folder.",
        ),
        (
            "`key_file`, `/etc/optiwatch/key`",
            "A file holding the API key (*key_file*), or the file systemd hands over \
             as a credential (*LoadCredential=optimole-key:/etc/optiwatch/key* with \
             *key_credential = \"optimole-key\"*). A regular file of at most 4096 \
             bytes, readable by its owner only.",
        ),
        (
            "`state`*.send.db*",
            "With `[shared]`: the leader's local mirror of the shared PostgreSQL \
             outbox, which its sender works from; rebuilt whenever the node becomes \
             leader. `[shared] password_file` holds the database password.",
        ),
        (
            "`/usr/lib/systemd/system/optiwatch.service`",
            "The systemd unit of the Debian package: runs *watch* as the system user \
             *optiwatch*.",
        ),
    ],
};

const ENVIRONMENT: Section = Section {
    title: "ENVIRONMENT",
    intro: &[],
    entries: &[
        (
            "*OPTIWATCH_CONFIG*",
            "The config file, when *--config* is not given (then `./watcher.toml`, \
             then `/etc/optiwatch/watcher.toml`).",
        ),
        (
            "*OPTIWATCH_LOG_FORMAT*",
            "*human* (default) or *json*, when *--log-format* is not given.",
        ),
        (
            "*OPTIMOLE_API_KEY*",
            "The Optimole API key (a Root key) when the config sets no *key_env*, \
             *key_file* or *key_credential*. A variable named by *key_env* works the \
             same. The value is read once at start-up and wiped from the process \
             environment; the token command never sees it.",
        ),
        (
            "*CREDENTIALS_DIRECTORY*",
            "Set by systemd (*LoadCredential=*): where *key_credential* names are \
             looked up.",
        ),
        (
            "*RUST_LOG*",
            "A tracing filter (e.g. *optiwatch=debug*) that overrides *-v* and *-q*.",
        ),
        (
            "*PGPASSFILE*",
            "With `[shared]` and no *password_file*: a pgpass file \
             (host:port:database:user:password lines) holding the database password.",
        ),
        ("*NO_COLOR*", "Turns off colours in human log lines."),
        (
            "*NOTIFY_SOCKET*",
            "Set by systemd for *Type=notify*: *watch* reports READY, RELOADING and \
             STOPPING there.",
        ),
        (
            "*OPTIWATCH_TOKEN*",
            "Set by optiwatch for the token command: the token being published.",
        ),
        (
            "*OPTIWATCH_PAUSE_AT*",
            "For the crash tests only: stop the process (SIGSTOP) at a named point.",
        ),
    ],
};

const EXIT_STATUS: Section = Section {
    title: "EXIT STATUS",
    intro: &[],
    entries: &[
        (
            "*0*",
            "Everything asked for was done (*watch*: stopped by SIGTERM or SIGINT).",
        ),
        (
            "*1*",
            "A runtime failure: the API (any answer that is not a clear success, \
             assets refused by name), the network, the disk, unreadable files or \
             folders, token publishing; for *watch*, any stop not asked for by a \
             signal. What is still owed stays in the state store and is sent first \
             by the next run.",
        ),
        (
            "*2*",
            "A usage or configuration error (bad flag, bad config with line and \
             column, missing API key, a *base_url* where Optimole answers 404 or \
             405, no config file found, *init* refusing to overwrite a file or \
             lacking *--url*). Nothing more was sent.",
        ),
    ],
};

const SEE_ALSO: Section = Section {
    title: "SEE ALSO",
    intro: &[
        "*systemd.exec*(5) (*LoadCredential=*, *StateDirectory=*), *systemd-analyze*(1), \
         *crontab*(5); the README (`/usr/share/doc/optiwatch/README.md` in the Debian \
         package), which documents every config key, the JSON output and the \
         guarantees.",
    ],
    entries: &[],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_marks_bold_and_italic_and_leaves_lone_markers() {
        let roff = |text: &str| {
            let mut r = Roff::new();
            r.text(inline(text));
            r.to_roff()
        };
        assert_eq!(roff("a *b* `c` d"), "a \\fBb\\fR \\fIc\\fR d\n");
        assert_eq!(roff("*key_env* *x"), "\\fBkey_env\\fR *x\n");
    }
}
