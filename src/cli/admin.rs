//! `gatehouse admin token`: makes a token for the admin API and the policy entry that
//! lets it in.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Print a new random API token and the [[admin.tokens]] entry (its hash) for policy.
    Token {
        /// Whose token: recorded with every call it makes.
        name: String,
        /// `technician` (may change grants), `viewer` (may read), `teacher` (lesson
        /// overrides for its classrooms and groups) or `dsl` (acknowledges alerts).
        #[arg(long, default_value = "viewer")]
        role: String,
    },
}

/// `gatehouse admin …`.
pub fn run(command: AdminCommand) -> Result<ExitCode> {
    match command {
        AdminCommand::Token { name, role } => token(&name, &role),
    }
}

/// `gatehouse admin token`: the token goes to its owner once; only its hash goes in the
/// policy, so a copy of the policy does not give access to the API.
fn token(name: &str, role: &str) -> Result<ExitCode> {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    use sha2::Digest;
    if !["technician", "viewer", "teacher", "dsl"].contains(&role) {
        bail!("--role must be technician, viewer, teacher or dsl");
    }
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash: String = sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    eprintln!("Give this token to {name} (it is shown once; only its hash goes in the policy):");
    println!("{token}");
    eprintln!("\nAdd to the policy, then send SIGHUP:\n\n[[admin.tokens]]\nname = {name:?}\nrole = {role:?}\nsha256 = {hash:?}");
    if role == "teacher" {
        eprintln!("classrooms = [\"ROOM\"]   # the [teachers.classrooms] this teacher may act for\ngroups = []               # and/or the groups (classes)");
    }
    Ok(ExitCode::SUCCESS)
}
