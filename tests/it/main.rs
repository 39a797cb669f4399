//! The integration tests, as one binary (one link instead of one per file):
//! each module is one area of behaviour, run against the real `optiwatch`
//! binary and the fake Optimole API in `support/`. Run one area with
//! `cargo test --test it scan::`.

mod support;

mod commands;
mod config;
mod crash;
mod daemon_life;
mod exact_detect;
mod fake_api_selftest;
mod faults;
mod hostile;
mod links;
mod mapping_props;
mod operations;
mod packaging;
mod reliability;
mod scan;
mod secrets;
mod settlement;
mod shared;
mod tokens;
mod watch;
mod wordpress;
