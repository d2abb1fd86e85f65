//! Gatehouse: a web-filtering forward proxy for school networks.
//!
//! The crate is a pure core with a thin shell around it. The core decides and does no
//! I/O; the shell reads files and (later) moves bytes.
//!
//! | module | job |
//! | --- | --- |
//! | [`host`] | normalise hosts and request targets: the part pupils attack |
//! | [`category`] | categories, severities, category sets |
//! | [`classify`] | compiled lists and the lookup from target to categories |
//! | [`schedule`] | weekly time windows in a time zone |
//! | [`config`] | the policy file as written, with file:line errors |
//! | [`policy`] | the validated policy and `decide` |
//! | [`identity`] | subnets, users and their groups |
//! | [`grants`] | ticketed, time-boxed unblocks (the type; file and commands come later) |
//! | [`lists`] | shell: reading list files and the compiled cache |
//! | [`grant_store`] | shell: locked, validated, atomic edits of the grants file |
//! | [`snapshot`] | shell: loading a policy with its lists; the live, swappable snapshot |
//! | [`decision`] | shell: decision records and the hand-off to the decision log |
//! | [`report`] | shell: the weekly safeguarding report from the decision logs |
//! | [`metrics`] | shell: Prometheus metrics with bounded labels |
//! | [`decision_log`] | shell: the append-only, checksummed, hash-chained decision log |
//! | [`proxy`] | shell: `gatehouse run` — listener, limits, forwarding, tunnels, block page |
//!
//! Core modules deny `clippy::disallowed_methods`, which `clippy.toml` sets to the clock
//! and file-system calls: the compiler keeps I/O out of the core.

#![allow(clippy::disallowed_methods)] // allowed in the shell; the core modules deny it

pub mod category;
pub mod classify;
pub mod config;
pub mod decision;
pub mod decision_log;
pub mod grant_store;
pub mod grants;
pub mod host;
pub mod identity;
pub mod lists;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod report;
pub mod schedule;
pub mod snapshot;
