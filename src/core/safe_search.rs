//! Safe search without interception: which name a request to a search engine or to
//! YouTube is dialled to instead of the one it asked for.
//!
//! Google, YouTube, Bing and DuckDuckGo each publish a "safe" address
//! (`forcesafesearch.google.com`, `restrict.youtube.com`, `strict.bing.com`,
//! `safe.duckduckgo.com`) that serves the engine's normal names with safe search (or
//! YouTube's Restricted Mode) forced on, for networks to point their names at. A forward
//! proxy gets the same effect by connecting to that address while the client's bytes
//! pass unchanged: the TLS handshake still names `www.google.com` and the engine's
//! certificate there covers it, so nothing is intercepted and devices need no school
//! certificate. Plain HTTP keeps its `Host` header the same way.
//!
//! The policy holds the [`Engines`] table (the defaults, [`Engines::defaults`], which a
//! school may change or add to) and, per group, a [`GroupSafeSearch`]: `safe_search`
//! for search engines and `youtube_restrict` for YouTube, separately.
//! [`Engines::rewrite`] maps a host and a group's settings to a [`SafeSearchRewrite`]
//! (the engine, the level and the name to dial), or to nothing.
//!
//! Pure: no I/O. Names are resolved when they are dialled, by the shell's resolver.

use std::collections::HashMap;
use std::fmt;

use crate::core::host::Host;

/// How strict. Search engines have one safe address (strict); YouTube has two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// The strictest the engine offers: Google SafeSearch, Bing strict, YouTube
    /// Restricted Mode Strict.
    Strict,
    /// YouTube Restricted Mode Moderate.
    Moderate,
}

impl Level {
    /// Every level.
    pub const ALL: [Level; 2] = [Level::Strict, Level::Moderate];

    /// The name used in policy, records and exports (`strict`, `moderate`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Strict => "strict",
            Level::Moderate => "moderate",
        }
    }

    /// The level with this name.
    pub fn parse(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == name)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// Stored as its name, as the reason codes are: a record stays readable whatever order
// the variants come in, and an unknown name is an error, not another level.
impl serde::Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Level::parse(&name).ok_or_else(|| {
            serde::de::Error::custom(format_args!("unknown safe-search level {name:?}"))
        })
    }
}

/// Which of a group's two settings turns an engine on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `safe_search`: search engines (on or off; on is strict).
    SafeSearch,
    /// `youtube_restrict`: YouTube's Restricted Mode (strict, moderate or off).
    YoutubeRestrict,
}

impl Setting {
    /// The group field's name, as an engine's `setting` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Setting::SafeSearch => "safe_search",
            Setting::YoutubeRestrict => "youtube_restrict",
        }
    }

    /// The setting with this name.
    pub fn parse(name: &str) -> Option<Setting> {
        [Setting::SafeSearch, Setting::YoutubeRestrict]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// A group's safe-search settings: for each, the level enforced, or `None` for off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSafeSearch {
    /// `safe_search`: `Some(Strict)` (on) or `None` (off).
    pub search: Option<Level>,
    /// `youtube_restrict`: strict, moderate or off.
    pub youtube: Option<Level>,
}

impl GroupSafeSearch {
    /// Both off.
    pub const OFF: GroupSafeSearch = GroupSafeSearch {
        search: None,
        youtube: None,
    };

    /// Both strict: what a group gets when it does not say.
    pub const STRICT: GroupSafeSearch = GroupSafeSearch {
        search: Some(Level::Strict),
        youtube: Some(Level::Strict),
    };

    /// The level the group enforces for engines governed by `setting`.
    pub fn level(self, setting: Setting) -> Option<Level> {
        match setting {
            Setting::SafeSearch => self.search,
            Setting::YoutubeRestrict => self.youtube,
        }
    }
}

impl Default for GroupSafeSearch {
    fn default() -> Self {
        GroupSafeSearch::STRICT
    }
}

/// Why an engine's host pattern or address is refused. The policy compiler adds the
/// file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafeSearchError {
    /// A host pattern that is neither a host name nor a name followed by `.*`.
    #[error("host {text:?} is not a host name, nor a name followed by \".*\" (any country ending): {why}")]
    BadPattern {
        /// The pattern as written.
        text: String,
        /// What is wrong.
        why: String,
    },
    /// A safe-search address that is not a host name.
    #[error("{text:?} is not a host name: {why}")]
    BadAddress {
        /// The address as written.
        text: String,
        /// What is wrong.
        why: String,
    },
    /// An IP address where a name is needed: the address is resolved when it is dialled
    /// (engines move their servers), so the table holds names only.
    #[error(
        "{text:?} is an IP address; give the engine's name, which is resolved when it is dialled"
    )]
    AddressNotName {
        /// The address as written.
        text: String,
    },
}

/// Which hosts an engine covers: a host name exactly, or a stem followed by any country
/// ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// This host exactly (`www.bing.com`); its subdomains are not covered.
    Name(String),
    /// `www.google.*`: the stem (`www.google.`, with its dot) followed by a country
    /// ending — `com`, a two-letter country code (`de`), or `co.` or `com.` and one
    /// (`co.uk`, `com.au`) — the shapes of Google's country domains. Nothing longer, so
    /// `www.google.evil.example` is not covered.
    CountryEnding(String),
}

impl HostPattern {
    /// Parses `www.bing.com` or `www.google.*`.
    pub fn parse(text: &str) -> Result<HostPattern, SafeSearchError> {
        let bad = |why: String| SafeSearchError::BadPattern {
            text: text.to_string(),
            why,
        };
        let (name, wildcard) = match text.strip_suffix(".*") {
            Some(stem) => (stem, true),
            None => (text, false),
        };
        match Host::parse(name) {
            Ok(Host::Name(n)) if wildcard => Ok(HostPattern::CountryEnding(format!("{n}."))),
            Ok(Host::Name(n)) => Ok(HostPattern::Name(n)),
            Ok(_) => Err(bad("an IP address matches no engine's name".into())),
            Err(e) => Err(bad(e.to_string())),
        }
    }

    /// Whether the normalised host name `name` is covered.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HostPattern::Name(n) => n == name,
            HostPattern::CountryEnding(stem) => name
                .strip_prefix(stem.as_str())
                .is_some_and(is_country_ending),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Name(n) => f.write_str(n),
            HostPattern::CountryEnding(stem) => write!(f, "{stem}*"),
        }
    }
}

/// `com`, `uk`, `co.uk`, `com.au`: the endings of Google's country domains.
fn is_country_ending(ending: &str) -> bool {
    let country = |label: &str| label.len() == 2 && label.bytes().all(|b| b.is_ascii_lowercase());
    match ending.split_once('.') {
        None => ending == "com" || country(ending),
        Some((second, top)) => (second == "co" || second == "com") && country(top),
    }
}

/// Parses a safe-search address: a host name, never an IP address.
pub fn parse_address(text: &str) -> Result<Host, SafeSearchError> {
    match Host::parse(text) {
        Ok(host @ Host::Name(_)) => Ok(host),
        Ok(_) => Err(SafeSearchError::AddressNotName {
            text: text.to_string(),
        }),
        Err(e) => Err(SafeSearchError::BadAddress {
            text: text.to_string(),
            why: e.to_string(),
        }),
    }
}

/// One engine of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// Its name in the policy (`google`, `youtube`): recorded with each rewrite and the
    /// metric's label.
    pub name: String,
    /// Which group setting turns it on.
    pub setting: Setting,
    /// The hosts it covers.
    pub hosts: Vec<HostPattern>,
    /// The name dialled for [`Level::Strict`].
    pub strict: Host,
    /// The name dialled for [`Level::Moderate`]; without one, moderate gets strict (the
    /// safe direction).
    pub moderate: Option<Host>,
}

impl Engine {
    /// The name to dial for `level`.
    pub fn address(&self, level: Level) -> &Host {
        match (level, &self.moderate) {
            (Level::Moderate, Some(moderate)) => moderate,
            _ => &self.strict,
        }
    }
}

/// A shipped engine: (name, setting, hosts, strict address, moderate address).
type DefaultEngine = (
    &'static str,
    Setting,
    &'static [&'static str],
    &'static str,
    Option<&'static str>,
);

/// The shipped engine table. Each address is the engine's own documented one for
/// networks that enforce safe search.
const DEFAULTS: &[DefaultEngine] = &[
    (
        "google",
        Setting::SafeSearch,
        &["www.google.*"],
        "forcesafesearch.google.com",
        None,
    ),
    (
        "youtube",
        Setting::YoutubeRestrict,
        &[
            "www.youtube.com",
            "m.youtube.com",
            "youtubei.googleapis.com",
            "youtube.googleapis.com",
            "www.youtube-nocookie.com",
        ],
        "restrict.youtube.com",
        Some("restrictmoderate.youtube.com"),
    ),
    (
        "bing",
        Setting::SafeSearch,
        &["www.bing.com", "bing.com"],
        "strict.bing.com",
        None,
    ),
    (
        "duckduckgo",
        Setting::SafeSearch,
        &["duckduckgo.com", "www.duckduckgo.com"],
        "safe.duckduckgo.com",
        None,
    ),
];

/// What [`Engines::rewrite`] decided: the engine, the level and the name dialled. The
/// decision log records it with the decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SafeSearchRewrite {
    /// The engine's name in the policy's table (`google`, `youtube`).
    pub engine: String,
    /// The level enforced.
    pub level: Level,
    /// The name dialled instead of the host asked for (`forcesafesearch.google.com`).
    pub dialled: String,
}

impl fmt::Display for SafeSearchRewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} via {}", self.engine, self.level, self.dialled)
    }
}

/// The engine table, indexed for the request path.
#[derive(Debug, Clone)]
pub struct Engines {
    engines: Vec<Engine>,
    /// Exact host names → engine.
    names: HashMap<String, usize>,
    /// Country-ending patterns, in table order.
    stems: Vec<(String, usize)>,
}

impl Engines {
    /// Indexes `engines`. A host claimed by two engines goes to the first (the policy
    /// compiler refuses such a table before it gets here).
    pub fn new(engines: Vec<Engine>) -> Engines {
        let mut names = HashMap::new();
        let mut stems = Vec::new();
        for (i, engine) in engines.iter().enumerate() {
            for pattern in &engine.hosts {
                match pattern {
                    HostPattern::Name(n) => {
                        names.entry(n.clone()).or_insert(i);
                    }
                    HostPattern::CountryEnding(stem) => stems.push((stem.clone(), i)),
                }
            }
        }
        Engines {
            engines,
            names,
            stems,
        }
    }

    /// The shipped engines (see `policy/gatehouse.toml`).
    pub fn defaults() -> Engines {
        Engines::new(default_engines())
    }

    /// The engines, in table order.
    pub fn engines(&self) -> &[Engine] {
        &self.engines
    }

    /// The engine covering `host`, if any.
    pub fn engine_for(&self, host: &Host) -> Option<&Engine> {
        let name = host.as_name()?;
        let index = match self.names.get(name) {
            Some(i) => *i,
            None => self.stems.iter().find_map(|(stem, i)| {
                name.strip_prefix(stem.as_str())
                    .is_some_and(is_country_ending)
                    .then_some(*i)
            })?,
        };
        self.engines.get(index)
    }

    /// The name to dial instead of `host` for a group with `settings`, or `None`: the
    /// host is no engine's, the group has the engine's setting off, or the host is
    /// already the safe address.
    pub fn rewrite(&self, host: &Host, settings: GroupSafeSearch) -> Option<SafeSearchRewrite> {
        if settings == GroupSafeSearch::OFF {
            return None;
        }
        let engine = self.engine_for(host)?;
        let level = settings.level(engine.setting)?;
        let address = engine.address(level);
        if address == host {
            return None;
        }
        Some(SafeSearchRewrite {
            engine: engine.name.clone(),
            level,
            dialled: address.to_string(),
        })
    }
}

impl Default for Engines {
    fn default() -> Self {
        Engines::defaults()
    }
}

/// The shipped engines as values, for the policy compiler to change and add to.
pub fn default_engines() -> Vec<Engine> {
    DEFAULTS
        .iter()
        .map(|(name, setting, hosts, strict, moderate)| Engine {
            name: name.to_string(),
            setting: *setting,
            hosts: hosts
                .iter()
                .map(|h| HostPattern::parse(h).expect("the shipped host patterns parse"))
                .collect(),
            strict: parse_address(strict).expect("the shipped addresses are names"),
            moderate: moderate.map(|m| parse_address(m).expect("the shipped addresses are names")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: GroupSafeSearch = GroupSafeSearch::STRICT;
    const OFF: GroupSafeSearch = GroupSafeSearch::OFF;
    /// Search on, YouTube moderate (an older pupils' group).
    const MODERATE: GroupSafeSearch = GroupSafeSearch {
        search: Some(Level::Strict),
        youtube: Some(Level::Moderate),
    };
    /// Search off, YouTube strict.
    const VIDEO_ONLY: GroupSafeSearch = GroupSafeSearch {
        search: None,
        youtube: Some(Level::Strict),
    };

    /// The defaults and one engine a school added (its own moderate address, a host
    /// pattern with a country ending).
    fn table() -> Engines {
        let mut engines = default_engines();
        engines.push(Engine {
            name: "ecosia".into(),
            setting: Setting::SafeSearch,
            hosts: vec![
                HostPattern::parse("www.ecosia.org").expect("pattern"),
                HostPattern::parse("search.ecosia.*").expect("pattern"),
            ],
            strict: parse_address("strict.ecosia.example").expect("address"),
            moderate: None,
        });
        Engines::new(engines)
    }

    #[test]
    fn which_name_is_dialled() {
        // (host asked for, group's settings, expected (engine, level, name dialled))
        type Row<'a> = (&'a str, GroupSafeSearch, Option<(&'a str, Level, &'a str)>);
        use Level::{Moderate, Strict};
        let google = Some(("google", Strict, "forcesafesearch.google.com"));
        let rows: &[Row] = &[
            // Google, its country domains, and what is not one.
            ("www.google.com", STRICT, google),
            ("www.google.co.uk", STRICT, google),
            ("www.google.de", STRICT, google),
            ("www.google.com.au", STRICT, google),
            ("www.google.co.jp", MODERATE, google),
            ("WWW.Google.COM.", STRICT, google),
            ("google.com", STRICT, None),
            ("mail.google.com", STRICT, None),
            ("maps.google.co.uk", STRICT, None),
            ("www.google.com.evil.example", STRICT, None),
            ("www.google.evil.example", STRICT, None),
            ("www.google.co.evil", STRICT, None),
            ("www.google.example", STRICT, None),
            ("a.www.google.com", STRICT, None),
            ("forcesafesearch.google.com", STRICT, None),
            // YouTube: strict or moderate, each of its hosts, and not its others.
            (
                "www.youtube.com",
                STRICT,
                Some(("youtube", Strict, "restrict.youtube.com")),
            ),
            (
                "www.youtube.com",
                MODERATE,
                Some(("youtube", Moderate, "restrictmoderate.youtube.com")),
            ),
            (
                "m.youtube.com",
                STRICT,
                Some(("youtube", Strict, "restrict.youtube.com")),
            ),
            (
                "youtubei.googleapis.com",
                MODERATE,
                Some(("youtube", Moderate, "restrictmoderate.youtube.com")),
            ),
            (
                "youtube.googleapis.com",
                STRICT,
                Some(("youtube", Strict, "restrict.youtube.com")),
            ),
            (
                "www.youtube-nocookie.com",
                STRICT,
                Some(("youtube", Strict, "restrict.youtube.com")),
            ),
            ("youtube.com", STRICT, None),
            ("i.ytimg.com", STRICT, None),
            ("studio.youtube.com", STRICT, None),
            ("www.googleapis.com", STRICT, None),
            ("restrict.youtube.com", STRICT, None),
            // Bing and DuckDuckGo.
            (
                "www.bing.com",
                STRICT,
                Some(("bing", Strict, "strict.bing.com")),
            ),
            (
                "bing.com",
                STRICT,
                Some(("bing", Strict, "strict.bing.com")),
            ),
            (
                "bing.com",
                MODERATE,
                Some(("bing", Strict, "strict.bing.com")),
            ),
            ("cn.bing.com", STRICT, None),
            ("strict.bing.com", STRICT, None),
            (
                "duckduckgo.com",
                STRICT,
                Some(("duckduckgo", Strict, "safe.duckduckgo.com")),
            ),
            (
                "www.duckduckgo.com",
                STRICT,
                Some(("duckduckgo", Strict, "safe.duckduckgo.com")),
            ),
            ("html.duckduckgo.com", STRICT, None),
            // A group with it off; with only YouTube on.
            ("www.google.com", OFF, None),
            ("www.youtube.com", OFF, None),
            ("www.bing.com", VIDEO_ONLY, None),
            (
                "www.youtube.com",
                VIDEO_ONLY,
                Some(("youtube", Strict, "restrict.youtube.com")),
            ),
            // The school's engine, by exact name and by country ending.
            (
                "www.ecosia.org",
                STRICT,
                Some(("ecosia", Strict, "strict.ecosia.example")),
            ),
            (
                "search.ecosia.fr",
                STRICT,
                Some(("ecosia", Strict, "strict.ecosia.example")),
            ),
            ("ecosia.org", STRICT, None),
            ("www.ecosia.org", VIDEO_ONLY, None),
            // Addresses are no engine's.
            ("142.250.180.4", STRICT, None),
            ("[2a00:1450:4009:81f::2004]", STRICT, None),
            ("www.example.com", STRICT, None),
        ];
        let engines = table();
        for (host, settings, want) in rows {
            let parsed = Host::parse(host).expect("test host");
            let got = engines.rewrite(&parsed, *settings);
            let want = want.map(|(engine, level, dialled)| SafeSearchRewrite {
                engine: engine.into(),
                level,
                dialled: dialled.into(),
            });
            assert_eq!(got, want, "{host} with {settings:?}");
        }
    }

    #[test]
    fn host_patterns_and_addresses() {
        for (text, ok) in [
            ("www.bing.com", true),
            ("www.google.*", true),
            ("WWW.Bing.Com", true),
            ("*.google.com", false),
            ("www.*.com", false),
            (".*", false),
            ("10.0.0.1", false),
            ("", false),
        ] {
            assert_eq!(HostPattern::parse(text).is_ok(), ok, "{text:?}");
        }
        assert_eq!(
            HostPattern::parse("www.google.*")
                .expect("pattern")
                .to_string(),
            "www.google.*"
        );
        assert!(parse_address("restrict.youtube.com").is_ok());
        assert!(matches!(
            parse_address("216.239.38.120"),
            Err(SafeSearchError::AddressNotName { .. })
        ));
        assert!(matches!(
            parse_address("bad name"),
            Err(SafeSearchError::BadAddress { .. })
        ));
    }

    #[test]
    fn levels_are_stored_as_their_names() {
        for level in Level::ALL {
            let bytes = postcard::to_stdvec(&level).expect("encodes");
            assert_eq!(bytes, postcard::to_stdvec(level.as_str()).expect("encodes"));
            assert_eq!(postcard::from_bytes::<Level>(&bytes).ok(), Some(level));
        }
        let unknown = postcard::to_stdvec("lenient").expect("encodes");
        assert!(postcard::from_bytes::<Level>(&unknown).is_err());
    }
}
