//! The command line: the clap definition of `gatehouse` and its subcommands, one module
//! per subcommand with its own arguments and the code that carries it out. These are the
//! shell's front door: they load the policy, call the library, print to the terminal and
//! turn failures into one `gatehouse: …` line and an exit code (via `anyhow`). Nothing
//! here decides a request; that stays in the library's core.

pub mod admin;
pub mod alerts;
pub mod ca;
pub mod check;
pub mod classify;
pub mod common;
pub mod console;
pub mod grant;
pub mod identity;
pub mod lists;
pub mod log;
pub mod report;
pub mod run;
pub mod user;

use clap::{Parser, Subcommand};

use common::ConfigArg;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "A web-filtering forward proxy for school networks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the filtering proxy.
    Run(run::RunArgs),
    /// Manage the users who authenticate to the proxy.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Validate the policy, its users file and its lists; print a summary.
    Check(ConfigArg),
    /// Print the verdict for each URL, for a group, user or client address.
    Classify(classify::ClassifyArgs),
    /// Time-boxed unblocks against a helpdesk ticket.
    Grant {
        #[command(subcommand)]
        command: grant::GrantCommand,
    },
    /// The school's inspection CA: create it, show it and how devices install it.
    Ca {
        #[command(subcommand)]
        command: ca::CaCommand,
    },
    /// Make an admin API token.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// The weekly safeguarding report.
    Report(report::ReportArgs),
    /// Check, export and follow the decision log.
    Log {
        #[command(subcommand)]
        command: log::LogCommand,
    },
    /// Safeguarding alerts to the DSL.
    Alerts {
        #[command(subcommand)]
        command: alerts::AlertsCommand,
    },
    /// How users resolve against the school's directory.
    Identity {
        #[command(subcommand)]
        command: identity::IdentityCommand,
    },
    /// Manage category lists.
    Lists {
        #[command(subcommand)]
        command: lists::ListsCommand,
    },
    /// The web console's accounts.
    Console {
        #[command(subcommand)]
        command: console::ConsoleCommand,
    },
}
