//! optiwatch keeps Optimole's image CDN in step with the origin: it finds
//! images whose content really changed (BLAKE3, not mtimes), maps them to
//! their public URLs, invalidates them in batches, then requests one fresh
//! cache token and hands it to the site.
//!
//! Modules follow the data flow:
//! change source ([`scan`], [`watch`]) → detect ([`detect`], [`rules`]) → durable
//! outbox ([`state`]) → API batches ([`flush`], [`api`], [`retry`]) →
//! token ([`token`]). [`pipeline`] strings them together for one run;
//! [`cli`] is the command line on top.

pub mod accounts;
pub mod api;
pub mod cli;
pub mod commands;
pub mod config;
pub mod display;
pub mod exit_codes;
pub mod failpoint;
pub mod flush;
pub mod logging;
pub mod metrics;
pub mod progress;
pub mod publish;
pub mod retry;
pub mod rules;
pub mod scan;
pub mod secret;
pub mod session;
pub mod state;
pub mod watch;
