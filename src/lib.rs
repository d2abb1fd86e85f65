//! Gatehouse: a web-filtering forward proxy for school networks.
//!
//! The crate is a pure core with a thin shell around it. The core decides and does no
//! I/O; the shell reads files and (later) moves bytes.
//!
//! | module | job |
//! | --- | --- |
//! | [`core`] | **the pure core**: no I/O, no clock; denied by lint (see below) |
//! | [`core::host`] | normalise hosts and request targets: the part pupils attack |
//! | [`core::category`] | categories, severities, category sets |
//! | [`core::classify`] | compiled lists and the lookup from target to categories |
//! | [`core::schedule`] | weekly time windows in a time zone |
//! | [`core::config`] | the policy file as written, with file:line errors |
//! | [`core::policy`] | the validated policy and `decide` |
//! | [`core::identity`] | subnets, users and their groups |
//! | [`core::grants`] | ticketed, time-boxed unblocks |
//! | [`lists`] | shell: reading list files and the compiled cache |
//! | [`grant_store`] | shell: locked, validated, atomic edits of the grants file |
//! | [`settings`] | shell: the listener, log and admin settings from the policy file |
//! | [`snapshot`] | shell: loading a policy with its lists; the live, swappable snapshot |
//! | [`decision`] | shell: decision records and the hand-off to the decision log |
//! | [`report`] | shell: the weekly safeguarding report from the decision logs |
//! | [`metrics`] | shell: Prometheus metrics with bounded labels |
//! | [`decision_log`] | shell: the append-only, checksummed, hash-chained decision log |
//! | [`proxy`] | shell: `gatehouse run` — listener, limits, forwarding, tunnels, block page |
//!
//! `core` denies `clippy::disallowed_methods` and `clippy::disallowed_types`, which
//! `clippy.toml` sets to the clock, file-system, environment, thread and socket calls:
//! the compiler keeps I/O out of the core.

// Allowed in the shell; `core` denies them (see clippy.toml). Nothing in the library
// needs unsafe code; the binary's allocator settings are in main.rs.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
#![forbid(unsafe_code)]

pub mod core;
pub mod decision;
pub mod decision_log;
pub mod grant_store;
pub mod lists;
pub mod metrics;
pub mod proxy;
pub mod report;
pub mod settings;
pub mod snapshot;
