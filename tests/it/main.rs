//! The integration tests, as one binary (one link instead of one per file):
//! each module is one area of behaviour, run against the real `optiwatch`
//! binary and the fake Optimole API in `support/`. Run one area with
//! `cargo test --test it scan::`.

mod support;

mod accounts;
mod check_probes;
mod commands;
mod config;
mod control;
mod crash;
mod daemon_life;
mod exact_detect;
mod fake_api_selftest;
mod faults;
mod history;
mod hostile;
mod init;
mod links;
mod mapping_props;
mod operations;
mod output;
mod packaging;
mod reliability;
mod review;
mod scan;
mod secrets;
mod settlement;
mod shared;
mod tokens;
mod watch;
mod wordpress;
