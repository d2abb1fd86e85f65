//! `gatehouse identity test USER`: how a user resolves against the school's directory —
//! their DN, their directory groups (nested ones included) and the Gatehouse group the
//! policy's rules map them to — read with the service account, without their password.
//! Also the directory part of `gatehouse check`.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use gatehouse::core::directory::Mapped;
use gatehouse::lists::CacheMode;
use gatehouse::settings::{DirectorySettings, DirectoryTls, NestedGroups};
use gatehouse::snapshot::Snapshot;

use super::common::{load, ConfigArg};

#[derive(Subcommand)]
pub enum IdentityCommand {
    /// Show how USER resolves: directory DN and groups, and the group they get.
    Test(TestArgs),
}

#[derive(Args)]
pub struct TestArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The user name as they would type it (`jsmith`, `SCHOOL\jsmith`, `jsmith@school.local`).
    user: String,
}

/// A small runtime for one command's directory calls.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(f))
}

/// `gatehouse identity …`.
pub fn run(command: IdentityCommand) -> Result<ExitCode> {
    match command {
        IdentityCommand::Test(args) => test(&args),
    }
}

fn test(args: &TestArgs) -> Result<ExitCode> {
    let snap = load(&args.config.config, CacheMode::Use)?;
    let policy = &snap.policy;
    let identity = &policy.identity;
    if let Some(u) = identity.user(&args.user) {
        println!(
            "{}: in the users file ({}), group {}",
            u.name,
            policy
                .users_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            policy.group(u.group).name
        );
        println!("  the users file is checked first: the directory is not asked for this name");
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(settings), Some(mapping)) = (snap.settings.directory.as_ref(), identity.directory())
    else {
        bail!(
            "{}: {:?} is not in the users file, and the policy has no [identity.directory]",
            policy.path.display(),
            args.user
        );
    };
    let account = block_on(gatehouse::directory::lookup(settings, &args.user))?
        .with_context(|| format!("looking up {:?} in {}", args.user, settings.url))?;
    println!("account: {}", account.name);
    println!("dn: {}", account.dn);
    println!(
        "directory groups ({}, nested included):",
        account.groups.len()
    );
    for g in &account.groups {
        println!("  {g}");
    }
    match mapping.map(&account.groups) {
        Mapped::Group { group, rule } => println!(
            "group: {} (rule {} of {}: directory = {:?}; rules are tried in file order, the first match wins)",
            policy.group(group).name,
            rule + 1,
            mapping.rules.len(),
            mapping.rules[rule].text
        ),
        Mapped::Default => println!(
            "group: none mapped: the subnet's group applies, else the default group {} (unmapped = \"default\")",
            policy.group(identity.default_group).name
        ),
        Mapped::Refused => println!(
            "group: none mapped: sign-in refused (unmapped = \"refuse\")"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The directory part of `gatehouse check`: prints the settings and whether the
/// service account can bind and find the base DN. `Err` is the problem, said plainly.
/// The Kerberos part of `gatehouse check`: the keytab holds a key the proxy can accept
/// tickets with (for the service principal, when one is set).
pub fn check_kerberos(snap: &Snapshot) -> Result<()> {
    let Some(settings) = snap.settings.kerberos.as_ref() else {
        println!("kerberos: none (no single sign-on)");
        return Ok(());
    };
    let principal = settings
        .service_principal
        .as_deref()
        .unwrap_or("any principal in the keytab");
    println!(
        "kerberos: keytab {}, accepting tickets for {principal}",
        settings.keytab.display()
    );
    if !settings.keytab.is_file() {
        bail!(
            "the keytab {} does not exist: export HTTP/<proxy name>'s key to it (AD: ktpass)",
            settings.keytab.display()
        );
    }
    gatehouse::kerberos::acquire(settings).context("the Kerberos keytab is not usable")?;
    println!("  the keytab holds a usable key");
    Ok(())
}

pub fn check_directory(snap: &Snapshot) -> Result<()> {
    let Some(settings) = snap.settings.directory.as_ref() else {
        println!("directory: none (sign-in by the users file only)");
        return Ok(());
    };
    print_settings(settings);
    if let Some(mapping) = snap.policy.identity.directory() {
        println!(
            "  {} group rule(s), first match wins; unmapped users: {}",
            mapping.rules.len(),
            match mapping.unmapped {
                gatehouse::core::directory::Unmapped::Default => "subnet or default group",
                gatehouse::core::directory::Unmapped::Refuse => "refused",
            }
        );
        for r in &mapping.rules {
            println!("    {:?} → {}", r.text, snap.policy.group(r.group).name);
        }
    }
    block_on(gatehouse::directory::check(settings))?
        .with_context(|| format!("the directory at {} is not usable", settings.url))?;
    println!(
        "  reached: bound as {} and found {}",
        settings.bind_dn, settings.base_dn
    );
    Ok(())
}

fn print_settings(d: &DirectorySettings) {
    let tls = match d.tls {
        DirectoryTls::Ldaps => "LDAPS",
        DirectoryTls::StartTls => "StartTLS",
        DirectoryTls::Plain => "PLAIN (allow_plaintext: passwords cross the network readable)",
    };
    println!("directory: {} ({tls})", d.url);
    println!(
        "  service account {} (password from {})",
        d.bind_dn,
        d.bind_password_file.display()
    );
    println!("  users under {} by {}", d.base_dn, d.user_filter);
    println!(
        "  nested groups: {}",
        match d.nested_groups {
            NestedGroups::Walk => "walk member upwards",
            NestedGroups::AdChain => "AD in-chain matching rule",
        }
    );
    println!(
        "  sign-ins remembered {} s (at most {}); groups re-read every {} s",
        d.cache_ttl.as_secs(),
        d.cache_size,
        d.sync_interval.as_secs()
    );
}
