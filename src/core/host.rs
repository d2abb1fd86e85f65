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
        if let Some(host) = Host::parse_plain(input) {
            return Ok(host);
        }
        let host = url::Host::parse(trimmed).map_err(|e| invalid(input, e.to_string()))?;
        Host::from_url_host(host, input)
    }

    /// The common case without the WHATWG machinery: a host already in canonical form
    /// (lowercase `a-z 0-9 - _` labels, no trailing dot, no `xn--` label, a last label
    /// that starts with a letter so it cannot be read as a number), or a dotted-quad
    /// IPv4 address with no leading zeros. `None` means "ask the full parser", never
    /// "invalid": for every input where this answers, the full parser gives the same
    /// answer (the `plain_paths_agree` property test holds it to that).
    fn parse_plain(input: &str) -> Option<Host> {
        let bytes = input.as_bytes();
        if bytes.first()?.is_ascii_digit() && bytes.iter().all(|&b| b.is_ascii_digit() || b == b'.')
        {
            // Rust's parser takes exactly four decimal octets without leading zeros;
            // anything looser (`0177.1`, `127.1`) goes to the full parser.
            return input.parse::<Ipv4Addr>().ok().map(Host::V4);
        }
        if input.len() > 253 {
            return None;
        }
        // One pass over the bytes: every byte allowed, every label 1–63 bytes and not
        // punycode, the last label starting with a letter.
        let label_ok = |l: &[u8]| !l.is_empty() && l.len() <= 63 && !l.starts_with(b"xn--");
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'.' {
                if !label_ok(&bytes[start..i]) {
                    return None;
                }
                start = i + 1;
            } else if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
                return None;
            }
        }
        let last = &bytes[start..];
        (label_ok(last) && last[0].is_ascii_lowercase()).then(|| Host::Name(input.to_string()))
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
            Host::V4(v4) => {
                let mut text = String::with_capacity(15);
                push_v4(&mut text, *v4);
                f.write_str(&text)
            }
            Host::V6(v6) => write!(f, "[{v6}]"),
        }
    }
}

impl Host {
    /// The host as it appears in a URL (IPv6 in brackets), borrowed for a name: lookups
    /// on every request need the text, and a name (the usual case) is already text.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Host::Name(n) => std::borrow::Cow::Borrowed(n),
            other => {
                let mut out = String::with_capacity(41);
                other.push_to(&mut out);
                std::borrow::Cow::Owned(out)
            }
        }
    }

    /// Appends the host as it appears in a URL (IPv6 in brackets).
    pub fn push_to(&self, out: &mut String) {
        match self {
            Host::Name(n) => out.push_str(n),
            Host::V4(v4) => push_v4(out, *v4),
            Host::V6(v6) => {
                use fmt::Write;
                let _ = write!(out, "[{v6}]");
            }
        }
    }
}

/// Dotted decimal, without the formatting machinery (which costs more than the rest of
/// a request's host handling put together).
fn push_v4(out: &mut String, v4: Ipv4Addr) {
    let mut digits = itoa::Buffer::new();
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(digits.format(octet));
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

    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http | Scheme::Ws => 80,
            Scheme::Https | Scheme::Wss => 443,
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
        match Target::parse_plain(input) {
            Some(t) => Ok(t),
            None => Target::parse_whatwg(input),
        }
    }

    /// The common case: `http://` or `https://`, a plain host (see [`Host::parse`]), an
    /// optional port, and a path and query made only of characters the WHATWG parser
    /// leaves as they are, with no dot segments. `None` sends the input to the full
    /// parser; where this answers, the answer is the full parser's.
    fn parse_plain(input: &str) -> Option<Target> {
        let (scheme, rest) = if let Some(rest) = input.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            (Scheme::Https, input.strip_prefix("https://")?)
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, parse_port(port)?),
            None => (authority, scheme.default_port()),
        };
        let host = Host::parse_plain(host)?;
        let (path, query) = match tail.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (tail, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        let plain_path = path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b));
        if !plain_path
            || path.contains("/.")
            || path
                .as_bytes()
                .windows(3)
                .any(|w| w.eq_ignore_ascii_case(b"%2e"))
        {
            return None;
        }
        if let Some(q) = query {
            // `'` is escaped in special schemes' queries, so it is not plain.
            if !q
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&()*+,;=:@/?%".contains(&b))
            {
                return None;
            }
        }
        Some(Target {
            scheme,
            host,
            port,
            path: path.to_string(),
            query: query.map(str::to_string),
        })
    }

    fn parse_whatwg(input: &str) -> Result<Target, HostError> {
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

    /// `host` or `host:port` (when the port is not the scheme's default): what goes in a
    /// `Host` header and a URL's authority.
    pub fn authority(&self) -> String {
        let mut out = String::with_capacity(32);
        self.host.push_to(&mut out);
        if self.port != self.scheme.default_port() {
            out.push(':');
            out.push_str(itoa::Buffer::new().format(self.port));
        }
        out
    }

    /// `host/path` (with `?query` when `with_query`): no scheme, no port. The string URL
    /// lists and URL-prefix matching use.
    pub fn host_path(&self, with_query: bool) -> String {
        let mut s = String::with_capacity(64);
        self.host.push_to(&mut s);
        s.push_str(&self.path);
        if with_query {
            if let Some(q) = &self.query {
                s.push('?');
                s.push_str(q);
            }
        }
        s
    }
}

/// A name already in normal form: lowercase letters, digits, `-`, `_` in non-empty
/// labels, not ending in a numeric label (which would make it an IPv4 form), at most
/// 253 bytes with labels of at most 63, and no IDNA (`xn--`) labels, which need checking.
pub fn is_plain_name(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    let mut last_numeric = false;
    for label in s.split('.') {
        if label.is_empty() || label.len() > 63 || label.starts_with("xn--") {
            return false;
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return false;
        }
        last_numeric = label.bytes().all(|b| b.is_ascii_digit());
    }
    !last_numeric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_name_fast_path_table() {
        let rows = [
            ("example.com", true),
            ("a-b_c.co.uk", true),
            ("Example.com", false),
            ("example.com.", false),
            ("1.2.3.4", false),
            ("foo.123", false),
            ("xn--bcher-kva.de", false),
            ("exa mple.com", false),
            ("", false),
            ("a..b", false),
            ("123.example.com", true),
        ];
        for (input, want) in rows {
            assert_eq!(is_plain_name(input), want, "{input}");
        }
    }

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

    #[test]
    fn text_is_the_display_form_and_borrows_names() {
        for input in [
            "www.example.com",
            "10.0.0.1",
            "[2001:db8::1]",
            "xn--bcher-kva.example",
        ] {
            let host = Host::parse(input).expect("test host");
            let text = host.text();
            assert_eq!(text, host.to_string(), "{input}");
            assert_eq!(
                matches!(text, std::borrow::Cow::Borrowed(_)),
                matches!(host, Host::Name(_)),
                "{input}"
            );
        }
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

    /// What browsers send most takes the shortcut (the property test checks it agrees).
    #[test]
    fn common_targets_take_the_plain_path() {
        for url in [
            "http://example.com/",
            "http://example.com",
            "http://www.bbc.co.uk/news/articles/c0000000?at_medium=RSS&x=1",
            "https://under_score.example.com:8443/a/b.html",
            "http://127.0.0.1:18080/small",
            "http://192.168.0.10/index.php?id=3",
        ] {
            assert!(Target::parse_plain(url).is_some(), "{url}");
        }
        for url in [
            "http://EXAMPLE.com/",
            "http://example.com./",
            "http://xn--bcher-kva.de/",
            "http://foo.123/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://example.com/a/../b",
            "http://example.com/%2e%2E/b",
            "http://example.com/a b",
            "http://user@example.com/",
            "http://[::1]/",
        ] {
            assert!(Target::parse_plain(url).is_none(), "{url}");
        }
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

        /// The shortcut parsers answer only where the full parser agrees.
        #[test]
        fn plain_paths_agree(
            scheme in "(http|https|HTTP|ftp)://",
            host in "[a-zA-Z0-9._%@\\[\\]:-]{0,20}|[0-9]{1,4}(\\.[0-9]{1,4}){0,4}|[a-z]{1,6}(\\.(xn--[a-z0-9]{1,6}|[a-z0-9_-]{1,6}|0x[0-9a-f]{0,3}|[0-9]{1,3})){0,3}",
            port in "(:[0-9]{0,6})?",
            path in "[a-zA-Z0-9/.%?#'\"<>\\\\ {}`^|!$&()*+,;=:@~_-]{0,24}|[a-z0-9/.%Ee?=&'-]{0,24}",
        ) {
            let input = format!("{scheme}{host}{port}{path}");
            if let Some(fast) = Target::parse_plain(&input) {
                prop_assert_eq!(Ok(fast), Target::parse_whatwg(&input), "{}", input);
            }
            if let Some(fast) = Host::parse_plain(&host) {
                let trimmed = host.trim_end_matches('.');
                let slow = url::Host::parse(trimmed)
                    .map_err(|e| invalid(&host, e.to_string()))
                    .and_then(|h| Host::from_url_host(h, &host));
                prop_assert_eq!(Ok(fast), slow, "{}", host);
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
