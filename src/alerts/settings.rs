//! `[alerts]` of the policy file: where safeguarding alerts go (SMTP, webhook), the
//! outbox, the collapse window, the rate limit, the retry back-off and the digest
//! period. Compiled like the other shell settings: pure, every problem with its line.
//! Secrets (the SMTP password, the webhook's key) are named by file and read when an
//! alert is sent, so the policy file itself can stay readable by technicians.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::config::{ConfigError, ConfigErrorKind, RawAlerts, Source};

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network, and only when the
    /// policy says `tls = "none"`.
    None,
}

/// The SMTP channel (`[alerts.email]`).
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// Server host name.
    pub server: String,
    /// Port.
    pub port: u16,
    /// Protection.
    pub tls: SmtpTls,
    /// Sender.
    pub from: lettre::message::Mailbox,
    /// Recipients.
    pub to: Vec<lettre::message::Mailbox>,
    /// SMTP user name.
    pub username: Option<String>,
    /// File holding the SMTP password.
    pub password_file: Option<PathBuf>,
    /// PEM file of extra CA certificates to trust.
    pub ca_file: Option<PathBuf>,
}

/// Where the webhook's key comes from.
#[derive(Debug, Clone)]
pub enum Secret {
    /// A file, read at each send (so it can be rotated without a reload).
    File(PathBuf),
    /// Written in the policy itself.
    Inline(String),
}

/// The webhook channel (`[alerts.webhook]`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The receiver.
    pub url: http::Uri,
    /// The HMAC-SHA256 key.
    pub secret: Secret,
    /// PEM file of extra CA certificates to trust (https only).
    pub ca_file: Option<PathBuf>,
}

/// How often the digest email goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestPeriod {
    /// At the end of each hour.
    Hourly,
    /// At midnight, school time.
    Daily,
}

/// Everything `[alerts]` sets, with defaults.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// The outbox. Default `../var/alerts` beside the policy (next to the decision log).
    pub outbox: PathBuf,
    /// Attempts that may wait for the alert task. Default 4096.
    pub queue: usize,
    /// How long a new alert waits for more attempts. Default 5 s (alerts go within 10).
    pub gather: Duration,
    /// The collapse window per person and category. Default 10 minutes.
    pub collapse: Duration,
    /// Most alerts sent in any minute. Default 30.
    pub max_per_minute: u32,
    /// First retry after a failed send. Default 5 s.
    pub retry_initial: Duration,
    /// Longest wait between retries. Default 15 minutes.
    pub retry_max: Duration,
    /// The digest's period. Default daily.
    pub digest: DigestPeriod,
    /// The SMTP channel, if configured.
    pub email: Option<EmailSettings>,
    /// The webhook channel, if configured.
    pub webhook: Option<WebhookSettings>,
}

impl AlertSettings {
    /// Compiles `[alerts]`; relative paths start at `base` (the policy's directory).
    pub fn compile(
        raw: &RawAlerts,
        base: &Path,
        source: &Source,
        errors: &mut Vec<ConfigError>,
    ) -> AlertSettings {
        let mut invalid = |span: std::ops::Range<usize>, what: String| {
            errors.push(source.error_at(span, ConfigErrorKind::InvalidValue(what)))
        };
        let gather = match &raw.gather_secs {
            None => 5,
            Some(g) if *g.get_ref() < 10 => *g.get_ref(),
            Some(g) => {
                invalid(
                    g.span(),
                    format!(
                        "gather_secs = {}: alerts must go within 10 s of the request; use 0 to 9",
                        g.get_ref()
                    ),
                );
                5
            }
        };
        let digest = match &raw.digest {
            None => DigestPeriod::Daily,
            Some(d) => match d.get_ref().as_str() {
                "daily" => DigestPeriod::Daily,
                "hourly" => DigestPeriod::Hourly,
                other => {
                    invalid(
                        d.span(),
                        format!("digest {other:?} is not \"hourly\" or \"daily\""),
                    );
                    DigestPeriod::Daily
                }
            },
        };
        let email = raw.email.as_ref().and_then(|e| {
            let tls = match e.tls.as_ref().map(|t| (t.get_ref().as_str(), t.span())) {
                None | Some(("starttls", _)) => SmtpTls::StartTls,
                Some(("tls", _)) => SmtpTls::Tls,
                Some(("none", _)) => SmtpTls::None,
                Some((other, span)) => {
                    invalid(
                        span,
                        format!("tls {other:?} is not \"starttls\", \"tls\" or \"none\""),
                    );
                    SmtpTls::StartTls
                }
            };
            let mut mailbox = |m: &toml::Spanned<String>, what: &str| {
                m.get_ref()
                    .parse::<lettre::message::Mailbox>()
                    .map_err(|err| {
                        invalid(
                            m.span(),
                            format!("{what} {:?} is not an email address: {err}", m.get_ref()),
                        )
                    })
                    .ok()
            };
            let from = mailbox(&e.from, "from");
            let to: Vec<_> = e.to.iter().filter_map(|t| mailbox(t, "to")).collect();
            if e.to.is_empty() {
                invalid(
                    e.server.span(),
                    "[alerts.email] needs at least one address in `to`".into(),
                );
            }
            if e.server.get_ref().trim().is_empty() {
                invalid(e.server.span(), "server is empty".into());
            }
            Some(EmailSettings {
                server: e.server.get_ref().trim().to_string(),
                port: e.port.unwrap_or(match tls {
                    SmtpTls::StartTls => 587,
                    SmtpTls::Tls => 465,
                    SmtpTls::None => 25,
                }),
                tls,
                from: from?,
                to,
                username: e.username.clone(),
                password_file: e.password_file.as_ref().map(|p| base.join(p.get_ref())),
                ca_file: e.ca_file.as_ref().map(|p| base.join(p.get_ref())),
            })
        });
        let webhook = raw.webhook.as_ref().and_then(|w| {
            let url = match w.url.get_ref().parse::<http::Uri>() {
                Ok(u)
                    if matches!(u.scheme_str(), Some("http" | "https"))
                        && u.host().is_some() =>
                {
                    Some(u)
                }
                _ => {
                    invalid(
                        w.url.span(),
                        format!(
                            "webhook url {:?} is not an http:// or https:// URL",
                            w.url.get_ref()
                        ),
                    );
                    None
                }
            };
            let secret = match (&w.secret_file, &w.secret) {
                (Some(f), None) => Some(Secret::File(base.join(f.get_ref()))),
                (None, Some(s)) if !s.get_ref().is_empty() => Some(Secret::Inline(s.get_ref().clone())),
                (Some(f), Some(_)) => {
                    invalid(f.span(), "give secret_file or secret, not both".into());
                    None
                }
                _ => {
                    invalid(
                        w.url.span(),
                        "[alerts.webhook] needs secret_file (or secret): an unsigned alert could be forged".into(),
                    );
                    None
                }
            };
            Some(WebhookSettings {
                url: url?,
                secret: secret?,
                ca_file: w.ca_file.as_ref().map(|p| base.join(p.get_ref())),
            })
        });
        AlertSettings {
            outbox: base.join(raw.outbox.as_deref().unwrap_or("../var/alerts")),
            queue: raw.queue.unwrap_or(4096).clamp(16, 1 << 20),
            gather: Duration::from_secs(gather),
            collapse: Duration::from_secs(raw.collapse_minutes.unwrap_or(10).min(24 * 60) * 60),
            max_per_minute: raw.max_per_minute.unwrap_or(30).max(1),
            retry_initial: Duration::from_secs(raw.retry_initial_secs.unwrap_or(5).max(1)),
            retry_max: Duration::from_secs(raw.retry_max_secs.unwrap_or(900).max(1)),
            digest,
            email,
            webhook,
        }
    }

    /// The channels configured, by name.
    pub fn channels(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.email.is_some() {
            c.push("email");
        }
        if self.webhook.is_some() {
            c.push("webhook");
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> (AlertSettings, Vec<String>) {
        let source = Source::new(Path::new("p.toml"), text);
        let raw: RawAlerts = source.parse(text).expect("parses");
        let mut errors = Vec::new();
        let s = AlertSettings::compile(&raw, Path::new("/etc/gh"), &source, &mut errors);
        (s, errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn defaults_and_errors_with_lines() {
        let (s, errors) = compile("");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.gather, Duration::from_secs(5));
        assert_eq!(s.collapse, Duration::from_secs(600));
        assert_eq!(s.outbox, Path::new("/etc/gh/../var/alerts"));
        assert!(s.channels().is_empty());
        let (s, errors) = compile(
            "gather_secs = 30\ndigest = \"weekly\"\n[email]\nserver = \"mail.test\"\nfrom = \"not an address\"\nto = [\"dsl@school.test\"]\ntls = \"maybe\"\n[webhook]\nurl = \"ftp://x\"\n",
        );
        assert!(s.email.is_none() && s.webhook.is_none());
        for want in [
            "p.toml:1: gather_secs = 30",
            "p.toml:2: digest \"weekly\"",
            "p.toml:5: from \"not an address\"",
            "p.toml:7: tls \"maybe\"",
            "p.toml:9: webhook url \"ftp://x\"",
            "p.toml:9: [alerts.webhook] needs secret_file",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(want)),
                "{want} in {errors:?}"
            );
        }
        let (s, errors) = compile(
            "[email]\nserver = \"mail.test\"\nfrom = \"Gatehouse <gh@school.test>\"\nto = [\"dsl@school.test\"]\n[webhook]\nurl = \"https://hooks.test/a\"\nsecret_file = \"hook.key\"\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let email = s.email.as_ref().expect("email");
        assert_eq!((email.port, email.tls), (587, SmtpTls::StartTls));
        assert_eq!(s.channels(), ["email", "webhook"]);
    }
}
