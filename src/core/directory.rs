//! The school's directory (LDAP / Active Directory), the pure part: user names as people
//! type them, made into the account name the directory knows; values escaped for an LDAP
//! search filter (RFC 4515) so a user name cannot change the filter's meaning; and the
//! policy's rules mapping directory groups to Gatehouse groups.
//!
//! Pure: no I/O. Talking to the directory (binds, searches, the cache, the sync) is the
//! shell's `directory` module; it hands the groups it read to [`GroupMapping::map`].

use crate::core::group::GroupId;

/// Why a typed user name cannot be an account name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Nothing left once the domain or realm is taken off.
    #[error("the user name is empty")]
    Empty,
    /// Longer than any directory allows (AD's sAMAccountName is at most 20; 256 here).
    #[error("the user name is longer than {MAX_USERNAME} characters")]
    TooLong,
    /// A control character (NUL, newline, …): never part of an account name.
    #[error("the user name holds a control character")]
    Control,
}

/// The longest user name taken, in characters.
pub const MAX_USERNAME: usize = 256;

/// The account name for a user name as typed: `SCHOOL\jsmith`, `jsmith@SCHOOL.LOCAL`
/// and `JSmith` all become `jsmith`.
///
/// The domain before a backslash (down-level logon name) and the realm or UPN suffix
/// after the last `@` are dropped: Gatehouse serves one directory, and schools set the
/// UPN prefix to the account name (the AD default). The name is case-folded as AD and
/// OpenLDAP's `uid` compare it (case-insensitively), so one person has one cache entry
/// and one name in the decision log however they typed it.
pub fn normalise_username(typed: &str) -> Result<String, UsernameError> {
    let name = typed.trim();
    let name = match name.rsplit_once('\\') {
        Some((_, account)) => account,
        None => name,
    };
    let name = match name.rsplit_once('@') {
        Some((account, _)) => account,
        None => name,
    };
    if name.chars().any(char::is_control) {
        return Err(UsernameError::Control);
    }
    if name.is_empty() {
        return Err(UsernameError::Empty);
    }
    if name.chars().count() > MAX_USERNAME {
        return Err(UsernameError::TooLong);
    }
    Ok(name.to_lowercase())
}

/// `value` escaped for an LDAP search filter (RFC 4515 §3): `*`, `(`, `)`, `\` and NUL
/// become `\2a`, `\28`, `\29`, `\5c`, `\00`, so `*)(uid=*` is a name, never a filter.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// The placeholder in a user search filter that the escaped account name replaces.
pub const USER_PLACEHOLDER: &str = "{user}";

/// The default user search filter: Active Directory's accounts by `sAMAccountName`.
/// OpenLDAP-style trees set `user_filter = "(uid={user})"`.
pub const DEFAULT_USER_FILTER: &str = "(&(objectClass=user)(sAMAccountName={user}))";

/// `template` with every `{user}` replaced by the escaped `account`.
pub fn user_filter(template: &str, account: &str) -> String {
    template.replace(USER_PLACEHOLDER, &escape_filter_value(account))
}

/// A distinguished name in a form that compares as the directory compares it: lower
/// case, no spaces around the `,` between RDNs or the `=` in them. (Enough for the DNs
/// schools write in policy and directories return; not a full RFC 4514 parser.)
pub fn normalise_dn(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let mut escaped = false;
    // Just after an unescaped `,` or `=`: spaces there are not part of the value.
    let mut after_separator = false;
    for c in dn.trim().chars() {
        if escaped {
            out.extend(c.to_lowercase());
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                out.push(c);
                escaped = true;
                after_separator = false;
            }
            ',' | '=' => {
                while out.ends_with(' ') && !out.ends_with("\\ ") {
                    out.pop();
                }
                out.push(c);
                after_separator = true;
            }
            ' ' if after_separator => {}
            c => {
                out.extend(c.to_lowercase());
                after_separator = false;
            }
        }
    }
    out
}

/// The value of a DN's first RDN when it is a `CN`: `Year 7` for
/// `CN=Year 7,OU=Pupils,DC=school,DC=local`, lower-cased.
pub fn common_name(dn: &str) -> Option<String> {
    let normal = normalise_dn(dn);
    let first = split_first_rdn(&normal);
    let value = first.strip_prefix("cn=")?;
    Some(value.to_string())
}

fn split_first_rdn(dn: &str) -> &str {
    let mut escaped = false;
    for (i, c) in dn.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => return &dn[..i],
            _ => {}
        }
    }
    dn
}

/// What a mapping rule's `directory` names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupPattern {
    /// A whole DN (written with an `=`), normalised: matches that group only.
    Dn(String),
    /// A common name (no `=`), lower-cased: matches any group whose first RDN is that CN.
    Cn(String),
}

impl GroupPattern {
    /// A pattern from the policy's text: a DN when it holds `=`, else a CN.
    pub fn parse(text: &str) -> Option<GroupPattern> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(if text.contains('=') {
            GroupPattern::Dn(normalise_dn(text))
        } else {
            GroupPattern::Cn(text.to_lowercase())
        })
    }

    /// Whether the directory group `dn` is this pattern's.
    pub fn matches(&self, dn: &str) -> bool {
        self.matches_normalised(&normalise_dn(dn))
    }

    /// [`matches`](Self::matches) for a DN already through [`normalise_dn`]: no
    /// allocation, for the sign-in path, which maps a cached account's groups on every
    /// request.
    pub fn matches_normalised(&self, dn: &str) -> bool {
        match self {
            GroupPattern::Dn(want) => dn == want,
            GroupPattern::Cn(want) => {
                split_first_rdn(dn).strip_prefix("cn=") == Some(want.as_str())
            }
        }
    }
}

/// One `[[identity.directory.groups]]` rule.
#[derive(Debug, Clone)]
pub struct GroupRule {
    /// The directory group.
    pub pattern: GroupPattern,
    /// The Gatehouse group its members get.
    pub group: GroupId,
    /// The rule as written, for `identity test` and the logs.
    pub text: String,
}

/// What a user matching no rule gets (`unmapped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmapped {
    /// The group the user's subnet gives, else the default group (`"default"`).
    Default,
    /// The sign-in is refused (`"refuse"`).
    Refuse,
}

/// The outcome of mapping a user's directory groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapped {
    /// Rule `rule` (its index in file order) matched: the user is in `group`.
    Group {
        /// The Gatehouse group.
        group: GroupId,
        /// Which rule, in file order.
        rule: usize,
    },
    /// No rule matched; the subnet's or default group applies.
    Default,
    /// No rule matched and the policy refuses such users.
    Refused,
}

/// The policy's mapping from directory groups to Gatehouse groups.
#[derive(Debug, Clone)]
pub struct GroupMapping {
    /// Rules in file order: the first that matches any of the user's groups wins.
    pub rules: Vec<GroupRule>,
    /// What a user matching no rule gets.
    pub unmapped: Unmapped,
}

impl GroupMapping {
    /// The Gatehouse group for a user in the directory groups `groups` (DNs, nested
    /// ones included). Rules are tried in file order and the first that matches any of
    /// the groups wins, so the order of the rules, not of the user's groups, decides:
    /// a teacher who is also in a pupil group gets staff when staff is listed first.
    pub fn map<S: AsRef<str>>(&self, groups: &[S]) -> Mapped {
        let normalised: Vec<String> = groups.iter().map(|g| normalise_dn(g.as_ref())).collect();
        self.map_normalised(&normalised)
    }

    /// [`map`](Self::map) for groups already through [`normalise_dn`] (as a cached
    /// account keeps them).
    pub fn map_normalised<S: AsRef<str>>(&self, groups: &[S]) -> Mapped {
        for (i, rule) in self.rules.iter().enumerate() {
            if groups
                .iter()
                .any(|g| rule.pattern.matches_normalised(g.as_ref()))
            {
                return Mapped::Group {
                    group: rule.group,
                    rule: i,
                };
            }
        }
        match self.unmapped {
            Unmapped::Default => Mapped::Default,
            Unmapped::Refuse => Mapped::Refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_table() {
        let rows: &[(&str, Result<&str, UsernameError>)] = &[
            ("jsmith", Ok("jsmith")),
            ("JSmith", Ok("jsmith")),
            ("SCHOOL\\jsmith", Ok("jsmith")),
            ("school\\JSmith", Ok("jsmith")),
            ("jsmith@SCHOOL.LOCAL", Ok("jsmith")),
            ("J.Smith@school.org.uk", Ok("j.smith")),
            ("  jsmith  ", Ok("jsmith")),
            ("SCHOOL\\", Err(UsernameError::Empty)),
            ("@school.local", Err(UsernameError::Empty)),
            ("", Err(UsernameError::Empty)),
            ("js\0mith", Err(UsernameError::Control)),
            ("js\nmith", Err(UsernameError::Control)),
            ("ÉLODIE", Ok("élodie")),
        ];
        for (typed, want) in rows {
            assert_eq!(
                normalise_username(typed),
                want.clone().map(String::from),
                "{typed:?}"
            );
        }
        let long = "a".repeat(MAX_USERNAME + 1);
        assert_eq!(normalise_username(&long), Err(UsernameError::TooLong));
    }

    #[test]
    fn filter_escaping_table() {
        let rows: &[(&str, &str)] = &[
            ("jsmith", "jsmith"),
            ("*", "\\2a"),
            ("*)(uid=*", "\\2a\\29\\28uid=\\2a"),
            ("a\\b", "a\\5cb"),
            ("nul\0", "nul\\00"),
            ("(admin)", "\\28admin\\29"),
            ("o'brien", "o'brien"),
        ];
        for (value, want) in rows {
            assert_eq!(escape_filter_value(value), *want, "{value:?}");
        }
        assert_eq!(
            user_filter(DEFAULT_USER_FILTER, "*)(objectClass=*"),
            "(&(objectClass=user)(sAMAccountName=\\2a\\29\\28objectClass=\\2a))"
        );
        assert_eq!(user_filter("(uid={user})", "ann"), "(uid=ann)");
    }

    #[test]
    fn dn_normalisation_table() {
        let rows: &[(&str, &str)] = &[
            (
                "CN=Year 7, OU=Pupils ,DC=school,DC=local",
                "cn=year 7,ou=pupils,dc=school,dc=local",
            ),
            ("cn = Staff,dc=x", "cn=staff,dc=x"),
            ("CN=Smith\\, John,DC=x", "cn=smith\\, john,dc=x"),
        ];
        for (dn, want) in rows {
            assert_eq!(normalise_dn(dn), *want, "{dn:?}");
        }
        assert_eq!(
            common_name("CN=Smith\\, John,OU=Staff,DC=x").as_deref(),
            Some("smith\\, john")
        );
        assert_eq!(common_name("OU=Staff,DC=x"), None);
    }

    fn mapping(unmapped: Unmapped) -> GroupMapping {
        let rule = |text: &str, group| GroupRule {
            pattern: GroupPattern::parse(text).expect("test pattern"),
            group: GroupId::new(group),
            text: text.to_string(),
        };
        GroupMapping {
            rules: vec![
                rule("CN=Staff,OU=Groups,DC=school,DC=local", 1),
                rule("Year 7", 3),
                rule("cn=KS3 Pupils,ou=groups,dc=school,dc=local", 3),
                rule("KS4 Pupils", 4),
            ],
            unmapped,
        }
    }

    #[test]
    fn mapping_precedence_table() {
        let m = mapping(Unmapped::Default);
        let staff = "CN=Staff,OU=Groups,DC=school,DC=local";
        let year7 = "CN=Year 7,OU=Pupils,DC=school,DC=local";
        let ks3 = "CN=KS3 Pupils,OU=Groups,DC=school,DC=local";
        let ks4 = "cn=ks4 pupils,ou=other,dc=school,dc=local";
        let group = |g, rule| Mapped::Group {
            group: GroupId::new(g),
            rule,
        };
        let rows: &[(&[&str], Mapped)] = &[
            (&[staff], group(1, 0)),
            // A teacher also in a pupil group: the staff rule is first in the file.
            (&[year7, staff], group(1, 0)),
            (&[ks4, year7], group(3, 1)),
            (&[ks3], group(3, 2)),
            // A CN rule matches that CN in any OU; a DN rule only that DN.
            (&[ks4], group(4, 3)),
            (&["CN=Staff,OU=Old,DC=school,DC=local"], Mapped::Default),
            (&["CN=Governors,DC=school,DC=local"], Mapped::Default),
            (&[], Mapped::Default),
        ];
        for (groups, want) in rows {
            assert_eq!(m.map(groups), *want, "{groups:?}");
        }
        let refuse = mapping(Unmapped::Refuse);
        assert_eq!(refuse.map(&["CN=Governors,DC=x"]), Mapped::Refused);
        assert_eq!(refuse.map(&[staff]), group(1, 0));
    }
}
