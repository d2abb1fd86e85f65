//! The pure core: what decides. Host and target normalisation, categories, compiled
//! lists, schedules, the policy file as written and as validated, identity rules,
//! grants, and `decide`.
//!
//! Nothing in here reads a file, the clock or the network, spawns a task or a thread:
//! the time and every file's text come in as arguments, and values go out. That is what
//! makes every decision table-testable and every reload all-or-nothing (the shell reads
//! the files, the core compiles them or refuses them whole).
//!
//! | module | job | depends on |
//! | --- | --- | --- |
//! | [`host`] | normalise hosts and request targets: the part pupils attack | – |
//! | [`category`] | categories, severities, category sets (a bitset) | – |
//! | [`schedule`] | weekly time windows in a time zone | – |
//! | [`classify`] | compiled lists and the lookup from target to categories | host, category |
//! | [`site`] | site entries and short site lists (`allow_sites`, grants) | host, classify |
//! | [`group`] | groups: the filtering levels and what each may reach | site, schedule, safe_search |
//! | [`identity`] | subnets, users and their groups | group, directory |
//! | [`directory`] | directory user names, LDAP filter escaping, directory groups → groups | group |
//! | [`config`] | the policy file as written, with file:line errors | – |
//! | [`policy`] | the validated policy (`compile.rs`: the file into rules, in steps) | all above |
//! | [`safe_search`] | which name a search engine or YouTube is dialled to, per group | host |
//! | [`grants`] | ticketed, time-boxed unblocks, validated against a policy | policy |
//! | [`verdict`] | what a decision says: requester, verdict, reason and its code | group |
//! | [`decide`] | `Policy::decide` and `Policy::explain` | policy, grants, verdict |
//! | [`inspect`] | whether a tunnel is inspected; the header and parameter controls | policy, safe_search |
//! | [`alert`] | when a decision alerts the DSL, collapse, back-off, what an alert says | policy |
//! | [`feed`] | the list formats schools receive (UT1, hosts, plain, e2guardian), line by line | host, site |
//! | [`pac`] | the proxy auto-configuration script browsers are given | host, config |
//!
//! `clippy.toml` lists the clock, file-system, process, thread and socket calls and
//! types; this module denies them (the shell, in `lib.rs`, allows them), so the compiler
//! keeps I/O out of the core. Dependencies point one way: the shell imports the core,
//! never the other way round.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod alert;
pub mod category;
pub mod classify;
pub mod config;
pub mod decide;
pub mod directory;
pub mod feed;
pub mod grants;
pub mod group;
pub mod host;
pub mod identity;
pub mod inspect;
pub mod pac;
pub mod policy;
pub mod safe_search;
pub mod schedule;
pub mod site;
pub mod verdict;
