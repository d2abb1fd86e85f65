//! `gatehouse ca init|show`: the school's inspection CA. `init` makes the key and the
//! certificate at the paths `[inspection]` names; `show` prints the certificate, its
//! fingerprints, where devices download it and how to install it as a trusted root on
//! the devices schools have. Both read only the policy file's settings, not its lists:
//! `init` must work before the CA exists, even when the policy's enrolment listener
//! needs it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use chrono::Utc;
use clap::Subcommand;

use gatehouse::ca::{self, CaCert};
use gatehouse::core::config::{RawPolicy, Source};
use gatehouse::settings::Settings;

use super::common::ConfigArg;

#[derive(Subcommand)]
pub enum CaCommand {
    /// Create the school's inspection CA: an ECDSA P-256 key (mode 0600) and a
    /// self-signed CA certificate naming the school, valid for ten years.
    Init {
        #[command(flatten)]
        config: ConfigArg,
        /// Replace an existing CA. Every device enrolled with the old one must then be
        /// enrolled again.
        #[arg(long)]
        force: bool,
    },
    /// Print the CA certificate, its fingerprints, where devices download it and how to
    /// install it as a trusted root on Windows, ChromeOS, iPadOS and Android.
    Show(ConfigArg),
}

/// `gatehouse ca …`.
pub fn run(command: CaCommand) -> Result<ExitCode> {
    match command {
        CaCommand::Init { config, force } => init(&config.config, force),
        CaCommand::Show(config) => show(&config.config),
    }
}

/// The school's name and the shell's settings from the policy file, without its lists.
fn settings_of(config: &Path) -> Result<(String, Settings)> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("reading the policy {}", config.display()))?;
    let source = Source::new(config, &text);
    let raw: RawPolicy = source.parse(&text).map_err(|e| anyhow!("{e}"))?;
    let settings = Settings::compile(&raw, &source).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        anyhow!(
            "{} error{} in the policy",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        )
    })?;
    Ok((raw.school.name, settings))
}

/// `gatehouse ca init`.
fn init(config: &Path, force: bool) -> Result<ExitCode> {
    let (school, settings) = settings_of(config)?;
    let inspection = &settings.inspection;
    let made = ca::init(inspection, &school, force, Utc::now().date_naive())
        .context("the school CA was not created")?;
    let cert = &made.cert;
    if !made.replaced.is_empty() {
        eprintln!(
            "warning: the previous school CA was replaced: every device enrolled with it must \
             be enrolled again with this one, and a running proxy serves the new one after \
             a reload (SIGHUP)"
        );
    }
    println!("Created the school CA for {school}.");
    println!("  certificate  {}", inspection.ca_cert.display());
    println!("  key          {} (mode 0600)", inspection.ca_key.display());
    println!("  subject      {}", cert.subject);
    println!(
        "  valid        {} to {}",
        cert.not_before.format("%Y-%m-%d"),
        cert.not_after.format("%Y-%m-%d")
    );
    println!("  SHA-256      {}", cert.sha256);
    println!();
    println!(
        "Keep the key on this server and out of backups that others can read: anyone who \
         has it can impersonate any website to every device that trusts this CA."
    );
    println!(
        "Next: `gatehouse ca show --config {}` prints how to install the certificate on \
         devices.",
        config.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `gatehouse ca show`.
fn show(config: &Path) -> Result<ExitCode> {
    let (_, settings) = settings_of(config)?;
    let inspection = &settings.inspection;
    let cert = CaCert::load(&inspection.ca_cert)?;
    let now = Utc::now();
    println!("School CA certificate: {}", cert.path.display());
    println!("Subject:     {}", cert.subject);
    println!(
        "Valid from:  {}",
        cert.not_before.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let days = cert.days_left(now);
    println!(
        "Valid until: {} ({})",
        cert.not_after.format("%Y-%m-%d %H:%M:%S UTC"),
        if cert.expired(now) {
            "EXPIRED".to_string()
        } else {
            format!("{days} days from now")
        }
    );
    println!("SHA-256:     {}", cert.sha256);
    println!("SHA-1:       {}", cert.sha1);
    println!();
    print!("{}", cert.pem);
    println!();
    match inspection.enrol_listen {
        Some(addr) => {
            let base = ca::download_base(addr);
            println!("Devices download it from {base}/ca.crt (a page with both formats and the fingerprints: {base}/).");
        }
        None => println!(
            "Devices can download it once [inspection] enrol_listen is set (for example \
             \"0.0.0.0:8081\"): `gatehouse run` then serves it at http://<this server>:8081/ca.crt. \
             Or copy {} to them.",
            cert.path.display()
        ),
    }
    println!();
    print!("{INSTALL}");
    Ok(ExitCode::SUCCESS)
}

/// How to make each kind of school device trust the CA. Compare the fingerprint on the
/// device with the one above before trusting it.
const INSTALL: &str = "\
Installing it as a trusted root (compare the SHA-256 or SHA-1 fingerprint first):

Windows
  Domain: Group Policy Management, edit a GPO linked to the devices' OU, then
    Computer Configuration > Policies > Windows Settings > Security Settings >
    Public Key Policies > Trusted Root Certification Authorities > Import... ca.crt.
    Devices take it at their next policy refresh (gpupdate /force).
  Intune: a Trusted certificate profile with ca.crt, destination store
    Computer certificate store - Root.
  One PC: as administrator, certutil -addstore -f Root ca.crt
  Firefox uses its own store unless its ImportEnterpriseRoots policy is on.

ChromeOS
  Google Admin console: Devices > Networks > Certificates, choose the
    organisational unit, Add certificate (ca.crt), and under Certificate authority
    tick Chromebook, so it is used as an HTTPS certificate authority.

iPadOS
  Managed (MDM): add a Certificate payload with ca.crt to a configuration profile
    and push it; a root installed by the MDM is trusted for HTTPS at once.
  By hand: open the download link in Safari and allow it, install the profile in
    Settings > General > VPN & Device Management, then turn on full trust in
    Settings > General > About > Certificate Trust Settings.

Android
  Managed: push ca.crt as a trusted CA certificate through your EMM/MDM (in the
    Google Admin console, tick Android beside Chromebook).
  Unmanaged: Settings > Security > Encryption & credentials > Install a certificate >
    CA certificate, and choose ca.crt (menu names vary by maker).
  Apps ignore CAs installed by the user unless they opt in, so on such a device only
    browsers will trust it.

Keep ca.key on this server: never copy it to a device.
";
