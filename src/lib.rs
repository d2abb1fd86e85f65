//! Gatehouse: a web-filtering forward proxy for school networks.
//!
//! The crate is a pure core with a thin shell around it. The core decides and does no
//! I/O; the shell reads files, moves bytes and writes the decision log. Dependencies
//! point one way: the shell imports the core, never the other way round. The binary
//! (`src/main.rs`, with one module per subcommand under `src/cli/`) is the only place
//! that prints to the terminal or uses `anyhow`.
//!
//! ```text
//! cli ─► proxy::serve ─► proxy::request / proxy::tunnel ─► core::decide ─► core::classify
//!  │          │                 │        │                      ▲
//!  │          │                 │        └─► decision ─► decision_log (writer)
//!  │          │                 └─► proxy::forward (takes an Allowed permit)
//!  │          └─► proxy::admin (metrics, health, grants API) ─► grant_store
//!  ├─► report (reads the decision logs)
//!  └─► snapshot (policy + settings + lists + grants, swapped whole on reload)
//! ```
//!
//! **The core** ([`core`]: no I/O, no clock, no threads; the lint below enforces it)
//!
//! | module | job |
//! | --- | --- |
//! | [`core::host`] | normalise hosts and request targets: the part pupils attack |
//! | [`core::category`] | categories, severities, category sets |
//! | [`core::schedule`] | weekly time windows in a time zone |
//! | [`core::classify`] | compiled lists and the lookup from target to categories |
//! | [`core::site`], [`core::group`] | site lists; groups, the filtering levels |
//! | [`core::identity`] | subnets, users and their groups |
//! | [`core::directory`] | directory user names, LDAP filter escaping, directory groups → groups |
//! | [`core::config`] | the policy file as written, with file:line errors |
//! | [`core::policy`] | the validated policy, compiled from the file in steps |
//! | [`core::safe_search`] | safe search without interception: the engine table, the name dialled |
//! | [`core::inspect`] | TLS inspection: whether a tunnel is inspected; header and parameter controls |
//! | [`core::grants`] | ticketed, time-boxed unblocks, validated against a policy |
//! | [`core::verdict`] | what a decision says: verdict, reason, reason code |
//! | [`core::decide`] | `Policy::decide` (DESIGN.md's precedence) and `Policy::explain` |
//! | [`core::feed`] | the list formats schools receive, line by line |
//! | [`core::pac`] | the proxy auto-configuration script |
//! | [`core::alert`] | when a decision alerts, collapse window, back-off, what an alert says |
//!
//! **The shell**
//!
//! | module | job |
//! | --- | --- |
//! | [`settings`] | the listener, log, admin and inspection settings from the policy file |
//! | [`ca`] | the school's inspection CA: making it, reading it back, its fingerprints |
//! | [`inspection`] | TLS inspection's machinery: the CA's signing half, minted leaves and their cache, both sides' TLS settings |
//! | [`lists`] | reading list files and the compiled cache |
//! | [`import`] | `lists import`: UT1, hosts, plain and e2guardian lists into the policy's own |
//! | [`feeds`] | `[[lists.sources]]`: feeds fetched over HTTPS, checked (pin, size, shrink guard), imported, loaded |
//! | [`snapshot`] | loading policy, settings, lists and grants together; the live snapshot |
//! | [`grant_store`] | locked, validated, atomic edits of the grants file |
//! | [`etcd_grants`] | grants in etcd for several nodes: keys, the transactional edit, the watched mirror |
//! | [`directory`] | the school's LDAP / Active Directory: sign-in binds, groups, the sign-in cache, the sync |
//! | [`kerberos`] | Kerberos single sign-on: `Negotiate` tokens accepted with the system's GSSAPI and the keytab |
//! | [`device`] | device names for the log: the policy's map, else reverse DNS, remembered |
//! | [`decision`] | decision records, the hand-off to the log, the `Allowed` permit |
//! | [`decision_log`] | the append-only, checksummed, hash-chained decision log |
//! | [`proxy`] | `gatehouse run`: serving, the request path, forwarding, refusals, tunnels, reload, admin, enrolment |
//! | [`report`] | the weekly safeguarding report: aggregation, model, renderers |
//! | [`metrics`] | Prometheus metrics with bounded labels |
//! | [`alerts`] | safeguarding alerts to the DSL: the hand-off, collapse, outbox, email and webhook |
//!
//! `core` denies `clippy::disallowed_methods` and `clippy::disallowed_types`, which
//! `clippy.toml` sets to the clock, file-system, environment, thread, process and socket
//! calls and types: the compiler keeps I/O out of the core. The library forbids unsafe
//! code.

// Allowed in the shell; `core` denies them (see clippy.toml). Nothing in the library
// needs unsafe code; the binary's allocator settings are in main.rs.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
#![forbid(unsafe_code)]

pub mod alerts;
pub mod ca;
pub mod core;
pub mod decision;
pub mod decision_log;
pub mod device;
pub mod directory;
pub mod etcd_grants;
pub mod feeds;
pub mod grant_store;
pub mod import;
pub mod inspection;
pub mod kerberos;
pub mod lists;
pub mod metrics;
pub mod proxy;
pub mod report;
pub mod settings;
pub mod snapshot;
