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

pub mod api;
pub mod check;
pub mod cli;
pub mod config;
pub mod detect;
pub mod exit_codes;
pub mod explain;
pub mod failpoint;
pub mod flush;
pub mod links;
pub mod logging;
pub mod manual;
pub mod metrics;
pub mod paths;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod retry;
pub mod rules;
pub mod scan;
pub mod secret;
pub mod state;
pub mod status;
pub mod token;
pub mod watch;
