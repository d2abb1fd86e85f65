//! Grants: ticketed, time-boxed unblocks.
//!
//! A technician lifts the filter for some requesters (groups, users, client subnets) and
//! some targets (sites, URL prefixes, categories) for a period of study, against a
//! helpdesk ticket. A [`Grant`] can only be built through [`Grant::new`], which refuses
//! anything that would reach an `illegal` category, so the decision code never has to
//! ask. Expiry is checked when deciding, against the time passed in, not when loading.
//!
//! Pure: no I/O, no clock. The grants file, its watcher and the commands come with the
//! grants issue; here grants are a type and an input to [`crate::policy::Policy::decide`].

#![deny(clippy::disallowed_methods)]

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use crate::category::CategorySet;
use crate::classify::CompiledLists;
use crate::host::Target;
use crate::policy::{GroupId, Policy, SiteList};

/// Why a grant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// No ticket, or one that does not look like a helpdesk ticket.
    #[error("ticket {0:?} is not a helpdesk ticket reference")]
    Ticket(String),
    /// The reason is empty or a placeholder.
    #[error("a grant needs a real reason (got {0:?})")]
    Reason(String),
    /// No issuer named.
    #[error("a grant must name who issued it")]
    IssuedBy,
    /// Neither groups, users nor subnets.
    #[error("a grant must name at least one group, user or subnet it applies to")]
    EmptyScope,
    /// Neither sites nor categories.
    #[error("a grant must name at least one site, URL or category it unblocks")]
    EmptyTarget,
    /// `expires` not after `starts`.
    #[error("a grant must expire after it starts")]
    Period,
    /// A site or URL that is not a valid host or host/path.
    #[error("site {entry:?}: {reason}")]
    Site {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A target that reaches an `illegal` category.
    #[error("{0} is in the illegal category {1}: no grant can unblock it")]
    Illegal(String, String),
}

/// Who a grant applies to.
#[derive(Debug, Clone, Default)]
pub struct GrantScope {
    /// Groups it applies to.
    pub groups: Vec<GroupId>,
    /// Proxy-authenticated users it applies to.
    pub users: Vec<String>,
    /// Client networks it applies to.
    pub subnets: Vec<IpNet>,
}

/// A grant, validated.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Stable identifier.
    pub id: Arc<str>,
    /// Helpdesk ticket reference (`HD-4411`).
    pub ticket: Arc<str>,
    /// Technician who issued it.
    pub issued_by: String,
    /// Why (the period of study).
    pub reason: String,
    /// Who it applies to.
    pub scope: GrantScope,
    /// Sites and URL prefixes it opens.
    pub sites: SiteList,
    /// Categories it opens.
    pub categories: CategorySet,
    /// When it starts to apply.
    pub starts: DateTime<Utc>,
    /// When it stops applying.
    pub expires: DateTime<Utc>,
}

/// A grant as requested, before validation.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    /// Identifier.
    pub id: String,
    /// Ticket reference.
    pub ticket: String,
    /// Issuer.
    pub issued_by: String,
    /// Reason.
    pub reason: String,
    /// Scope.
    pub scope: GrantScope,
    /// Sites and URL prefixes (`example.com`, `example.com/unit/`).
    pub sites: Vec<String>,
    /// Category names.
    pub categories: CategorySet,
    /// Start.
    pub starts: DateTime<Utc>,
    /// Expiry.
    pub expires: DateTime<Utc>,
}

/// Reasons that say nothing, refused so that the audit trail means something.
const PLACEHOLDER_REASONS: &[&str] = &[
    "", "-", "n/a", "na", "none", "tbc", "todo", "test", "x", "reason", "asdf", ".",
];

impl Grant {
    /// Validates a request against the policy and its lists. Refuses any target that an
    /// `illegal` list matches or that names an `illegal` category.
    pub fn new(
        req: GrantRequest,
        policy: &Policy,
        lists: &CompiledLists,
    ) -> Result<Grant, GrantError> {
        let ticket_ok = !req.ticket.is_empty()
            && req.ticket.contains('-')
            && req
                .ticket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ticket_ok {
            return Err(GrantError::Ticket(req.ticket));
        }
        let reason = req.reason.trim();
        if PLACEHOLDER_REASONS.contains(&reason.to_lowercase().as_str()) || reason.len() < 4 {
            return Err(GrantError::Reason(req.reason));
        }
        if req.issued_by.trim().is_empty() {
            return Err(GrantError::IssuedBy);
        }
        if req.scope.groups.is_empty() && req.scope.users.is_empty() && req.scope.subnets.is_empty()
        {
            return Err(GrantError::EmptyScope);
        }
        if req.sites.is_empty() && req.categories.is_empty() {
            return Err(GrantError::EmptyTarget);
        }
        if req.expires <= req.starts {
            return Err(GrantError::Period);
        }
        if let Some(c) = req.categories.intersection(policy.illegal()).iter().next() {
            let name = policy.category(c).name.clone();
            return Err(GrantError::Illegal(format!("category {name}"), name));
        }
        let sites = SiteList::parse(&req.sites)
            .map_err(|(entry, reason)| GrantError::Site { entry, reason })?;
        for entry in sites.entries() {
            let bits = policy.illegal_bits_of_site(lists, entry);
            if let Some(c) = bits.iter().next() {
                return Err(GrantError::Illegal(
                    entry.text.clone(),
                    policy.category(c).name.clone(),
                ));
            }
        }
        Ok(Grant {
            id: req.id.into(),
            ticket: req.ticket.into(),
            issued_by: req.issued_by,
            reason: req.reason,
            scope: req.scope,
            sites,
            categories: req.categories,
            starts: req.starts,
            expires: req.expires,
        })
    }

    /// Whether the grant is in force at `at` (`starts` ≤ `at` < `expires`).
    pub fn active_at(&self, at: DateTime<Utc>) -> bool {
        self.starts <= at && at < self.expires
    }

    /// Whether the grant's scope covers this requester.
    pub fn covers_requester(
        &self,
        group: GroupId,
        user: Option<&str>,
        client: Option<IpAddr>,
    ) -> bool {
        self.scope.groups.contains(&group)
            || user.is_some_and(|u| self.scope.users.iter().any(|g| g == u))
            || client.is_some_and(|ip| self.scope.subnets.iter().any(|n| n.contains(&ip)))
    }

    /// Whether the grant's sites cover the target.
    pub fn covers_site(&self, target: &Target) -> bool {
        self.sites.find(target).is_some()
    }
}
