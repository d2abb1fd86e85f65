//! `gatehouse user`: adds, re-passwords and removes the users who authenticate to the
//! proxy, in the users file the policy names. Only password hashes are written.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;

use gatehouse::lists::CacheMode;

use super::common::{load, ConfigArg};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is read from the terminal (or one line of stdin).
    Add {
        #[command(flatten)]
        config: ConfigArg,
        /// Login name.
        name: String,
        /// Their group.
        #[arg(long)]
        group: String,
    },
    /// Set a user's password.
    Passwd {
        #[command(flatten)]
        config: ConfigArg,
        /// Login name.
        name: String,
    },
    /// Remove a user.
    Remove {
        #[command(flatten)]
        config: ConfigArg,
        /// Login name.
        name: String,
    },
}

/// A new password: typed twice at a terminal, or one line of stdin for scripts.
pub(crate) fn read_password() -> Result<String> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("reading the password")?;
        let again = rpassword::prompt_password("Again: ").context("reading the password")?;
        if first != again {
            bail!("the passwords do not match");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.chars().count() < 8 {
        bail!("passwords must be at least 8 characters");
    }
    Ok(password)
}

/// `gatehouse user add|passwd|remove`: edits the users file named by the policy; the
/// running proxy picks it up on SIGHUP.
pub fn run(command: UserCommand) -> Result<ExitCode> {
    let (config, name) = match &command {
        UserCommand::Add { config, name, .. }
        | UserCommand::Passwd { config, name }
        | UserCommand::Remove { config, name } => (config.config.clone(), name.clone()),
    };
    let snap = load(&config, CacheMode::Use)?;
    let policy = &snap.policy;
    let path = policy.users_file.clone().with_context(|| {
        format!(
            "{} names no users_file in [identity]",
            policy.path.display()
        )
    })?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    if !doc.contains_key("user") {
        doc.insert(
            "user",
            toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()),
        );
    }
    let users = doc["user"]
        .as_array_of_tables_mut()
        .with_context(|| format!("{}: `user` must be [[user]] tables", path.display()))?;
    let position = users
        .iter()
        .position(|t| t.get("name").and_then(|v| v.as_str()) == Some(name.as_str()));
    match command {
        UserCommand::Add { ref group, .. } => {
            if position.is_some() {
                bail!("user {name:?} already exists; use `gatehouse user passwd`");
            }
            if policy.group_id(group).is_none() {
                let names: Vec<&str> = policy.groups().map(|(_, g)| g.name.as_str()).collect();
                bail!("no group {group:?} (groups: {})", names.join(", "));
            }
            let hash =
                gatehouse::proxy::auth::hash_password(&read_password()?).map_err(|e| anyhow!(e))?;
            let mut table = toml_edit::Table::new();
            table.insert("name", toml_edit::value(name.as_str()));
            table.insert("group", toml_edit::value(group.as_str()));
            table.insert("password_hash", toml_edit::value(hash));
            users.push(table);
        }
        UserCommand::Passwd { .. } => {
            let i = position.with_context(|| format!("no user {name:?}"))?;
            let hash =
                gatehouse::proxy::auth::hash_password(&read_password()?).map_err(|e| anyhow!(e))?;
            if let Some(t) = users.get_mut(i) {
                t.insert("password_hash", toml_edit::value(hash));
            }
        }
        UserCommand::Remove { .. } => {
            let i = position.with_context(|| format!("no user {name:?}"))?;
            users.remove(i);
        }
    }
    gatehouse::lists::write_atomically(&path, doc.to_string().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "{} updated; send SIGHUP to a running proxy to apply it",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
