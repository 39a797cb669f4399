//! optiwatch keeps Optimole's image CDN in step with the origin: it finds
//! images whose content really changed (BLAKE3, not mtimes), maps them to
//! their public URLs, invalidates them in batches, then requests one fresh
//! cache token and hands it to the site.
//!
//! Modules follow the data path: change source ([`scan`]: walks;
//! [`watch`]: file events, settled) → detect ([`scan::pass`],
//! [`scan::examine`], [`rules`] for URLs) → durable outbox ([`state`]) →
//! API batches ([`flush`] per [`accounts`] account, [`api`], [`retry`]) →
//! token → publish ([`publish`]). [`control`] lets commands hand their
//! work to a running daemon. [`session`] opens the store for a
//! command or the daemon; [`commands`] are the subcommands and [`cli`] the
//! command line on top. Only what the binary and the tests use is public.

mod accounts;
mod api;
pub mod cli;
mod commands;
pub mod config;
mod control;
mod display;
mod exit_codes;
mod failpoint;
mod flush;
mod links;
mod logging;
mod manpage;
mod metrics;
mod paths;
mod progress;
mod publish;
mod retry;
mod rfc3339;
pub mod rules;
mod scan;
mod secret;
mod session;
pub mod shared;
mod state;
mod watch;
