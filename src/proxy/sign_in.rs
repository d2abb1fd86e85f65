//! Who a request's `Proxy-Authorization` names, and the group they get: an account in
//! the users file first (local accounts, such as a technician's that must work when
//! the directory does not), else the school's directory when the policy has one, its
//! groups mapped by the policy's rules.
//!
//! With `[identity.kerberos]`, a `Proxy-Authorization: Negotiate` token is a Kerberos
//! sign-in: the principal, without its realm and normalised as the directory's names
//! are (`ann@SCHOOL.LOCAL` → `ann`), is then an account of the users file, else of the
//! directory (its groups read with the service account, no password), else a signed-in
//! user with the subnet's or default group. The sign-in holds for the connection
//! (RFC 4559): later requests on it need no token.
//!
//! A browser repeats its `Basic` header on every request of a connection. The last
//! sign-in on a connection is kept beside it ([`LastSignIn`], by a SHA-256 of the
//! header, never the header itself): the same header again, under the same policy and
//! with the directory's accounts unchanged, is that user again without decoding it,
//! normalising the name, looking it up in the caches and mapping its groups once more.
//! It is kept no longer than the sign-in cache behind it would keep it.
//!
//! The directory unreachable is not a wrong password: those sign-ins get a `503` page
//! saying so ([`Proxy::directory_unavailable`]), not a `407`, because browsers hide a
//! `407`'s page behind a new password prompt, which would have a pupil retype a right
//! password and learn nothing.

use std::sync::{Arc, Weak};
use std::time::Instant;

use http::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};

use super::auth::{parse_basic, AuthResult};
use super::conn::ConnSignal;
use super::{pages, Body, Proxy};
use crate::core::directory::{normalise_username, GroupMapping, Mapped};
use crate::core::group::GroupId;
use crate::core::policy::Policy;
use crate::directory::{Account, SignIn};
use crate::kerberos::Accepted;
use crate::settings::{KerberosSettings, Settings};
use crate::snapshot::Snapshot;

/// A connection's last `Basic` sign-in: a SHA-256 of the header it came from (never
/// the header: it holds the password, which the sign-in caches keep only hashed too),
/// what it gave, and what it held under. Weak references pin the policy and settings
/// it was made under (their allocations, so the addresses cannot be reused) without
/// keeping them alive.
pub(crate) struct LastSignIn {
    header: [u8; 32],
    policy: Weak<Policy>,
    settings: Weak<Settings>,
    /// [`crate::directory::Directory::generation`] when the directory answered; `None`
    /// for a users-file account.
    directory_generation: Option<u64>,
    /// When the cache behind it would stop answering for it.
    until: Instant,
    name: String,
    group: Option<GroupId>,
}

// Not derived: the header's hash is nobody's business in a log.
impl std::fmt::Debug for LastSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LastSignIn")
            .field("name", &self.name)
            .field("group", &self.group)
            .field("until", &self.until)
            .finish_non_exhaustive()
    }
}

impl LastSignIn {
    /// The user again, if `header` is the same and nothing it depends on has moved.
    fn answers(
        &self,
        header: &[u8; 32],
        snap: &Snapshot,
        now: Instant,
        directory_generation: u64,
    ) -> bool {
        self.header == *header
            && now < self.until
            && std::ptr::eq(self.policy.as_ptr(), Arc::as_ptr(&snap.policy))
            && std::ptr::eq(self.settings.as_ptr(), Arc::as_ptr(&snap.settings))
            && self
                .directory_generation
                .is_none_or(|g| g == directory_generation)
    }
}

/// The outcome of reading a request's credentials.
pub(super) enum SignedIn {
    /// No `Proxy-Authorization`.
    Missing,
    /// A signed-in user, and their group; `None`: the subnet's or default group
    /// (a directory user in no mapped group, with `unmapped = "default"`).
    User {
        /// The account name, as the decision log records it.
        name: String,
        /// The group their account or directory groups give.
        group: Option<GroupId>,
    },
    /// A users-file account with no usable entry: challenged again, not recorded.
    Unknown,
    /// Credentials refused, and why (for the decision record).
    Failed(String),
    /// The directory could not be asked.
    DirectoryDown,
    /// A Kerberos exchange needs another leg: this token (base64) goes back in a
    /// `407`'s `Proxy-Authenticate: Negotiate`.
    Continue(String),
}

/// The token of a `Negotiate` header value.
fn negotiate_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("negotiate")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// A directory account's group by the policy's rules.
fn mapped(account: &Account, mapping: &GroupMapping) -> SignedIn {
    match mapping.map_normalised(&account.normalised_groups) {
        Mapped::Group { group, .. } => SignedIn::User {
            name: account.name.clone(),
            group: Some(group),
        },
        Mapped::Default => SignedIn::User {
            name: account.name.clone(),
            group: None,
        },
        Mapped::Refused => SignedIn::Failed(format!(
            "directory account {:?} is in no mapped directory group, and the policy refuses such users (unmapped = \"refuse\")",
            account.name
        )),
    }
}

impl Proxy {
    /// Reads `header` against the users file, then the directory; with Kerberos, a
    /// `Negotiate` token, or the sign-in already made on this connection. `now` is when
    /// the request came.
    pub(super) async fn sign_in(
        &self,
        header: Option<&str>,
        snap: &Snapshot,
        conn: &ConnSignal,
        now: Instant,
    ) -> SignedIn {
        if let Some(settings) = snap.settings.kerberos.as_ref() {
            if let Some(token) = header.and_then(negotiate_token) {
                return self.negotiate(settings, token, snap, conn).await;
            }
            if header.is_none() {
                let signed_in = conn.negotiated().lock().ok().and_then(|n| n.user.clone());
                if let Some(name) = signed_in {
                    return self.kerberos_user(name, snap).await;
                }
            }
        }
        let Some(header) = header else {
            return SignedIn::Missing;
        };
        let directory_generation = self.directory.generation();
        let hashed: [u8; 32] = Sha256::digest(header.as_bytes()).into();
        if let Ok(last) = conn.last_sign_in().lock() {
            if let Some(last) = last
                .as_ref()
                .filter(|l| l.answers(&hashed, snap, now, directory_generation))
            {
                if last.directory_generation.is_some() {
                    self.metrics.directory_cache_hits.inc();
                }
                return SignedIn::User {
                    name: last.name.clone(),
                    group: last.group,
                };
            }
        }
        let (signed_in, until, from_directory) = self.basic(header, snap).await;
        if let (SignedIn::User { name, group }, Some(until)) = (&signed_in, until) {
            if let Ok(mut last) = conn.last_sign_in().lock() {
                *last = Some(LastSignIn {
                    header: hashed,
                    policy: Arc::downgrade(&snap.policy),
                    settings: Arc::downgrade(&snap.settings),
                    directory_generation: from_directory.then_some(directory_generation),
                    until,
                    name: name.clone(),
                    group: *group,
                });
            }
        }
        signed_in
    }

    /// A `Basic` header read against the users file, then the directory: the outcome,
    /// for a success when the cache behind it stops answering for it, and whether the
    /// directory answered.
    async fn basic(&self, header: &str, snap: &Snapshot) -> (SignedIn, Option<Instant>, bool) {
        let identity = &snap.policy.identity;
        let failed = || SignedIn::Failed("proxy authentication failed".to_string());
        let Some((user, password)) = parse_basic(header) else {
            return (failed(), None, false);
        };
        // A users-file account signs in with its own password only, never against the
        // directory.
        if identity.user(&user).is_some() {
            let (result, until) = self
                .auth
                .check_credentials_until(user, password, identity)
                .await;
            let signed_in = match result {
                AuthResult::User(name) => match identity.user(&name) {
                    Some(u) => SignedIn::User {
                        group: Some(u.group),
                        name,
                    },
                    None => SignedIn::Unknown,
                },
                AuthResult::Missing | AuthResult::Failed => failed(),
            };
            return (signed_in, until, false);
        }
        let (Some(settings), Some(mapping)) =
            (snap.settings.directory.as_ref(), identity.directory())
        else {
            return (failed(), None, false);
        };
        let (result, until) = self
            .directory
            .sign_in_until(settings, &user, &password)
            .await;
        let signed_in = match result {
            SignIn::Ok(account) => mapped(&account, mapping),
            SignIn::Refused(e) => {
                tracing::info!(target: "gatehouse::auth", error = %e, "directory sign-in refused");
                SignedIn::Failed(format!("directory sign-in refused: {e}"))
            }
            SignIn::Unavailable(e) => {
                tracing::warn!(target: "gatehouse::auth", error = %e, "directory unavailable: new sign-in refused");
                SignedIn::DirectoryDown
            }
        };
        (signed_in, until, true)
    }

    /// One `Negotiate` token: a sign-in for this connection, another leg, or a refusal.
    async fn negotiate(
        &self,
        settings: &KerberosSettings,
        token: &str,
        snap: &Snapshot,
        conn: &ConnSignal,
    ) -> SignedIn {
        let pending = conn
            .negotiated()
            .lock()
            .ok()
            .and_then(|mut n| n.pending.take());
        match self.kerberos.accept(settings, pending, token).await {
            Ok(Accepted::Complete { principal }) => {
                let name = match normalise_username(&principal) {
                    Ok(name) => name,
                    Err(e) => {
                        return SignedIn::Failed(format!(
                            "Kerberos principal {principal:?} is no account name: {e}"
                        ))
                    }
                };
                tracing::debug!(target: "gatehouse::auth", principal = %principal, "Kerberos sign-in");
                if let Ok(mut n) = conn.negotiated().lock() {
                    n.user = Some(name.clone());
                }
                self.kerberos_user(name, snap).await
            }
            Ok(Accepted::Continue { context, token }) => {
                use base64::Engine;
                if let Ok(mut n) = conn.negotiated().lock() {
                    n.pending = Some(context);
                }
                SignedIn::Continue(base64::engine::general_purpose::STANDARD.encode(token))
            }
            Err(e) => {
                if matches!(e, crate::kerberos::KerberosError::Credentials { .. }) {
                    tracing::warn!(target: "gatehouse::auth", error = %e, "Kerberos sign-in impossible: the proxy's own key is missing");
                } else {
                    tracing::info!(target: "gatehouse::auth", error = %e, "Kerberos sign-in refused");
                }
                SignedIn::Failed(format!("Kerberos sign-in refused: {e}"))
            }
        }
    }

    /// The group of `name`, signed in by Kerberos: the users file's, else the
    /// directory's (no password: the ticket proved who it is), else none (the subnet's
    /// or the default group).
    async fn kerberos_user(&self, name: String, snap: &Snapshot) -> SignedIn {
        let identity = &snap.policy.identity;
        if let Some(u) = identity.user(&name) {
            return SignedIn::User {
                group: Some(u.group),
                name,
            };
        }
        if let (Some(settings), Some(mapping)) =
            (snap.settings.directory.as_ref(), identity.directory())
        {
            return match self.directory.account(settings, &name).await {
                SignIn::Ok(account) => mapped(&account, mapping),
                SignIn::Refused(e) => SignedIn::Failed(format!(
                    "Kerberos user {name:?} is not in the directory: {e}"
                )),
                SignIn::Unavailable(e) => {
                    tracing::warn!(target: "gatehouse::auth", error = %e, "directory unavailable: Kerberos user's groups cannot be read");
                    SignedIn::DirectoryDown
                }
            };
        }
        SignedIn::User { name, group: None }
    }

    /// The `503` page for a new sign-in while the directory cannot be reached.
    pub(super) fn directory_unavailable(&self, snap: &Snapshot) -> Response<Body> {
        let mut resp = Proxy::page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::error_page(
                &snap.policy.school,
                "Sign-in is unavailable",
                "-",
                "The school's directory cannot be reached, so the web filter cannot check your username and password. People already signed in keep working; please try again in a few minutes.",
            ),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        resp
    }
}
