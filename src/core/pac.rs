//! The proxy auto-configuration script (`[pac]`): what a browser is told to send through
//! Gatehouse and what it may reach directly, written from the policy so that the PAC
//! file and the filter never disagree about the school's own hosts.
//!
//! The script is plain PAC (`FindProxyForURL`), using only what every engine has
//! (`isPlainHostName`, `dnsDomainIs`, `isInNet`, `shExpMatch`) and none of the calls that
//! block a browser on DNS: `isInNet` is only asked about hosts that are already IPv4
//! addresses, so a name is never resolved to decide. Names and addresses in it are the
//! validated ones, so nothing from the policy file can inject script text.
//!
//! | a request for | goes |
//! | --- | --- |
//! | `localhost`, `127.0.0.0/8`, `::1` | direct, always |
//! | a plain host name (`intranet`), when `direct_plain_hostnames` | direct |
//! | a host in `direct_domains` or under one | direct |
//! | an IPv4 address in `direct_networks` | direct |
//! | anything else | each proxy of `proxies` in turn; `DIRECT` after them only when `fallback_direct` |
//!
//! There is no direct fallback unless asked for: if every proxy is down, a pupil's
//! browser must fail, not reach the internet unfiltered.

use std::fmt::Write as _;

use ipnet::{IpNet, Ipv4Net};

use super::config::{ConfigError, ConfigErrorKind, RawPac, Source};
use super::host::Host;

/// One proxy a browser is sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacProxy {
    /// A validated host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Its port.
    pub port: u16,
}

/// The validated `[pac]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pac {
    /// Proxies in order.
    pub proxies: Vec<PacProxy>,
    /// Normalised domains reached directly.
    pub direct_domains: Vec<String>,
    /// Networks reached directly.
    pub direct_networks: Vec<Ipv4Net>,
    /// Single-label names go direct.
    pub direct_plain_hostnames: bool,
    /// `DIRECT` after the proxies.
    pub fallback_direct: bool,
}

impl Pac {
    /// Validates `[pac]`, pushing every problem with its line onto `errors`.
    pub fn compile(raw: &RawPac, source: &Source, errors: &mut Vec<ConfigError>) -> Pac {
        let mut bad = |span: std::ops::Range<usize>, message: String| {
            errors.push(source.error_at(span, ConfigErrorKind::InvalidValue(message)));
        };
        let mut proxies = Vec::new();
        for p in &raw.proxies {
            match parse_proxy(p.get_ref()) {
                Ok(proxy) => proxies.push(proxy),
                Err(why) => bad(p.span(), format!("[pac] proxies: {:?} {why}", p.get_ref())),
            }
        }
        let mut direct_domains = Vec::new();
        for d in &raw.direct_domains {
            let text = d
                .get_ref()
                .trim()
                .trim_start_matches("*.")
                .trim_start_matches('.');
            match Host::parse(text) {
                Ok(Host::Name(name)) => direct_domains.push(name.to_string()),
                Ok(_) => bad(
                    d.span(),
                    format!(
                        "[pac] direct_domains: {:?} is an address; put addresses in direct_networks",
                        d.get_ref()
                    ),
                ),
                Err(e) => bad(
                    d.span(),
                    format!("[pac] direct_domains: {:?}: {e}", d.get_ref()),
                ),
            }
        }
        let mut direct_networks = Vec::new();
        for n in &raw.direct_networks {
            match n.get_ref().trim().parse::<IpNet>() {
                Ok(IpNet::V4(net)) => direct_networks.push(net.trunc()),
                Ok(IpNet::V6(_)) => bad(
                    n.span(),
                    format!(
                        "[pac] direct_networks: {:?} is IPv6, which PAC's isInNet cannot test; \
                         name the hosts in direct_domains instead",
                        n.get_ref()
                    ),
                ),
                Err(_) => bad(
                    n.span(),
                    format!(
                        "[pac] direct_networks: {:?} is not a network such as \"10.0.0.0/8\"",
                        n.get_ref()
                    ),
                ),
            }
        }
        if proxies.is_empty() && raw.proxies.is_empty() {
            errors.push(source.error(ConfigErrorKind::InvalidValue(
                "[pac] needs at least one entry in proxies, such as \"gatehouse.school.internal:3128\""
                    .into(),
            )));
        }
        Pac {
            proxies,
            direct_domains,
            direct_networks,
            direct_plain_hostnames: raw.direct_plain_hostnames.unwrap_or(true),
            fallback_direct: raw.fallback_direct.unwrap_or(false),
        }
    }

    /// The PAC script, for a school named `school`.
    pub fn script(&self, school: &str) -> String {
        let mut s = String::with_capacity(1024);
        // The school's name goes in a comment: keep it to one line with no comment end.
        let school: String = school
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .replace("*/", "* /");
        let _ = writeln!(
            s,
            "/* Proxy auto-configuration for {school}, written by Gatehouse from the [pac]\n   \
             section of its policy. Change the policy, not this file. */"
        );
        s.push_str("function FindProxyForURL(url, host) {\n");
        s.push_str("    host = host.toLowerCase();\n");
        s.push_str(
            "    if (host == \"localhost\" || host == \"::1\" || host == \"[::1]\" || \
             shExpMatch(host, \"127.*\")) {\n        return \"DIRECT\";\n    }\n",
        );
        if self.direct_plain_hostnames {
            s.push_str("    if (isPlainHostName(host)) {\n        return \"DIRECT\";\n    }\n");
        }
        for d in &self.direct_domains {
            let _ = writeln!(
                s,
                "    if (host == \"{d}\" || dnsDomainIs(host, \".{d}\")) {{\n        return \"DIRECT\";\n    }}"
            );
        }
        if !self.direct_networks.is_empty() {
            s.push_str("    if (/^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$/.test(host)) {\n");
            for n in &self.direct_networks {
                let _ = writeln!(
                    s,
                    "        if (isInNet(host, \"{}\", \"{}\")) {{\n            return \"DIRECT\";\n        }}",
                    n.network(),
                    n.netmask()
                );
            }
            s.push_str("    }\n");
        }
        let _ = writeln!(s, "    return \"{}\";", self.route());
        s.push_str("}\n");
        s
    }

    /// What the script returns for a host that goes through the proxies.
    pub fn route(&self) -> String {
        let mut parts: Vec<String> = self
            .proxies
            .iter()
            .map(|p| {
                if p.host.contains(':') {
                    format!("PROXY [{}]:{}", p.host, p.port)
                } else {
                    format!("PROXY {}:{}", p.host, p.port)
                }
            })
            .collect();
        if self.fallback_direct {
            parts.push("DIRECT".into());
        }
        parts.join("; ")
    }
}

/// `host:port` (IPv6 in brackets) → a proxy, or why not.
fn parse_proxy(text: &str) -> Result<PacProxy, &'static str> {
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (addr, port) = rest
            .split_once("]:")
            .ok_or("is not host:port (an IPv6 address goes in brackets: \"[fd00::1]:3128\")")?;
        (addr, port)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or("is not host:port, such as \"gatehouse.school.internal:3128\"")?;
        if host.contains(':') {
            return Err("is not host:port (an IPv6 address goes in brackets: \"[fd00::1]:3128\")");
        }
        (host, port)
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or("has no port from 1 to 65535")?;
    let host = match Host::parse(host) {
        Ok(Host::Name(name)) => name.to_string(),
        Ok(Host::V4(a)) => a.to_string(),
        Ok(Host::V6(a)) => a.to_string(),
        Err(_) => return Err("does not name a valid host"),
    };
    Ok(PacProxy { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn compile(text: &str) -> Result<Pac, Vec<String>> {
        #[derive(serde::Deserialize)]
        struct File {
            pac: RawPac,
        }
        let source = Source::new(Path::new("policy.toml"), text);
        let file: File = source.parse(text).map_err(|e| vec![e.to_string()])?;
        let mut errors = Vec::new();
        let pac = Pac::compile(&file.pac, &source, &mut errors);
        if errors.is_empty() {
            Ok(pac)
        } else {
            Err(errors.iter().map(|e| e.to_string()).collect())
        }
    }

    #[test]
    fn proxies_table() {
        let rows = [
            (
                "gatehouse.school.internal:3128",
                Ok(("gatehouse.school.internal", 3128)),
            ),
            (
                "GateHouse.School.Internal.:8080",
                Ok(("gatehouse.school.internal", 8080)),
            ),
            ("10.0.0.5:3128", Ok(("10.0.0.5", 3128))),
            ("[fd00::5]:3128", Ok(("fd00::5", 3128))),
            ("gatehouse.school.internal", Err("is not host:port")),
            ("gatehouse:0", Err("has no port")),
            ("gatehouse:99999", Err("has no port")),
            ("fd00::5:3128", Err("is not host:port (an IPv6")),
            (
                "evil\");alert(1);//:3128",
                Err("does not name a valid host"),
            ),
            ("[fd00::5:3128", Err("is not host:port")),
        ];
        for (text, want) in rows {
            match (parse_proxy(text), want) {
                (Ok(p), Ok((host, port))) => {
                    assert_eq!((p.host.as_str(), p.port), (host, port), "{text}")
                }
                (Err(e), Err(start)) => assert!(e.starts_with(start), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn errors_name_the_line() {
        let text = "[pac]\nproxies = [\"gh:3128\", \"nope\"]\ndirect_domains = [\"10.1.2.3\", \"ok.example\"]\ndirect_networks = [\"fd00::/8\", \"10.0.0.0/33\", \"10.0.0.0/8\"]\n";
        let errors = compile(text).expect_err("invalid");
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("policy.toml:2:"), "{errors:?}");
        assert!(
            errors[0].contains("\"nope\" is not host:port"),
            "{errors:?}"
        );
        assert!(errors[1].starts_with("policy.toml:3:") && errors[1].contains("is an address"));
        assert!(errors[2].starts_with("policy.toml:4:") && errors[2].contains("IPv6"));
        assert!(errors[3].starts_with("policy.toml:4:") && errors[3].contains("not a network"));
        let errors = compile("[pac]\n").expect_err("no proxies");
        assert!(
            errors[0].contains("at least one entry in proxies"),
            "{errors:?}"
        );
    }

    #[test]
    fn the_script_says_what_the_section_says() {
        let pac = compile(
            "[pac]\nproxies = [\"gh1.school.internal:3128\", \"[fd00::2]:3128\"]\n\
             direct_domains = [\".School.Internal\", \"*.lea.example\"]\n\
             direct_networks = [\"10.1.0.0/16\"]\n",
        )
        .expect("valid");
        assert_eq!(pac.direct_domains, ["school.internal", "lea.example"]);
        let script = pac.script("St Mary's */ School\n");
        assert!(script.contains("St Mary's * / School "), "{script}");
        assert!(
            script.contains("dnsDomainIs(host, \".school.internal\")"),
            "{script}"
        );
        assert!(
            script.contains("isInNet(host, \"10.1.0.0\", \"255.255.0.0\")"),
            "{script}"
        );
        assert!(script.contains("isPlainHostName(host)"), "{script}");
        assert!(
            script.contains("return \"PROXY gh1.school.internal:3128; PROXY [fd00::2]:3128\";"),
            "{script}"
        );
        let pac = compile(
            "[pac]\nproxies = [\"gh:3128\"]\ndirect_plain_hostnames = false\nfallback_direct = true\n",
        )
        .expect("valid");
        let script = pac.script("S");
        assert!(!script.contains("isPlainHostName"), "{script}");
        assert!(!script.contains("isInNet"), "{script}");
        assert!(
            script.contains("return \"PROXY gh:3128; DIRECT\";"),
            "{script}"
        );
    }
}
