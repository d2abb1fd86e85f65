//! Host and request-target normalisation: the part of the filter pupils attack.
//!
//! A host can be spelt many ways that all reach the same server: `EXAMPLE.com.`,
//! `exa%6Dple.com`, `ｅｘａｍｐｌｅ.com`, `user@example.com`, and an IPv4 address as
//! `2130706433`, `0x7f.1` or `[::ffff:127.0.0.1]`. Every list lookup and every decision
//! works on one canonical form, produced here. We lean on the `url` crate, which
//! implements the WHATWG URL standard — the parser browsers use, so what it produces is
//! what the browser will actually connect to — and add what it leaves alone (trailing
//! dots, IPv4-mapped IPv6, a strict character set for names).
//!
//! Pure: no I/O.

#![deny(clippy::disallowed_methods)]

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A normalised host. Once you have one, it is already canonical.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// Lowercase ASCII (IDN as punycode `xn--`), no trailing dot, labels non-empty, at
    /// most 253 bytes, each label at most 63 bytes, characters `a-z 0-9 - _`.
    Name(String),
    /// An IPv4 address, including one written as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
    V4(Ipv4Addr),
    /// Any other IPv6 address.
    V6(Ipv6Addr),
}

/// Why a host or URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Nothing to parse.
    #[error("empty host")]
    Empty,
    /// Not a valid host name or address.
    #[error("invalid host {input:?}: {reason}")]
    InvalidHost {
        /// The input.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// A scheme other than http, https, ws, wss.
    #[error("unsupported scheme {scheme:?}: only http, https, ws and wss can be filtered")]
    UnsupportedScheme {
        /// The scheme.
        scheme: String,
    },
    /// A tunnel target without a port.
    #[error("{input:?} has no port (expected host:port)")]
    MissingPort {
        /// The input.
        input: String,
    },
    /// A port that is not a number from 1 to 65535.
    #[error("{input:?} has an invalid port (expected 1-65535)")]
    InvalidPort {
        /// The input.
        input: String,
    },
    /// A URL that is not absolute.
    #[error("{input:?} is not an absolute URL")]
    NotAbsolute {
        /// The input.
        input: String,
    },
}

fn invalid(input: &str, reason: impl Into<String>) -> HostError {
    HostError::InvalidHost {
        input: input.to_string(),
        reason: reason.into(),
    }
}

impl Host {
    /// Parses a bare host as it appears in a CONNECT line, a TLS SNI, a `Host` header
    /// (without port) or a list entry. IPv6 may be bracketed or not. Every IPv4 form that
    /// browsers and `inet_aton` accept is an IP literal.
    pub fn parse(input: &str) -> Result<Host, HostError> {
        if input.is_empty() {
            return Err(HostError::Empty);
        }
        // Unbracketed IPv6 (as in SNI-less tunnels or list entries).
        if input.contains(':') && !input.starts_with('[') {
            return match input.parse::<Ipv6Addr>() {
                Ok(v6) => Ok(Host::from_v6(v6)),
                Err(_) => Err(invalid(input, "colons are only allowed in IPv6 addresses")),
            };
        }
        // Trailing dots: `example.com.` is the same name. Strip them before the WHATWG
        // parser so `127.0.0.1..` cannot dodge the IPv4 check.
        let trimmed = input.trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(invalid(input, "a host cannot be only dots"));
        }
        if trimmed.contains(['/', '\\', '?', '#', '@']) {
            return Err(invalid(
                input,
                "a host cannot contain '/', '\\', '?', '#' or '@'",
            ));
        }
        let host = url::Host::parse(trimmed).map_err(|e| invalid(input, e.to_string()))?;
        Host::from_url_host(host, input)
    }

    fn from_v6(v6: Ipv6Addr) -> Host {
        match v6.to_ipv4_mapped() {
            Some(v4) => Host::V4(v4),
            None => Host::V6(v6),
        }
    }

    fn from_url_host<S: AsRef<str>>(host: url::Host<S>, input: &str) -> Result<Host, HostError> {
        match host {
            url::Host::Ipv4(v4) => Ok(Host::V4(v4)),
            url::Host::Ipv6(v6) => Ok(Host::from_v6(v6)),
            url::Host::Domain(name) => {
                let name = name.as_ref().trim_end_matches('.');
                // The WHATWG parser may have decoded `%2e` into a trailing dot.
                check_name(name).map_err(|why| invalid(input, why))?;
                // After percent-decoding, a name may turn out to be an IPv4 form.
                if name
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b'x' || b == b'X')
                {
                    if let Ok(url::Host::Ipv4(v4)) = url::Host::parse(name) {
                        return Ok(Host::V4(v4));
                    }
                }
                Ok(Host::Name(name.to_string()))
            }
        }
    }

    /// Whether the host is an IP address.
    pub fn is_ip(&self) -> bool {
        !matches!(self, Host::Name(_))
    }

    /// The name for a `Name`, else `None`.
    pub fn as_name(&self) -> Option<&str> {
        match self {
            Host::Name(n) => Some(n),
            _ => None,
        }
    }
}

/// Names as DNS and the lists know them.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 253 {
        return Err("name longer than 253 bytes");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-' and '_' are allowed in host names");
        }
    }
    Ok(())
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(v4) => write!(f, "{v4}"),
            Host::V6(v6) => write!(f, "[{v6}]"),
        }
    }
}

/// Parses `host:port`, `[v6]:port` or `host` (port `None`): CONNECT targets and `Host`
/// headers.
pub fn parse_authority(input: &str) -> Result<(Host, Option<u16>), HostError> {
    if input.is_empty() {
        return Err(HostError::Empty);
    }
    let (host, port) = if let Some(rest) = input.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| invalid(input, "unclosed '['"))?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| invalid(input, "junk after ']'"))?,
            ),
        };
        (host, port)
    } else {
        match input.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (input, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p).ok_or_else(|| HostError::InvalidPort {
            input: input.to_string(),
        })?),
    };
    Ok((Host::parse(host)?, port))
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&n| n != 0)
}

/// The schemes a proxy filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS (a CONNECT tunnel, or an absolute `https://` URL).
    Https,
    /// WebSocket.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl Scheme {
    /// The scheme's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }
}

/// A request target after normalisation: what the classifier sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Scheme.
    pub scheme: Scheme,
    /// Host, normalised.
    pub host: Host,
    /// Port: explicit, or the scheme's default.
    pub port: u16,
    /// Path, starting with `/`, percent-encoding as sent.
    pub path: String,
    /// Query without `?`, if any.
    pub query: Option<String>,
}

impl Target {
    /// Parses an absolute URL (http, https, ws, wss). Userinfo is dropped.
    pub fn parse(input: &str) -> Result<Target, HostError> {
        let url = url::Url::parse(input).map_err(|e| match e {
            url::ParseError::RelativeUrlWithoutBase => HostError::NotAbsolute {
                input: input.to_string(),
            },
            url::ParseError::EmptyHost => HostError::Empty,
            url::ParseError::InvalidPort => HostError::InvalidPort {
                input: input.to_string(),
            },
            other => invalid(input, other.to_string()),
        })?;
        let scheme = match url.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            other => {
                return Err(HostError::UnsupportedScheme {
                    scheme: other.to_string(),
                })
            }
        };
        let host = url.host().ok_or(HostError::Empty)?;
        let host = Host::from_url_host(host, input)?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| HostError::InvalidPort {
                input: input.to_string(),
            })?;
        if port == 0 {
            return Err(HostError::InvalidPort {
                input: input.to_string(),
            });
        }
        Ok(Target {
            scheme,
            host,
            port,
            path: url.path().to_string(),
            query: url.query().map(str::to_string),
        })
    }

    /// A tunnel target `host:port` (CONNECT): scheme https, path `/`, no query.
    pub fn from_authority(authority: &str) -> Result<Target, HostError> {
        let (host, port) = parse_authority(authority)?;
        let port = port.ok_or_else(|| HostError::MissingPort {
            input: authority.to_string(),
        })?;
        Ok(Target {
            scheme: Scheme::Https,
            host,
            port,
            path: "/".to_string(),
            query: None,
        })
    }

    /// `host/path` (with `?query` when `with_query`): no scheme, no port. The string URL
    /// lists and URL-prefix matching use.
    pub fn host_path(&self, with_query: bool) -> String {
        let mut s = format!("{}{}", self.host, self.path);
        if with_query {
            if let Some(q) = &self.query {
                s.push('?');
                s.push_str(q);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> Result<Host, ()> {
        Ok(Host::Name(s.to_string()))
    }
    fn v4(a: u8, b: u8, c: u8, d: u8) -> Result<Host, ()> {
        Ok(Host::V4(Ipv4Addr::new(a, b, c, d)))
    }
    fn v6(s: &str) -> Result<Host, ()> {
        Ok(Host::V6(s.parse().expect("test IPv6")))
    }
    const ERR: Result<Host, ()> = Err(());

    /// Every spelling a pupil might try, and what it must normalise to.
    #[test]
    fn host_table() {
        let rows: &[(&str, Result<Host, ()>)] = &[
            // case and trailing dots
            ("example.com", name("example.com")),
            ("EXAMPLE.COM", name("example.com")),
            ("Example.Com.", name("example.com")),
            ("example.com..", name("example.com")),
            ("...", ERR),
            ("", ERR),
            // IDNA
            ("bücher.de", name("xn--bcher-kva.de")),
            ("BÜCHER.de", name("xn--bcher-kva.de")),
            ("ＥＸＡＭＰＬＥ．ｃｏｍ", name("example.com")),
            ("ｅｘａｍｐｌｅ.com", name("example.com")),
            ("xn--bcher-kva.de", name("xn--bcher-kva.de")),
            ("пример.рф", name("xn--e1afmkfd.xn--p1ai")),
            ("xn--zz.de", ERR),
            // percent-encoding in the host
            ("exa%6Dple.com", name("example.com")),
            ("%65xample.com", name("example.com")),
            ("%31%32%37.0.0.1", v4(127, 0, 0, 1)),
            // IPv4 in every form inet_aton and browsers accept
            ("127.0.0.1", v4(127, 0, 0, 1)),
            ("127.0.0.1.", v4(127, 0, 0, 1)),
            ("2130706433", v4(127, 0, 0, 1)),
            ("0x7f000001", v4(127, 0, 0, 1)),
            ("0X7F000001", v4(127, 0, 0, 1)),
            ("017700000001", v4(127, 0, 0, 1)),
            ("0177.0.0.1", v4(127, 0, 0, 1)),
            ("0x7f.0.0.1", v4(127, 0, 0, 1)),
            ("0x7f.1", v4(127, 0, 0, 1)),
            ("127.1", v4(127, 0, 0, 1)),
            ("127.0.1", v4(127, 0, 0, 1)),
            ("10.0x10.0377.1", v4(10, 16, 255, 1)),
            ("0", v4(0, 0, 0, 0)),
            ("256.1.1.1", ERR),
            ("4294967296", ERR),
            ("1.2.3.4.5", ERR),
            ("foo.0x10", ERR),
            ("foo.123", ERR),
            // IPv6
            ("[::1]", v6("::1")),
            ("::1", v6("::1")),
            ("[0:0:0:0:0:0:0:1]", v6("::1")),
            ("[2001:DB8::1]", v6("2001:db8::1")),
            ("[::ffff:127.0.0.1]", v4(127, 0, 0, 1)),
            ("[::ffff:7f00:1]", v4(127, 0, 0, 1)),
            ("::ffff:10.1.2.3", v4(10, 1, 2, 3)),
            ("[::1", ERR),
            ("[nope]", ERR),
            ("1:2", ERR),
            // characters a host may not have
            ("exa mple.com", ERR),
            ("exa*mple.com", ERR),
            ("<script>.com", ERR),
            ("user@example.com", ERR),
            ("example.com/path", ERR),
            ("a..b.com", ERR),
            ("under_score.example.com", name("under_score.example.com")),
            (&"a".repeat(64), ERR),
        ];
        for (input, want) in rows {
            let got = Host::parse(input).map_err(|_| ());
            assert_eq!(&got, want, "Host::parse({input:?})");
        }
    }

    #[test]
    fn authority_table() {
        type Row = (&'static str, Result<(Host, Option<u16>), ()>);
        let rows: Vec<Row> = vec![
            (
                "example.com:443",
                Ok((Host::Name("example.com".into()), Some(443))),
            ),
            (
                "EXAMPLE.com.:8443",
                Ok((Host::Name("example.com".into()), Some(8443))),
            ),
            ("example.com", Ok((Host::Name("example.com".into()), None))),
            ("[::1]:443", Ok((Host::V6(Ipv6Addr::LOCALHOST), Some(443)))),
            ("[::1]", Ok((Host::V6(Ipv6Addr::LOCALHOST), None))),
            (
                "2130706433:443",
                Ok((Host::V4(Ipv4Addr::new(127, 0, 0, 1)), Some(443))),
            ),
            ("example.com:", Err(())),
            ("example.com:0", Err(())),
            ("example.com:99999", Err(())),
            ("example.com:+443", Err(())),
            ("example.com:44a", Err(())),
            ("[::1]x", Err(())),
            (":443", Err(())),
            ("", Err(())),
        ];
        for (input, want) in rows {
            assert_eq!(
                parse_authority(input).map_err(|_| ()),
                want,
                "parse_authority({input:?})"
            );
        }
        assert!(matches!(
            Target::from_authority("example.com"),
            Err(HostError::MissingPort { .. })
        ));
    }

    #[test]
    fn target_table() {
        // (input, scheme, host, port, path, query) or None for an error
        type Row = (
            &'static str,
            Option<(
                Scheme,
                &'static str,
                u16,
                &'static str,
                Option<&'static str>,
            )>,
        );
        let rows: Vec<Row> = vec![
            (
                "http://example.com",
                Some((Scheme::Http, "example.com", 80, "/", None)),
            ),
            (
                "https://example.com/a/b?x=1&y",
                Some((Scheme::Https, "example.com", 443, "/a/b", Some("x=1&y"))),
            ),
            (
                "http://Example.COM.:8080/P",
                Some((Scheme::Http, "example.com", 8080, "/P", None)),
            ),
            (
                "http://good.com@evil.com/",
                Some((Scheme::Http, "evil.com", 80, "/", None)),
            ),
            (
                "http://user:pw@evil.com:8080/",
                Some((Scheme::Http, "evil.com", 8080, "/", None)),
            ),
            (
                "http://0x7f.1/",
                Some((Scheme::Http, "127.0.0.1", 80, "/", None)),
            ),
            (
                "http://[::ffff:127.0.0.1]/",
                Some((Scheme::Http, "127.0.0.1", 80, "/", None)),
            ),
            (
                "http://[::1]:81/",
                Some((Scheme::Http, "[::1]", 81, "/", None)),
            ),
            (
                "http:\\\\evil.com\\x",
                Some((Scheme::Http, "evil.com", 80, "/x", None)),
            ),
            (
                "http://exa%6Dple.com/",
                Some((Scheme::Http, "example.com", 80, "/", None)),
            ),
            (
                "http://bücher.de/",
                Some((Scheme::Http, "xn--bcher-kva.de", 80, "/", None)),
            ),
            (
                "ws://chat.example/s",
                Some((Scheme::Ws, "chat.example", 80, "/s", None)),
            ),
            (
                "wss://chat.example/s",
                Some((Scheme::Wss, "chat.example", 443, "/s", None)),
            ),
            (
                "HTTP://EXAMPLE.COM/",
                Some((Scheme::Http, "example.com", 80, "/", None)),
            ),
            (
                "http://example.com/a%20b",
                Some((Scheme::Http, "example.com", 80, "/a%20b", None)),
            ),
            ("ftp://example.com/", None),
            ("/relative", None),
            ("http://", None),
            ("http://exa mple.com/", None),
            ("http://example.com:0/", None),
            ("http://example.com:70000/", None),
            ("http://foo.0x10/", None),
        ];
        for (input, want) in rows {
            let got = Target::parse(input).ok().map(|t| {
                let host = t.host.to_string();
                (t.scheme, host, t.port, t.path, t.query)
            });
            let want = want.map(|(s, h, p, path, q)| {
                (s, h.to_string(), p, path.to_string(), q.map(str::to_string))
            });
            assert_eq!(got, want, "Target::parse({input:?})");
        }
    }

    #[test]
    fn host_path_forms() {
        let t = Target::parse("https://Example.com/a?b=c").expect("parses");
        assert_eq!(t.host_path(false), "example.com/a");
        assert_eq!(t.host_path(true), "example.com/a?b=c");
        let t = Target::from_authority("[2001:db8::1]:443").expect("parses");
        assert_eq!(t.host_path(false), "[2001:db8::1]/");
    }

    proptest! {
        #[test]
        fn parse_is_idempotent(s in "[a-zA-Z0-9.%-]{1,40}") {
            if let Ok(h) = Host::parse(&s) {
                prop_assert_eq!(Host::parse(&h.to_string()), Ok(h));
            }
        }

        #[test]
        fn ipv4_forms_agree(a: u8, b: u8, c: u8, d: u8) {
            let want = Ok(Host::V4(Ipv4Addr::new(a, b, c, d)));
            let dec = format!("{a}.{b}.{c}.{d}");
            let hex = format!("0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}");
            let oct = format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}");
            let num = u32::from_be_bytes([a, b, c, d]).to_string();
            let mapped = format!("[::ffff:{a}.{b}.{c}.{d}]");
            for form in [dec, hex, oct, num, mapped] {
                prop_assert_eq!(Host::parse(&form), want.clone(), "{}", form);
            }
        }

        #[test]
        fn never_panics(s in "\\PC{0,60}") {
            let _ = Host::parse(&s);
            let _ = parse_authority(&s);
            let _ = Target::parse(&s);
            let _ = Target::parse(&format!("http://{s}/"));
        }
    }
}
