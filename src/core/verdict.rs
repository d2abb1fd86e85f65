//! What a decision says: who asked ([`Requester`]), the [`Verdict`] (allow or block, the
//! rule that decided as a [`Reason`], the categories matched, the grant), and the
//! [`ReasonCode`]s that the decision log, the reports and scripts read.
//!
//! Pure values: no I/O, no clock.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::core::category::{CategoryId, CategorySet};
use crate::core::group::{GroupId, Mode};
use crate::core::schedule::ScheduleId;

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// Their group.
    pub group: GroupId,
    /// Their login, if they authenticated.
    pub user: Option<&'a str>,
    /// Their address.
    pub client: Option<IpAddr>,
}

/// Allow or block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The request may go ahead.
    Allow,
    /// The request is refused with the block page.
    Block,
}

impl Action {
    /// `allow` / `block`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Block => "block",
        }
    }
}

/// Which rule decided, with what it needs to be explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Rule 1: an illegal category.
    Illegal {
        /// The category.
        category: CategoryId,
    },
    /// Rule 2: a teacher's lesson override that blocks (see [`Verdict::grant`]).
    LessonBlock,
    /// Rule 3: an active grant (see [`Verdict::grant`]).
    Grant,
    /// Rule 3: a teacher's lesson override that allows (see [`Verdict::grant`]).
    LessonAllow,
    /// Rule 3: the group's `block_sites` entry.
    BlockedSite {
        /// Index into the group's `block_sites`.
        entry: usize,
    },
    /// Rule 3: the group's `allow_sites` entry.
    AllowedSite {
        /// Index into the group's `allow_sites`.
        entry: usize,
    },
    /// Rule 3: an IP-literal host, for a group that blocks them.
    IpLiteral,
    /// Rule 4: a category the group blocks now.
    Category {
        /// The most severe such category.
        category: CategoryId,
        /// Set when the category is allowed only inside this schedule, and it is outside.
        outside: Option<ScheduleId>,
    },
    /// Rule 4 did not block because the request falls inside the schedule that allows
    /// the category.
    AllowedDuring {
        /// The category.
        category: CategoryId,
        /// The schedule.
        schedule: ScheduleId,
    },
    /// Rule 5, allowlist mode: a category the group allows.
    AllowedCategory {
        /// The category.
        category: CategoryId,
    },
    /// Rule 5: the mode's default.
    Mode(Mode),
}

/// A grant's identity as carried by a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRef {
    /// Grant id.
    pub id: Arc<str>,
    /// Helpdesk ticket.
    pub ticket: Arc<str>,
}

/// The outcome of [`Policy::decide`](crate::core::policy::Policy::decide).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allow or block.
    pub action: Action,
    /// Which rule decided.
    pub reason: Reason,
    /// Every category the request matched.
    pub categories: CategorySet,
    /// The group the decision was made for.
    pub group: GroupId,
    /// The grant that allowed it, if one did.
    pub grant: Option<GrantRef>,
}

impl Reason {
    /// The code the decision log records for this reason.
    pub fn code(&self) -> ReasonCode {
        match self {
            Reason::Illegal { .. } => ReasonCode::Illegal,
            Reason::Grant => ReasonCode::Grant,
            Reason::LessonBlock => ReasonCode::LessonBlock,
            Reason::LessonAllow => ReasonCode::LessonAllow,
            Reason::BlockedSite { .. } => ReasonCode::BlockSites,
            Reason::AllowedSite { .. } => ReasonCode::AllowSites,
            Reason::IpLiteral => ReasonCode::IpLiteral,
            Reason::Category { .. } => ReasonCode::Category,
            Reason::AllowedDuring { .. } => ReasonCode::AllowDuring,
            Reason::AllowedCategory { .. } => ReasonCode::AllowedCategory,
            Reason::Mode(_) => ReasonCode::Mode,
        }
    }
}

/// Why a request was allowed or refused, as the decision log records it: the policy
/// rule that decided (the first nine and the last two, from [`Reason::code`]), or a
/// refusal of how the request arrived, made before or beside the policy (the rest).
///
/// Stored and exported as its snake_case name (`category`, `no_sni`, …): the decision
/// log's on-disk form is the same as when these were strings, so logs written before
/// the enum read back unchanged. An unknown name (a log from a newer Gatehouse) is an
/// error when read, never silently mapped to another code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonCode {
    /// Rule 1: an illegal category.
    Illegal,
    /// Rule 2: a grant.
    Grant,
    /// Rule 3: the group's `block_sites`.
    BlockSites,
    /// Rule 3: the group's `allow_sites`.
    AllowSites,
    /// Rule 3: an IP-literal host, for a group that blocks them.
    IpLiteral,
    /// Rule 4: a category the group blocks now.
    Category,
    /// Rule 4 or 5: a category the group may reach inside one of its schedules.
    AllowDuring,
    /// Rule 5, allowlist mode: a category the group allows.
    AllowedCategory,
    /// Rule 5: the group's mode.
    Mode,
    /// A CONNECT to a port outside `tunnel_ports`.
    Port,
    /// A tunnel that did not start with a TLS ClientHello (a VPN or another protocol).
    NotTls,
    /// A TLS tunnel that names no server (SNI), for a group that requires one.
    NoSni,
    /// A ClientHello whose server name is not a valid host.
    BadSni,
    /// A ClientHello that hides its server behind Encrypted ClientHello.
    Ech,
    /// Proxy credentials that did not verify.
    AuthFailed,
    /// A destination on the school's own network (or this node) that may not be dialled.
    InternalDestination,
    /// Rule 2: a teacher's lesson override blocked it (appended: codes are stored as
    /// their names, so logs from before it read unchanged).
    LessonBlock,
    /// Rule 3: a teacher's lesson override allowed it.
    LessonAllow,
    /// An inspected tunnel's upstream whose TLS certificate did not verify.
    UpstreamCertificate,
    /// A request the proxy could not read as one (no host, a bad address, origin-form
    /// where the whole address is needed): answered `400` and recorded.
    BadRequest,
    /// A request inside an inspected tunnel for another site than the tunnel's (domain
    /// fronting, to dodge the decision): answered `421` and recorded.
    Misdirected,
}

impl ReasonCode {
    /// Every code, in declaration order.
    pub const ALL: [ReasonCode; 21] = [
        ReasonCode::Illegal,
        ReasonCode::Grant,
        ReasonCode::BlockSites,
        ReasonCode::AllowSites,
        ReasonCode::IpLiteral,
        ReasonCode::Category,
        ReasonCode::AllowDuring,
        ReasonCode::AllowedCategory,
        ReasonCode::Mode,
        ReasonCode::Port,
        ReasonCode::NotTls,
        ReasonCode::NoSni,
        ReasonCode::BadSni,
        ReasonCode::Ech,
        ReasonCode::AuthFailed,
        ReasonCode::InternalDestination,
        ReasonCode::LessonBlock,
        ReasonCode::LessonAllow,
        ReasonCode::UpstreamCertificate,
        ReasonCode::BadRequest,
        ReasonCode::Misdirected,
    ];

    /// The name stored and shown (`category`, `no_sni`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Illegal => "illegal",
            ReasonCode::Grant => "grant",
            ReasonCode::BlockSites => "block_sites",
            ReasonCode::AllowSites => "allow_sites",
            ReasonCode::IpLiteral => "ip_literal",
            ReasonCode::Category => "category",
            ReasonCode::AllowDuring => "allow_during",
            ReasonCode::AllowedCategory => "allowed_category",
            ReasonCode::Mode => "mode",
            ReasonCode::Port => "port",
            ReasonCode::NotTls => "not_tls",
            ReasonCode::NoSni => "no_sni",
            ReasonCode::BadSni => "bad_sni",
            ReasonCode::Ech => "ech",
            ReasonCode::AuthFailed => "auth_failed",
            ReasonCode::InternalDestination => "internal_destination",
            ReasonCode::LessonBlock => "lesson_block",
            ReasonCode::LessonAllow => "lesson_allow",
            ReasonCode::UpstreamCertificate => "upstream_certificate",
            ReasonCode::BadRequest => "bad_request",
            ReasonCode::Misdirected => "misdirected",
        }
    }

    /// The code with this name.
    pub fn parse(name: &str) -> Option<ReasonCode> {
        ReasonCode::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Whether this refusal is an attempt to get round the filter by how the request
    /// was made (the weekly report's bypass section), rather than by where it went.
    pub fn is_bypass(self) -> bool {
        matches!(
            self,
            ReasonCode::IpLiteral
                | ReasonCode::NoSni
                | ReasonCode::NotTls
                | ReasonCode::BadSni
                | ReasonCode::Ech
                | ReasonCode::AuthFailed
                | ReasonCode::Misdirected
        )
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ReasonCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ReasonCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        ReasonCode::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format_args!("unknown reason code {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_by_name_and_through_postcard_as_strings() {
        for code in ReasonCode::ALL {
            assert_eq!(ReasonCode::parse(code.as_str()), Some(code));
            // The stored form is the string's: logs from before the enum still read.
            let bytes = postcard::to_stdvec(&code).expect("encodes");
            assert_eq!(bytes, postcard::to_stdvec(code.as_str()).expect("encodes"));
            assert_eq!(postcard::from_bytes::<ReasonCode>(&bytes).ok(), Some(code));
        }
        assert_eq!(ReasonCode::parse("Category"), None);
        let unknown = postcard::to_stdvec("teleport").expect("encodes");
        assert!(postcard::from_bytes::<ReasonCode>(&unknown).is_err());
    }
}
