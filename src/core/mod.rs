//! The pure core: what decides. Host and target normalisation, categories, compiled
//! lists, schedules, the policy file as written and as validated, identity rules,
//! grants, and `decide`.
//!
//! Nothing in here reads a file, the clock or the network, spawns a task or a thread:
//! the time and every file's text come in as arguments, and values go out. That is what
//! makes every decision table-testable and every reload all-or-nothing (the shell reads
//! the files, the core compiles them or refuses them whole).
//!
//! `clippy.toml` lists the clock, file-system, process, thread and socket calls and
//! types; this module denies them (the shell, in `lib.rs`, allows them), so the compiler
//! keeps I/O out of the core. Dependencies point one way: the shell imports the core,
//! never the other way round.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod category;
pub mod classify;
pub mod config;
pub mod decide;
pub mod grants;
pub mod group;
pub mod host;
pub mod identity;
pub mod policy;
pub mod schedule;
pub mod site;
pub mod verdict;
