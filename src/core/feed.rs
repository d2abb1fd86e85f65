//! The list formats schools receive, read line by line into Gatehouse's own entries:
//! what `gatehouse lists import` keeps of each line and why it skips the rest.
//!
//! | format | a line is | kept as |
//! | --- | --- | --- |
//! | `ut1` | a `domains` line (a domain) or a `urls` line (`host/path`) of one UT1 category | a domain, or a URL prefix |
//! | `hosts` | `0.0.0.0 name [name …]` (an address, then names; `#` starts a comment anywhere) | each name as a domain |
//! | `plain` | a domain, `*.domain`, `host/path` or `http(s)://host/path` | a domain, or a URL prefix |
//! | `e2guardian` | a `bannedsitelist` line (a domain) or a `bannedurllist` line (`host/path`) | a domain, or a URL prefix |
//!
//! Every skipped line has a [`Skip`] reason, counted per reason by the importer; one bad
//! line never stops an import. The UT1 category map (UT1's names → Gatehouse's) is
//! parsed here too; [`DEFAULT_UT1_MAP`] is the map used without `--map`.

use std::collections::BTreeMap;
use std::fmt;

use super::host::{is_plain_name, Host};
use super::site::SiteEntry;

/// A list format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Université Toulouse 1 Capitole lists (`<category>/domains`, `<category>/urls`).
    Ut1,
    /// A hosts file.
    Hosts,
    /// One entry per line.
    Plain,
    /// e2guardian's `bannedsitelist` / `bannedurllist`.
    E2guardian,
}

impl Format {
    /// From its command-line name.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "ut1" => Some(Format::Ut1),
            "hosts" => Some(Format::Hosts),
            "plain" => Some(Format::Plain),
            "e2guardian" => Some(Format::E2guardian),
            _ => None,
        }
    }

    /// Its command-line name, also the default suffix of the files an import writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ut1 => "ut1",
            Format::Hosts => "hosts",
            Format::Plain => "plain",
            Format::E2guardian => "e2guardian",
        }
    }
}

/// What one line gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A domain (or address) and everything under it.
    Domain(String),
    /// A URL prefix, `host/path`.
    Url(String),
}

/// Why a line was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skip {
    /// A comment or blank line.
    Comment,
    /// A hosts file's own names (`localhost`, `broadcasthost`, `ip6-…`).
    HostsBoilerplate,
    /// Not a valid host name or address.
    InvalidName,
    /// An address where a name was expected (a hosts line's second field).
    Address,
    /// Syntax Gatehouse does not take (e2guardian directives and wildcards, regex lines).
    Unsupported,
    /// Already imported into the same category.
    Duplicate,
}

impl Skip {
    /// Every reason, in report order.
    pub const ALL: [Skip; 6] = [
        Skip::Comment,
        Skip::HostsBoilerplate,
        Skip::InvalidName,
        Skip::Address,
        Skip::Unsupported,
        Skip::Duplicate,
    ];

    /// How the report names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Comment => "comments and blank lines",
            Skip::HostsBoilerplate => "hosts-file boilerplate (localhost and friends)",
            Skip::InvalidName => "invalid names",
            Skip::Address => "addresses where a name belongs",
            Skip::Unsupported => "unsupported syntax",
            Skip::Duplicate => "duplicates",
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads one line of `format` (from its domains file or its URLs file alike: a URL line
/// with no path is its host): the entries it gives (a hosts line may give several), or
/// why it gives none. Each returned entry is normalised
/// (lowercase, punycode, no trailing dot), so equal entries compare equal.
pub fn parse_line(format: Format, line: &str) -> Result<Vec<Entry>, Skip> {
    let line = line.trim_start_matches('\u{feff}').trim();
    if line.is_empty() || line.starts_with('#') {
        return Err(Skip::Comment);
    }
    match format {
        Format::Hosts => hosts_line(line),
        Format::E2guardian => {
            // `.Include<file>`, `.Hosts`-style directives and `*ip` / `*ips` wildcards
            // belong to e2guardian's own engine; `#` comments may follow an entry.
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                return Err(Skip::Comment);
            }
            if line.starts_with('.') && line[1..].starts_with(|c: char| c.is_ascii_uppercase())
                || line.starts_with('*')
                || line.contains(char::is_whitespace)
            {
                return Err(Skip::Unsupported);
            }
            entry(line).map(|e| vec![e])
        }
        Format::Ut1 | Format::Plain => {
            if line.contains(char::is_whitespace) {
                return Err(Skip::Unsupported);
            }
            entry(line).map(|e| vec![e])
        }
    }
}

/// One entry: a domain (`*.` and a leading `.` dropped) or, with a path, a URL prefix.
fn entry(text: &str) -> Result<Entry, Skip> {
    let text = text.strip_prefix("*.").unwrap_or(text);
    let text = text.strip_prefix('.').unwrap_or(text);
    // Nearly every line of a real feed is a name already in normal form.
    if is_plain_name(text) {
        return Ok(Entry::Domain(text.to_string()));
    }
    if text.contains('*') || text.contains('^') || text.contains('$') {
        return Err(Skip::Unsupported);
    }
    let site = SiteEntry::parse(text).map_err(|_| Skip::InvalidName)?;
    match site.path {
        Some(path) if path != "/" => Ok(Entry::Url(format!("{}{path}", site.host))),
        // A URL line that is only a host means the host, as its list intends.
        _ => Ok(Entry::Domain(site.host.to_string())),
    }
}

/// The names a hosts file writes for itself, not for blocking (lowercase).
fn is_boilerplate(name: &str) -> bool {
    matches!(
        name,
        "localhost" | "localhost.localdomain" | "local" | "broadcasthost" | "0.0.0.0"
    ) || name.starts_with("ip6-")
}

fn hosts_line(line: &str) -> Result<Vec<Entry>, Skip> {
    let line = line.split('#').next().unwrap_or("").trim();
    let mut fields = line.split_whitespace();
    let Some(address) = fields.next() else {
        return Err(Skip::Comment);
    };
    let names: Vec<&str> = fields.collect();
    if names.is_empty() {
        // A bare name per line: some "hosts" feeds drop the address.
        return match Host::parse(address) {
            Ok(Host::Name(name)) => Ok(vec![Entry::Domain(name)]),
            Ok(_) => Err(Skip::Address),
            Err(_) => Err(Skip::InvalidName),
        };
    }
    if address.parse::<std::net::IpAddr>().is_err() {
        return Err(Skip::Unsupported);
    }
    let mut out = Vec::with_capacity(names.len());
    let mut last = Skip::HostsBoilerplate;
    for name in names {
        if is_plain_name(name) {
            if !is_boilerplate(name) {
                out.push(Entry::Domain(name.to_string()));
            }
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if is_boilerplate(&lower) {
            continue;
        }
        match Host::parse(name) {
            Ok(Host::Name(n)) => out.push(Entry::Domain(n)),
            Ok(_) => last = Skip::Address,
            Err(_) => last = Skip::InvalidName,
        }
    }
    if out.is_empty() {
        Err(last)
    } else {
        Ok(out)
    }
}

/// The UT1 category map used without `--map`: UT1's category names to the example
/// policy's. `blocklists/ut1-map.toml` is the same text, to copy and edit. UT1 categories not named here are not imported (and are listed as such).
pub const DEFAULT_UT1_MAP: &str = r#"# UT1 category (directory name) = Gatehouse category. Edit a copy and pass it
# with --map; a UT1 category left out is not imported. UT1's own descriptions:
# https://dsi.ut-capitole.fr/blacklists/ (the tarball's global_usage file).
adult = "pornography"
mixed_adult = "pornography"
lingerie = "pornography"
gambling = "gambling"
dating = "dating"
drogue = "drugs"
agressif = "violence"
malware = "malware"
phishing = "malware"
cryptojacking = "malware"
ddos = "malware"
hacking = "malware"
stalkerware = "malware"
warez = "piracy"
vpn = "circumvention"
redirector = "circumvention"
strict_redirector = "circumvention"
strong_redirector = "circumvention"
doh = "circumvention"
games = "games"
social_networks = "social-media"
chat = "messaging"
audio-video = "video"
shopping = "shopping"
filehosting = "file-sharing"
"#;

/// Parses a UT1 map (`ut1-name = "gatehouse-category"` lines, TOML): the map, or the
/// first problem as `line: message`.
pub fn parse_ut1_map(text: &str) -> Result<BTreeMap<String, String>, String> {
    let table: BTreeMap<String, toml::Value> = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0);
        format!("{line}: {}", e.message().trim())
    })?;
    let mut out = BTreeMap::new();
    for (ut1, value) in table {
        match value {
            toml::Value::String(category) => {
                out.insert(ut1, category);
            }
            other => {
                return Err(format!(
                    "{ut1}: the Gatehouse category must be a string, not {}",
                    other.type_str()
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Entry {
        Entry::Domain(s.into())
    }

    #[test]
    fn lines_table() {
        use Format::*;
        type Row<'a> = (Format, &'a str, Result<Vec<Entry>, Skip>);
        let rows: Vec<Row> = vec![
            (Ut1, "bet365.com", Ok(vec![d("bet365.com")])),
            (Ut1, "Bet365.COM.", Ok(vec![d("bet365.com")])),
            (Ut1, "bücher.example", Ok(vec![d("xn--bcher-kva.example")])),
            (Ut1, "  # comment", Err(Skip::Comment)),
            (Ut1, "", Err(Skip::Comment)),
            (Ut1, "\u{feff}casino.example", Ok(vec![d("casino.example")])),
            (Ut1, "bad name.example", Err(Skip::Unsupported)),
            (Ut1, "-bad-.example!", Err(Skip::InvalidName)),
            (Ut1, "192.0.2.7", Ok(vec![d("192.0.2.7")])),
            (
                Ut1,
                "example.com/adult/page",
                Ok(vec![Entry::Url("example.com/adult/page".into())]),
            ),
            (Ut1, "example.com", Ok(vec![d("example.com")])),
            (Plain, "*.tracker.example", Ok(vec![d("tracker.example")])),
            (Plain, ".tracker.example", Ok(vec![d("tracker.example")])),
            (
                Plain,
                "https://Example.com/Path?q",
                Ok(vec![Entry::Url("example.com/path?q".into())]),
            ),
            (Plain, "http://example.com/", Ok(vec![d("example.com")])),
            (Plain, "ads*.example", Err(Skip::Unsupported)),
            (Hosts, "0.0.0.0 ads.example", Ok(vec![d("ads.example")])),
            (
                Hosts,
                "127.0.0.1\tads.example  track.example # both",
                Ok(vec![d("ads.example"), d("track.example")]),
            ),
            (Hosts, "127.0.0.1 localhost", Err(Skip::HostsBoilerplate)),
            (
                Hosts,
                "::1 ip6-localhost ip6-loopback",
                Err(Skip::HostsBoilerplate),
            ),
            (Hosts, "0.0.0.0 0.0.0.0", Err(Skip::HostsBoilerplate)),
            (Hosts, "0.0.0.0 10.1.2.3", Err(Skip::Address)),
            (Hosts, "0.0.0.0 bad_name!", Err(Skip::InvalidName)),
            (Hosts, "ads.example", Ok(vec![d("ads.example")])),
            (Hosts, "not-an-address ads.example", Err(Skip::Unsupported)),
            (
                E2guardian,
                "badsite.example",
                Ok(vec![d("badsite.example")]),
            ),
            (
                E2guardian,
                "badsite.example # why",
                Ok(vec![d("badsite.example")]),
            ),
            (
                E2guardian,
                ".Include</etc/e2guardian/lists/blacklists/ads/domains>",
                Err(Skip::Unsupported),
            ),
            (E2guardian, "*ip", Err(Skip::Unsupported)),
            (E2guardian, "*ips", Err(Skip::Unsupported)),
            (
                E2guardian,
                "badsite.example/some/page",
                Ok(vec![Entry::Url("badsite.example/some/page".into())]),
            ),
        ];
        for (format, line, want) in rows {
            assert_eq!(parse_line(format, line), want, "{format:?} {line:?}");
        }
    }

    #[test]
    fn the_default_ut1_map_names_only_example_categories() {
        let map = parse_ut1_map(DEFAULT_UT1_MAP).expect("parses");
        assert_eq!(map.get("adult").map(String::as_str), Some("pornography"));
        assert!(map.len() >= 20);
        assert_eq!(
            parse_ut1_map("adult = \"pornography\"\ngambling = 3\n"),
            Err("gambling: the Gatehouse category must be a string, not integer".into())
        );
        let e = parse_ut1_map("adult = \n").expect_err("bad");
        assert!(e.starts_with("1: ") || e.starts_with("2: "), "{e}");
    }
}
