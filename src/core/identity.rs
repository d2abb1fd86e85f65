//! Who is asking: source subnets, proxy-authenticated users, and the group each maps to.
//!
//! Identity comes only from what a client cannot forge at will: the address of its
//! connection, or credentials checked against the users file. Never from
//! `X-Forwarded-For`, `Forwarded` or `X-Real-IP`.
//!
//! Pure: the users file's text is parsed by the caller.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::core::directory::GroupMapping;
use crate::core::group::GroupId;

/// Whether clients in a subnet must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRequirement {
    /// The subnet's group applies; a client may still authenticate as a user.
    None,
    /// Clients must authenticate (`407` until they do).
    Required,
}

/// A source subnet and the group of the clients in it.
#[derive(Debug, Clone)]
pub struct SubnetRule {
    /// The network.
    pub net: IpNet,
    /// Its group.
    pub group: GroupId,
    /// Whether authentication is required.
    pub auth: AuthRequirement,
    /// What it is, for people.
    pub description: String,
}

/// A device name for an address or a subnet (`[[identity.devices]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    /// The address (a /32 or /128) or subnet.
    pub net: IpNet,
    /// The name recorded for clients in it.
    pub name: String,
}

/// The longest a device name may be: a DNS name's limit.
pub const DEVICE_NAME_MAX: usize = 253;

/// Why a device name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceNameError {
    /// Nothing (or only spaces).
    #[error("device name is empty")]
    Empty,
    /// Longer than [`DEVICE_NAME_MAX`] bytes.
    #[error("device name is {0} bytes long; at most 253 (a DNS name's limit)")]
    TooLong(usize),
    /// Holds a control character (a line break would forge a line in a text export).
    #[error("device name holds a control character")]
    Control,
}

/// A device name as recorded: trimmed, with a DNS name's trailing dot dropped, of a
/// bounded length and without control characters. Used for the policy's names and for
/// names from reverse DNS alike, so a log never holds a name that breaks a CSV row or
/// a terminal.
pub fn device_name(text: &str) -> Result<String, DeviceNameError> {
    let name = text.trim();
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(DeviceNameError::Empty);
    }
    if name.len() > DEVICE_NAME_MAX {
        return Err(DeviceNameError::TooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(DeviceNameError::Control);
    }
    Ok(name.to_string())
}

/// A proxy user from the users file.
#[derive(Debug, Clone)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Their group.
    pub group: GroupId,
    /// Argon2 PHC password hash, if the user may authenticate.
    pub password_hash: Option<String>,
}

/// The identity rules of a policy.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Group of clients that match no subnet.
    pub default_group: GroupId,
    /// Subnets, most specific first.
    subnets: Vec<SubnetRule>,
    /// Users by login name.
    users: HashMap<String, User>,
    /// Directory groups → groups, when the policy has `[identity.directory]`.
    directory: Option<GroupMapping>,
    /// Device names, most specific first.
    devices: Vec<DeviceRule>,
}

/// Where a requester's group came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSource {
    /// The longest matching subnet (its index in policy order is not kept).
    Subnet,
    /// No subnet matched.
    Default,
    /// The authenticated user's entry.
    User,
    /// The signed-in directory user's groups, by a mapping rule.
    Directory,
}

impl Identity {
    /// Builds the rules; sorts subnets so the longest prefix is found first.
    pub fn new(default_group: GroupId, mut subnets: Vec<SubnetRule>, users: Vec<User>) -> Identity {
        subnets.sort_by_key(|s| std::cmp::Reverse(s.net.prefix_len()));
        Identity {
            default_group,
            subnets,
            users: users.into_iter().map(|u| (u.name.clone(), u)).collect(),
            directory: None,
            devices: Vec::new(),
        }
    }

    /// These rules with device names; the most specific address or subnet names a
    /// client.
    pub fn with_devices(mut self, mut devices: Vec<DeviceRule>) -> Identity {
        devices.sort_by_key(|d| std::cmp::Reverse(d.net.prefix_len()));
        self.devices = devices;
        self
    }

    /// The policy's name for the device at `client`, if it names one.
    pub fn device_for(&self, client: IpAddr) -> Option<&str> {
        let client = canonical_ip(client);
        self.devices
            .iter()
            .find(|d| d.net.contains(&client))
            .map(|d| d.name.as_str())
    }

    /// These rules with the directory's group mapping: users not in the users file sign
    /// in against the directory.
    pub fn with_directory(mut self, mapping: GroupMapping) -> Identity {
        self.directory = Some(mapping);
        self
    }

    /// The directory's group mapping, when the policy has a directory.
    pub fn directory(&self) -> Option<&GroupMapping> {
        self.directory.as_ref()
    }

    /// The most specific subnet holding `client`, if any. IPv4-mapped IPv6 addresses
    /// (`::ffff:10.0.0.1`, as a dual-stack socket reports IPv4 clients) count as IPv4.
    pub fn subnet_for(&self, client: IpAddr) -> Option<&SubnetRule> {
        let client = canonical_ip(client);
        self.subnets.iter().find(|s| s.net.contains(&client))
    }

    /// The group for an unauthenticated client at `client`.
    pub fn group_for_client(&self, client: IpAddr) -> (GroupId, GroupSource) {
        match self.subnet_for(client) {
            Some(rule) => (rule.group, GroupSource::Subnet),
            None => (self.default_group, GroupSource::Default),
        }
    }

    /// A user by login name.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// All users, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// The subnets, most specific first.
    pub fn subnets(&self) -> &[SubnetRule] {
        &self.subnets
    }
}

/// IPv4-mapped IPv6 → IPv4; everything else unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_table() {
        let long = "a".repeat(254);
        let rows: &[(&str, Result<&str, DeviceNameError>)] = &[
            ("KS2-LAPTOP-17", Ok("KS2-LAPTOP-17")),
            ("  lib-pc-04.school.local. ", Ok("lib-pc-04.school.local")),
            ("Mrs Patel's iPad", Ok("Mrs Patel's iPad")),
            ("", Err(DeviceNameError::Empty)),
            (" . ", Err(DeviceNameError::Empty)),
            (&long, Err(DeviceNameError::TooLong(254))),
            ("pc\\nforged,line", Ok("pc\\nforged,line")),
            ("pc\n2", Err(DeviceNameError::Control)),
        ];
        for (text, want) in rows {
            let want = want.clone().map(str::to_string);
            assert_eq!(device_name(text), want, "{text:?}");
        }
    }

    #[test]
    fn most_specific_device_rule_names_the_client() {
        let rule = |cidr: &str, name: &str| DeviceRule {
            net: net(cidr),
            name: name.into(),
        };
        let id = Identity::new(GroupId::new(0), vec![], vec![]).with_devices(vec![
            rule("10.20.3.0/24", "KS2 trolley"),
            rule("10.20.3.17/32", "KS2-LAPTOP-17"),
            rule("fd00::5/128", "v6 box"),
        ]);
        let rows: &[(&str, Option<&str>)] = &[
            ("10.20.3.17", Some("KS2-LAPTOP-17")),
            ("::ffff:10.20.3.17", Some("KS2-LAPTOP-17")),
            ("10.20.3.18", Some("KS2 trolley")),
            ("fd00::5", Some("v6 box")),
            ("10.20.4.1", None),
        ];
        for (ip, want) in rows {
            let ip: IpAddr = ip.parse().expect("test IP");
            assert_eq!(id.device_for(ip), *want, "{ip}");
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("test CIDR")
    }

    #[test]
    fn longest_prefix_wins() {
        let g = |i| GroupId::new(i);
        let rule = |cidr: &str, group| SubnetRule {
            net: net(cidr),
            group,
            auth: AuthRequirement::None,
            description: String::new(),
        };
        let id = Identity::new(
            g(0),
            vec![
                rule("10.0.0.0/8", g(1)),
                rule("10.20.0.0/16", g(2)),
                rule("10.20.5.0/24", g(3)),
                rule("fd00::/8", g(4)),
            ],
            vec![],
        );
        let rows: &[(&str, usize, GroupSource)] = &[
            ("10.1.1.1", 1, GroupSource::Subnet),
            ("10.20.1.1", 2, GroupSource::Subnet),
            ("10.20.5.9", 3, GroupSource::Subnet),
            ("::ffff:10.20.5.9", 3, GroupSource::Subnet),
            ("fd12::1", 4, GroupSource::Subnet),
            ("192.168.1.1", 0, GroupSource::Default),
        ];
        for (ip, want, source) in rows {
            let ip: IpAddr = ip.parse().expect("test IP");
            assert_eq!(id.group_for_client(ip), (g(*want), *source), "{ip}");
        }
    }
}
