//! `[console]`: who may sign in to the web console, with which role, and how long a
//! session and a lockout last. Compiled with the rest of the policy file, every problem
//! reported with its line; pure, like the other settings.

use std::time::Duration;

use crate::core::config::{ConfigError, ConfigErrorKind, RawConsole, Source};
use crate::core::directory::GroupPattern;
use crate::settings::Role;

/// A local console account.
#[derive(Debug, Clone)]
pub struct ConsoleAccount {
    /// The name typed at sign-in.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The argon2 PHC string of its password (checked to parse at load).
    pub hash: String,
}

/// The web console's settings.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Whether `/console/` is served. Default: when an account or a directory rule is
    /// configured (a console nobody can sign in to is not served).
    pub enabled: bool,
    /// How long a session lasts from sign-in. Default 8 hours: a school day; the
    /// console asks for the password again the next morning.
    pub session: Duration,
    /// Failed sign-ins, per account and per address, that lock it. Default 5.
    pub lockout_failures: u32,
    /// The window failures are counted over, which is also how long a lock lasts.
    /// Default 15 minutes.
    pub lockout_window: Duration,
    /// Local accounts.
    pub accounts: Vec<ConsoleAccount>,
    /// Directory groups (when `[identity.directory]` is set) and the role their members
    /// get; the first rule that matches decides.
    pub directory: Vec<(GroupPattern, Role)>,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            enabled: false,
            session: Duration::from_secs(8 * 3600),
            lockout_failures: 5,
            lockout_window: Duration::from_secs(15 * 60),
            accounts: Vec::new(),
            directory: Vec::new(),
        }
    }
}

fn role_error(text: &str) -> ConfigErrorKind {
    ConfigErrorKind::InvalidValue(format!(
        "console role {text:?} is not \"dsl\", \"technician\", \"teacher\", \"it-lead\" or \"viewer\""
    ))
}

impl ConsoleSettings {
    /// Compiles `[console]`; problems are pushed to `errors` with their lines.
    pub fn compile(
        raw: &RawConsole,
        has_directory: bool,
        source: &Source,
        errors: &mut Vec<ConfigError>,
    ) -> ConsoleSettings {
        let defaults = ConsoleSettings::default();
        let positive = |v: &Option<toml::Spanned<u32>>,
                        what: &str,
                        errors: &mut Vec<ConfigError>|
         -> Option<u32> {
            let v = v.as_ref()?;
            if *v.get_ref() == 0 {
                errors.push(source.error_at(
                    v.span(),
                    ConfigErrorKind::InvalidValue(format!("console {what} must be at least 1")),
                ));
                return None;
            }
            Some(*v.get_ref())
        };
        let session = positive(&raw.session_minutes, "session_minutes", errors)
            .map_or(defaults.session, |m| Duration::from_secs(u64::from(m) * 60));
        let lockout_failures = positive(&raw.lockout_failures, "lockout_failures", errors)
            .unwrap_or(defaults.lockout_failures);
        let lockout_window = positive(&raw.lockout_minutes, "lockout_minutes", errors)
            .map_or(defaults.lockout_window, |m| {
                Duration::from_secs(u64::from(m) * 60)
            });
        let mut accounts: Vec<ConsoleAccount> = Vec::new();
        for a in &raw.accounts {
            let Some(role) = Role::parse(a.role.get_ref()) else {
                errors.push(source.error_at(a.role.span(), role_error(a.role.get_ref())));
                continue;
            };
            if let Err(e) = argon2::PasswordHash::new(a.hash.get_ref()) {
                errors.push(source.error_at(
                    a.hash.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "console account {:?}: hash is not an argon2 PHC string ({e}); `gatehouse console passwd` makes one",
                        a.name.get_ref()
                    )),
                ));
                continue;
            }
            let name = a.name.get_ref().trim();
            if name.is_empty() || accounts.iter().any(|x| x.name == name) {
                errors.push(source.error_at(
                    a.name.span(),
                    ConfigErrorKind::Duplicate(format!(
                        "console account name {name:?} is empty or used twice"
                    )),
                ));
                continue;
            }
            accounts.push(ConsoleAccount {
                name: name.to_string(),
                role,
                hash: a.hash.get_ref().clone(),
            });
        }
        let mut directory = Vec::new();
        for d in &raw.directory {
            if !has_directory {
                errors.push(
                    source.error_at(
                        d.group.span(),
                        ConfigErrorKind::InvalidValue(
                            "[[console.directory]] needs [identity.directory] to sign in against"
                                .into(),
                        ),
                    ),
                );
                continue;
            }
            let Some(role) = Role::parse(d.role.get_ref()) else {
                errors.push(source.error_at(d.role.span(), role_error(d.role.get_ref())));
                continue;
            };
            let Some(pattern) = GroupPattern::parse(d.group.get_ref()) else {
                errors.push(source.error_at(
                    d.group.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "console directory group {:?} is not a DN or a CN",
                        d.group.get_ref()
                    )),
                ));
                continue;
            };
            directory.push((pattern, role));
        }
        let enabled = raw
            .enabled
            .unwrap_or(!accounts.is_empty() || !directory.is_empty());
        ConsoleSettings {
            enabled,
            session,
            lockout_failures,
            lockout_window,
            accounts,
            directory,
        }
    }
}
