//! Who a request's `Proxy-Authorization` names, and the group they get: an account in
//! the users file first (local accounts, such as a technician's that must work when
//! the directory does not), else the school's directory when the policy has one, its
//! groups mapped by the policy's rules.
//!
//! The directory unreachable is not a wrong password: those sign-ins get a `503` page
//! saying so ([`Proxy::directory_unavailable`]), not a `407`, because browsers hide a
//! `407`'s page behind a new password prompt, which would have a pupil retype a right
//! password and learn nothing.

use http::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::auth::{parse_basic, AuthResult};
use super::{pages, Body, Proxy};
use crate::core::directory::Mapped;
use crate::core::group::GroupId;
use crate::directory::SignIn;
use crate::snapshot::Snapshot;

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
}

impl Proxy {
    /// Reads `header` against the users file, then the directory.
    pub(super) async fn sign_in(&self, header: Option<&str>, snap: &Snapshot) -> SignedIn {
        let identity = &snap.policy.identity;
        match self.auth.check(header, identity).await {
            AuthResult::Missing => SignedIn::Missing,
            AuthResult::User(name) => match identity.user(&name) {
                Some(u) => SignedIn::User {
                    group: Some(u.group),
                    name,
                },
                None => SignedIn::Unknown,
            },
            AuthResult::Failed => {
                let failed = || SignedIn::Failed("proxy authentication failed".to_string());
                let (Some(settings), Some(mapping)) =
                    (snap.settings.directory.as_ref(), identity.directory())
                else {
                    return failed();
                };
                let Some((user, password)) = header.and_then(parse_basic) else {
                    return failed();
                };
                // A users-file account signs in with its own password only.
                if identity.user(&user).is_some() {
                    return failed();
                }
                match self.directory.sign_in(settings, &user, &password).await {
                    SignIn::Ok(account) => match mapping.map(&account.groups) {
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
                    },
                    SignIn::Refused(e) => {
                        tracing::info!(target: "gatehouse::auth", error = %e, "directory sign-in refused");
                        SignedIn::Failed(format!("directory sign-in refused: {e}"))
                    }
                    SignIn::Unavailable(e) => {
                        tracing::warn!(target: "gatehouse::auth", error = %e, "directory unavailable: new sign-in refused");
                        SignedIn::DirectoryDown
                    }
                }
            }
        }
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
