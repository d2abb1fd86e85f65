//! Site entries (`example.com`, `example.com/path`, an address) and short site lists:
//! a group's `allow_sites` and `block_sites`, and a grant's sites.

use std::collections::HashMap;

use crate::core::classify::suffixes;
use crate::core::host::{Host, HostError, Target};

/// One site entry: a domain (matching its subdomains) or a host with a path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteEntry {
    /// As written.
    pub text: String,
    /// The host, normalised.
    pub host: Host,
    /// Path prefix (lowercase, starting with `/`), if the entry has one.
    pub path: Option<String>,
}

impl SiteEntry {
    /// Parses `example.com`, `example.com/path`, `http://example.com/path` or an IP.
    pub fn parse(text: &str) -> Result<SiteEntry, HostError> {
        let trimmed = text.trim();
        let without_scheme = trimmed
            .strip_prefix("http://")
            .or_else(|| trimmed.strip_prefix("https://"))
            .unwrap_or(trimmed);
        let (host_part, path) = match without_scheme.find('/') {
            Some(i) if !without_scheme.starts_with('[') || without_scheme[..i].contains(']') => {
                (&without_scheme[..i], Some(&without_scheme[i..]))
            }
            _ => (without_scheme, None),
        };
        let host = Host::parse(host_part)?;
        let path = path
            .filter(|p| *p != "/")
            .map(crate::core::classify::normalise_path);
        Ok(SiteEntry {
            text: trimmed.to_string(),
            host,
            path,
        })
    }
}

/// A site entry that is not a valid host or host/path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("site {entry:?}: {source}")]
pub struct SiteError {
    /// The entry as given.
    pub entry: String,
    /// What is wrong with its host.
    pub source: HostError,
}

/// A short list of sites, for a group's `allow_sites`/`block_sites` and grants.
#[derive(Debug, Clone, Default)]
pub struct SiteList {
    entries: Vec<SiteEntry>,
    by_host: HashMap<String, Vec<usize>>,
}

impl SiteList {
    /// Parses entries; the error names the first bad entry and why.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<SiteList, SiteError> {
        let mut list = SiteList::default();
        for e in entries {
            let entry = SiteEntry::parse(e.as_ref()).map_err(|source| SiteError {
                entry: e.as_ref().to_string(),
                source,
            })?;
            list.push(entry);
        }
        Ok(list)
    }

    /// Adds an entry.
    pub fn push(&mut self, entry: SiteEntry) {
        self.by_host
            .entry(entry.host.to_string())
            .or_default()
            .push(self.entries.len());
        self.entries.push(entry);
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[SiteEntry] {
        &self.entries
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first entry covering `target` (its host or a parent domain, and its path
    /// prefix if it has one), by index.
    pub fn find(&self, target: &Target) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let owned;
        let host: &str = match &target.host {
            Host::Name(name) => name,
            other => {
                owned = other.to_string();
                &owned
            }
        };
        let mut path: Option<String> = None;
        for suffix in suffixes(host) {
            let Some(indices) = self.by_host.get(suffix) else {
                continue;
            };
            for &i in indices {
                match &self.entries[i].path {
                    None => return Some(i),
                    Some(prefix) => {
                        let p = path.get_or_insert_with(|| {
                            crate::core::classify::normalise_path(&target.path)
                        });
                        if p.starts_with(prefix.as_str()) {
                            return Some(i);
                        }
                    }
                }
            }
        }
        None
    }
}
