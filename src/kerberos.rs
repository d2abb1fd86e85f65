//! Kerberos single sign-on: `Proxy-Authorization: Negotiate` (SPNEGO, RFC 4559) tokens
//! accepted with the system's GSSAPI (MIT Kerberos, through `libgssapi`) and the proxy's
//! keytab, so a domain-joined device signs in with the user's Windows logon and no
//! prompt.
//!
//! The keytab is named to GSSAPI by `KRB5_KTNAME`, which `gatehouse run` sets from
//! `[identity.kerberos] keytab` before any thread starts ([`keytab_of`]): the library
//! has no per-call keytab, and changing the environment of a running, threaded process
//! is unsound. So a new keytab *path* takes effect at the next start; new keys written
//! into the same file (a password change of the service account) are read at once, as
//! MIT reads the keytab at each acceptance.
//!
//! A token is checked on the blocking pool: GSSAPI reads the keytab and writes its
//! replay cache (a token seen twice is refused) on disk.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libgssapi::context::{SecurityContext, ServerCtx};
use libgssapi::credential::{Cred, CredUsage};
use libgssapi::name::Name;
use libgssapi::oid::{OidSet, GSS_MECH_KRB5, GSS_MECH_SPNEGO, GSS_NT_KRB5_PRINCIPAL};

use crate::settings::KerberosSettings;

/// Why a Negotiate token was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KerberosError {
    /// The proxy's own credentials cannot be had: no keytab, no key for the principal.
    #[error("the proxy's Kerberos key for {principal} cannot be read from the keytab {keytab}: {reason}")]
    Credentials {
        /// The service principal, or "any principal".
        principal: String,
        /// The keytab file.
        keytab: PathBuf,
        /// GSSAPI's words.
        reason: String,
    },
    /// The token is not base64.
    #[error("the Negotiate token is not base64")]
    NotBase64,
    /// GSSAPI refused the token: a ticket for another service, expired, replayed,
    /// forged, or not Kerberos.
    #[error("the Negotiate token was refused: {0}")]
    Refused(String),
    /// The checking task failed.
    #[error("the Negotiate token could not be checked: {0}")]
    Internal(String),
}

/// One acceptance step.
pub enum Accepted {
    /// Signed in as this principal (`user@REALM`).
    Complete {
        /// The client's principal.
        principal: String,
    },
    /// Another leg is needed: send `token` to the client (in `Proxy-Authenticate:
    /// Negotiate`), and give its answer to the same context on the same connection.
    Continue {
        /// The half-made context.
        context: Box<ServerCtx>,
        /// The token for the client.
        token: Vec<u8>,
    },
}

/// The proxy's acceptor credentials, acquired once per settings.
#[derive(Default)]
pub struct Kerberos {
    cred: Mutex<Option<(KerberosSettings, Cred)>>,
}

impl Kerberos {
    fn cred(&self, settings: &KerberosSettings) -> Result<Cred, KerberosError> {
        if let Ok(held) = self.cred.lock() {
            if let Some((for_settings, cred)) = held.as_ref() {
                if for_settings == settings {
                    return Ok(cred.clone());
                }
            }
        }
        let cred = acquire(settings)?;
        if let Ok(mut held) = self.cred.lock() {
            *held = Some((settings.clone(), cred.clone()));
        }
        Ok(cred)
    }

    /// Takes one `Negotiate` token (base64, as in the header): a new context, or the
    /// connection's half-made one.
    pub async fn accept(
        &self,
        settings: &KerberosSettings,
        context: Option<Box<ServerCtx>>,
        token_b64: &str,
    ) -> Result<Accepted, KerberosError> {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD
            .decode(token_b64.trim())
            .map_err(|_| KerberosError::NotBase64)?;
        let cred = match context {
            Some(_) => None,
            None => Some(self.cred(settings)?),
        };
        tokio::task::spawn_blocking(move || {
            let mut context = context.unwrap_or_else(|| Box::new(ServerCtx::new(cred)));
            let out = context
                .step(&token, None)
                .map_err(|e| KerberosError::Refused(e.to_string()))?;
            if context.is_complete() {
                let principal = context
                    .source_name()
                    .map_err(|e| KerberosError::Refused(e.to_string()))?
                    .to_string();
                Ok(Accepted::Complete { principal })
            } else {
                Ok(Accepted::Continue {
                    context,
                    token: out.map(|b| b.to_vec()).unwrap_or_default(),
                })
            }
        })
        .await
        .map_err(|e| KerberosError::Internal(e.to_string()))?
    }
}

/// Acquires the acceptor credentials (for SPNEGO and bare Kerberos) of the service
/// principal, or of any key in the keytab.
pub fn acquire(settings: &KerberosSettings) -> Result<Cred, KerberosError> {
    let failed = |e: libgssapi::error::Error| KerberosError::Credentials {
        principal: settings
            .service_principal
            .clone()
            .unwrap_or_else(|| "any principal".into()),
        keytab: settings.keytab.clone(),
        reason: e.to_string(),
    };
    let name = match &settings.service_principal {
        Some(p) => Some(Name::new(p.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL)).map_err(failed)?),
        None => None,
    };
    let mut mechs = OidSet::new();
    mechs.add(GSS_MECH_SPNEGO).map_err(failed)?;
    mechs.add(GSS_MECH_KRB5).map_err(failed)?;
    Cred::acquire(name.as_ref(), None, CredUsage::Accept, Some(&mechs)).map_err(failed)
}

/// The keytab `[identity.kerberos]` of the policy at `config` names, if any, resolved
/// against the policy's directory: read by `gatehouse run` before it starts threads, to
/// set `KRB5_KTNAME`. A policy that cannot be read gives `None` here; the load that
/// follows reports it.
pub fn keytab_of(config: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(config).ok()?;
    let value: toml::Value = toml::from_str(&text).ok()?;
    let keytab = value
        .get("identity")?
        .get("kerberos")?
        .get("keytab")?
        .as_str()?
        .trim();
    if keytab.is_empty() {
        return None;
    }
    Some(config.parent().unwrap_or(Path::new(".")).join(keytab))
}
