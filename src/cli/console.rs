//! `gatehouse console passwd NAME --role ROLE`: prints a `[[console.accounts]]` entry
//! with the argon2 hash of a password read from the terminal (typed twice) or one line
//! of stdin — never from the command line, where other users and the shell's history
//! would see it. The technician pastes the entry into the policy and reloads.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::Subcommand;

use gatehouse::settings::Role;

#[derive(Subcommand)]
pub enum ConsoleCommand {
    /// Print a console account entry for the policy; the password is read from the
    /// terminal (or one line of stdin).
    Passwd {
        /// The account name typed at sign-in.
        name: String,
        /// Its role: dsl, technician, teacher, it-lead or viewer.
        #[arg(long)]
        role: String,
    },
}

/// A TOML basic string: the name is printed into the policy file.
fn toml_string(text: &str) -> String {
    toml_edit::Value::from(text).to_string().trim().to_string()
}

/// `gatehouse console passwd`.
pub fn run(command: ConsoleCommand) -> Result<ExitCode> {
    match command {
        ConsoleCommand::Passwd { name, role } => {
            let Some(role) = Role::parse(&role) else {
                bail!("role {role:?} is not dsl, technician, teacher, it-lead or viewer");
            };
            if name.trim().is_empty() {
                bail!("the account name is empty");
            }
            let hash = gatehouse::proxy::auth::hash_password(&super::user::read_password()?)
                .map_err(|e| anyhow!(e))?;
            println!("[[console.accounts]]");
            println!("name = {}", toml_string(name.trim()));
            println!("role = {}", toml_string(role.as_str()));
            println!("hash = {}", toml_string(&hash));
            Ok(ExitCode::SUCCESS)
        }
    }
}
