//! Groups: the filtering levels (`ks2`, `staff`, `guest`) and what each may reach.
//!
//! A [`Group`] is one compiled `[groups.NAME]` table; [`GroupId`] is its index in the
//! policy, the value identity rules, grants and verdicts carry instead of a name.

use std::fmt;

use crate::core::category::{CategoryId, CategorySet};
use crate::core::inspect::Controls;
use crate::core::safe_search::GroupSafeSearch;
use crate::core::schedule::ScheduleId;
use crate::core::site::SiteList;

/// A group's index in its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(u16);

impl GroupId {
    /// The id of the `index`th group.
    pub fn new(index: usize) -> GroupId {
        GroupId(index as u16)
    }

    /// Index into the policy's group table.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// What a group gets when no earlier rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything not blocked is allowed.
    Blocklist,
    /// Only allowed categories and sites are reachable (a walled garden).
    Allowlist,
}

impl Mode {
    /// The name used in policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Blocklist => "blocklist",
            Mode::Allowlist => "allowlist",
        }
    }
}

/// A filtering level.
#[derive(Debug, Clone)]
pub struct Group {
    /// Name (`ks2`, `staff`).
    pub name: String,
    /// Who is in it.
    pub description: String,
    /// Blocklist or allowlist.
    pub mode: Mode,
    /// Categories blocked at all times.
    pub block: CategorySet,
    /// Categories allowed explicitly.
    pub allow: CategorySet,
    /// Categories blocked except inside a schedule's windows.
    pub allow_during: Vec<(CategoryId, ScheduleId)>,
    /// Sites always allowed.
    pub allow_sites: SiteList,
    /// Sites always blocked.
    pub block_sites: SiteList,
    /// Whether IP-literal hosts are blocked.
    pub block_ip_literals: bool,
    /// Whether TLS tunnels must name their server (SNI).
    pub require_sni: bool,
    /// Whether TLS tunnels may not hide their server behind Encrypted ClientHello.
    pub block_ech: bool,
    /// Whether the group is refused (`503`) while the decision log cannot be written.
    pub fail_closed: bool,
    /// Safe search and YouTube's Restricted Mode, enforced by where requests are dialled.
    pub safe_search: GroupSafeSearch,
    /// Whether the group's HTTPS is inspected with the school CA.
    pub inspect_tls: bool,
    /// Header and parameter controls on requests Gatehouse sees whole.
    pub controls: Controls,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
