//! TLS inspection, the deciding half: whether a tunnel is inspected or spliced, and the
//! header and parameter controls applied to a request that Gatehouse can see whole
//! (plain HTTP, or HTTPS inside an inspected tunnel).
//!
//! Whether to inspect ([`Policy::inspect`]), in order:
//!
//! 1. A host with URL-level entries in an `illegal` category is inspected for every
//!    group when the school CA is there, so that only the listed pages are refused (the
//!    IWF list is per URL); without the CA the shell refuses the host whole, as before.
//! 2. A site in `[inspection] never_inspect_sites`, or in a category of
//!    `never_inspect_categories` (banking, health, support services such as Childline,
//!    apps that pin their certificates), is never inspected.
//! 3. A group with `inspect_tls = true` is inspected (when the CA is there: the policy
//!    cannot load without it); every other group is spliced.
//!
//! The controls ([`Policy::controls`]) are per group: Google's `safe=active` on search
//! URLs, YouTube's `YouTube-Restrict` header, Microsoft's tenant restriction headers on
//! its sign-in hosts (replacing any the client sent), Google's
//! `X-GoogApps-Allowed-Domains`. Each applied control is named in the request's record.
//!
//! Pure: no I/O. The shell mints certificates, dials and edits the request.

use std::fmt;

use crate::core::category::{CategoryId, CategorySet};
use crate::core::classify::{Classification, CompiledLists};
use crate::core::group::GroupId;
use crate::core::host::{Host, Target};
use crate::core::policy::Policy;
use crate::core::safe_search::{HostPattern, Level, Setting};
use crate::core::site::SiteList;

/// `[inspection] never_inspect_*`, compiled.
#[derive(Debug, Clone, Default)]
pub struct InspectionRules {
    /// Categories never inspected.
    pub never_categories: CategorySet,
    /// Sites never inspected.
    pub never_sites: SiteList,
}

/// Whether a tunnel is inspected, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inspection {
    /// Inspected: the host has URL-level entries in this `illegal` category.
    IllegalPages(CategoryId),
    /// Inspected: the group has `inspect_tls` on.
    Group,
    /// Spliced: the site is in `never_inspect_sites`.
    NeverSite,
    /// Spliced: the site is in a `never_inspect_categories` category.
    NeverCategory(CategoryId),
    /// Spliced: the group does not inspect.
    GroupOff,
    /// Spliced: the school CA is not there (so nothing can be inspected).
    NoCa,
}

impl Inspection {
    /// Whether the tunnel is inspected.
    pub fn inspected(self) -> bool {
        matches!(self, Inspection::IllegalPages(_) | Inspection::Group)
    }
}

/// Microsoft's tenant restrictions (v1): the tenants that may be signed in to, and the
/// school's own directory id that Microsoft's logs record the restriction under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRestriction {
    /// `Restrict-Access-To-Tenants`: tenant domains or ids, comma-separated.
    pub tenants: String,
    /// `Restrict-Access-Context`: the directory id that set the restriction.
    pub context: String,
}

/// A group's header and parameter controls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Controls {
    /// Add `safe=active` to Google search URLs.
    pub google_safe: bool,
    /// Send `YouTube-Restrict` at this level to YouTube's hosts (the group's
    /// `youtube_restrict`).
    pub youtube: Option<Level>,
    /// Microsoft's tenant restriction headers on its sign-in hosts.
    pub microsoft: Option<TenantRestriction>,
    /// `X-GoogApps-Allowed-Domains` to Google: the Google Workspace domains that may
    /// sign in, comma-separated.
    pub google_domains: Option<String>,
}

/// What the controls do to one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Enforcement {
    /// The query to send instead of the request's own.
    pub query: Option<String>,
    /// Headers to set, replacing any the client sent.
    pub headers: Vec<(&'static str, String)>,
    /// What was enforced, as recorded (`safe=active`, `YouTube-Restrict: Strict`, …).
    pub enforced: Vec<String>,
}

impl Enforcement {
    /// Whether nothing is changed.
    pub fn is_empty(&self) -> bool {
        self.query.is_none() && self.headers.is_empty()
    }
}

/// The hosts Microsoft documents for tenant restrictions.
const MICROSOFT_SIGN_IN: [&str; 3] = [
    "login.microsoftonline.com",
    "login.microsoft.com",
    "login.windows.net",
];

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Inspection::IllegalPages(_) => "inspected: the site has pages on an illegal list",
            Inspection::Group => "inspected: the group has inspect_tls on",
            Inspection::NeverSite => "not inspected: the site is in never_inspect_sites",
            Inspection::NeverCategory(_) => {
                "not inspected: the site is in a never_inspect_categories category"
            }
            Inspection::GroupOff => "not inspected: the group does not inspect TLS",
            Inspection::NoCa => "not inspected: no school CA",
        })
    }
}

impl Policy {
    /// Whether a tunnel to `target` (its host as the SNI names it, else the CONNECT
    /// host) is inspected for `group`, given its classification and whether the school
    /// CA is there (`ca`). See the module doc for the order.
    pub fn inspect(
        &self,
        group: GroupId,
        target: &Target,
        classification: &Classification,
        lists: &CompiledLists,
        ca: bool,
    ) -> Inspection {
        if !ca {
            return Inspection::NoCa;
        }
        let illegal_pages =
            CategorySet::from_bits(lists.urls.host_bits(&target.host)).intersection(self.illegal());
        if let Some(c) = illegal_pages.iter().next() {
            return Inspection::IllegalPages(c);
        }
        let rules = &self.inspection;
        if rules.never_sites.find(target).is_some() {
            return Inspection::NeverSite;
        }
        if let Some(c) = classification
            .categories
            .intersection(rules.never_categories)
            .iter()
            .next()
        {
            return Inspection::NeverCategory(c);
        }
        if self.group(group).inspect_tls {
            Inspection::Group
        } else {
            Inspection::GroupOff
        }
    }

    /// The header and parameter controls `group` applies to a request for `target`.
    pub fn controls(&self, group: GroupId, target: &Target) -> Enforcement {
        let controls = &self.group(group).controls;
        let mut out = Enforcement::default();
        let Some(name) = target.host.as_name() else {
            return out;
        };
        if controls.google_safe && is_google_search(&target.host, &target.path) {
            out.query = Some(with_safe_active(target.query.as_deref()));
            out.enforced.push("safe=active".into());
        }
        if let Some(level) = controls.youtube {
            let youtube = self
                .safe_search
                .engine_for(&target.host)
                .is_some_and(|e| e.setting == Setting::YoutubeRestrict);
            if youtube {
                let value = match level {
                    Level::Strict => "Strict",
                    Level::Moderate => "Moderate",
                };
                out.headers.push(("youtube-restrict", value.into()));
                out.enforced.push(format!("YouTube-Restrict: {value}"));
            }
        }
        if let Some(t) = &controls.microsoft {
            if MICROSOFT_SIGN_IN.contains(&name) {
                out.headers
                    .push(("restrict-access-to-tenants", t.tenants.clone()));
                out.headers
                    .push(("restrict-access-context", t.context.clone()));
                out.enforced
                    .push(format!("Restrict-Access-To-Tenants: {}", t.tenants));
            }
        }
        if let Some(domains) = &controls.google_domains {
            if name == "google.com" || name.ends_with(".google.com") {
                out.headers
                    .push(("x-googapps-allowed-domains", domains.clone()));
                out.enforced
                    .push(format!("X-GoogApps-Allowed-Domains: {domains}"));
            }
        }
        out
    }
}

/// A Google web search: `www.google.*` (a country ending) and a path under `/search`.
fn is_google_search(host: &Host, path: &str) -> bool {
    thread_local! {
        static GOOGLE: HostPattern = HostPattern::parse("www.google.*")
            .expect("www.google.* is a valid pattern");
    }
    let Some(name) = host.as_name() else {
        return false;
    };
    (path == "/search" || path.starts_with("/search?") || path.starts_with("/search/"))
        && GOOGLE.with(|g| g.matches(name))
}

/// `query` with every `safe=` parameter replaced by one `safe=active`, the other
/// parameters kept as they were written (not re-encoded).
pub fn with_safe_active(query: Option<&str>) -> String {
    let mut out = String::with_capacity(query.map_or(0, str::len) + 12);
    for part in query.unwrap_or("").split('&') {
        let key = part.split_once('=').map_or(part, |(k, _)| k);
        if part.is_empty() || key == "safe" {
            continue;
        }
        out.push_str(part);
        out.push('&');
    }
    out.push_str("safe=active");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_active_table() {
        // (query in, query out)
        let rows = [
            (None, "safe=active"),
            (Some(""), "safe=active"),
            (Some("q=cats"), "q=cats&safe=active"),
            (Some("q=cats&safe=off"), "q=cats&safe=active"),
            (Some("safe=off&q=a+b&safe=images"), "q=a+b&safe=active"),
            (Some("q=%26safe%3Doff"), "q=%26safe%3Doff&safe=active"),
            (Some("safesearch=off&q=x"), "safesearch=off&q=x&safe=active"),
            (Some("q=x&&"), "q=x&safe=active"),
        ];
        for (input, want) in rows {
            assert_eq!(with_safe_active(input), want, "{input:?}");
        }
    }

    #[test]
    fn google_search_table() {
        let rows = [
            ("www.google.com", "/search", true),
            ("www.google.co.uk", "/search", true),
            ("www.google.de", "/search/", true),
            ("www.google.com", "/", false),
            ("www.google.com", "/searchx", false),
            ("www.google.evil.example", "/search", false),
            ("mail.google.com", "/search", false),
            ("www.bing.com", "/search", false),
        ];
        for (host, path, want) in rows {
            let h = Host::parse(host).expect("test host");
            assert_eq!(is_google_search(&h, path), want, "{host}{path}");
        }
    }
}
