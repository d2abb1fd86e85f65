//! The classifier: compiled category lists and the lookup that turns a request target
//! into the set of categories it belongs to.
//!
//! Lists are compiled once into structures built for the request path:
//!
//! * domains — a table of name hashes with a category-set palette ([`DomainIndex`]):
//!   each suffix of the host that ends on a label boundary is probed, so
//!   `www.example.com` matches an `example.com` entry. IP entries sit in a small hash
//!   map beside it.
//! * URL prefixes — per host, a short list of path prefixes (`bbc.co.uk/bitesize`), plus
//!   SHA-256 digests for feeds distributed as hashes (the IWF's members' list).
//! * expressions — one [`regex::RegexSet`] over `host/path?query`.
//! * search terms — one Aho-Corasick automaton over the query typed into a known search
//!   engine, matched on word boundaries.
//!
//! Pure: no I/O and no clock. Reading list files and the compiled cache lives in
//! [`crate::lists`].

use std::collections::HashMap;
use std::net::IpAddr;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::RegexSet;
use sha2::{Digest, Sha256};

use crate::core::category::{CategoryId, CategorySet};
use crate::core::host::{Host, Target};

/// Errors building compiled lists.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// An expression is not a valid regular expression.
    #[error("invalid expression {pattern:?}: {message}")]
    Expression {
        /// The pattern as written.
        pattern: String,
        /// What the regex compiler said.
        message: String,
    },
    /// The expressions together are too large to compile.
    #[error("expressions too large to compile: {0}")]
    ExpressionSet(String),
    /// The search terms could not be compiled.
    #[error("search terms could not be compiled: {0}")]
    SearchTerms(String),
    /// Building the domain index failed.
    #[error("building the domain index failed: {0}")]
    Domains(String),
    /// A compiled index was built from other sources.
    #[error("compiled domain index is out of date")]
    Stale,
    /// A compiled index is damaged or from another version.
    #[error("compiled domain index is unreadable: {0}")]
    BadIndex(String),
}

// ---------------------------------------------------------------------------------------
// Domains

/// Every listed domain and IP address with the categories that list it.
///
/// Names are kept as 64-bit xxh3 hashes in one open-addressing table (linear probing,
/// load at most 0.8): a slot holds the hash's high bits and, in its low bits, an index
/// into a small palette of category sets (there are few distinct combinations, however
/// many domains). A host is looked up by hashing each of its suffixes that end on a label
/// boundary — only those with a label count some entry has — so a 4-label host costs at
/// most 4 independent probes, which the CPU overlaps. We measured an `fst` of reversed
/// names first: it is smaller but its walk chases one pointer per byte, ~1.2 µs per cold
/// lookup at 5M domains against ~0.2 µs here (see `benches/classifier.rs`).
///
/// Hashes are not names: two different names share a stored hash with probability about
/// `probes × 2^-(64 - palette_bits)` per lookup (below 1e-14 for any real list), which we
/// accept for a table a third the size of one holding the names.
pub struct DomainIndex {
    slots: Vec<u64>,
    palette: Vec<u64>,
    palette_bits: u32,
    /// Bit `k` set when some entry has `k` labels (63 = 63 or more).
    label_counts: u64,
    names: usize,
    ips: HashMap<IpAddr, u64>,
}

/// Collects domain entries before they are compiled into a [`DomainIndex`].
#[derive(Default)]
pub struct DomainIndexBuilder {
    entries: Vec<(u64, u64)>,
    label_counts: u64,
    ips: HashMap<IpAddr, u64>,
}

#[inline]
fn name_hash(name: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name)
}

#[inline]
fn label_bit(labels: usize) -> u64 {
    1 << labels.min(63)
}

impl DomainIndexBuilder {
    /// An empty builder.
    pub fn new() -> DomainIndexBuilder {
        DomainIndexBuilder::default()
    }

    /// Adds a normalised host with the categories `bits`.
    pub fn insert(&mut self, host: &Host, bits: u64) -> Result<(), CompileError> {
        match host {
            Host::Name(name) => self.insert_name(name, bits),
            Host::V4(ip) => {
                *self.ips.entry(IpAddr::V4(*ip)).or_default() |= bits;
                Ok(())
            }
            Host::V6(ip) => {
                *self.ips.entry(IpAddr::V6(*ip)).or_default() |= bits;
                Ok(())
            }
        }
    }

    /// Adds an already normalised name (lowercase ASCII, no trailing dot).
    pub fn insert_name(&mut self, name: &str, bits: u64) -> Result<(), CompileError> {
        if name.is_empty() || bits == 0 {
            return Err(CompileError::Domains(format!("bad entry {name:?}")));
        }
        self.label_counts |= label_bit(name.bytes().filter(|&b| b == b'.').count() + 1);
        self.entries.push((name_hash(name.as_bytes()), bits));
        Ok(())
    }

    /// Number of entries added so far (duplicates included).
    pub fn len(&self) -> usize {
        self.entries.len() + self.ips.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Merges duplicate entries (OR-ing their categories) and builds the table.
    pub fn build(mut self) -> Result<DomainIndex, CompileError> {
        self.entries.sort_unstable_by_key(|&(h, _)| h);
        self.entries.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                kept.1 |= later.1;
                true
            } else {
                false
            }
        });
        // Palette of distinct category sets; index 0 is reserved so no slot is 0.
        let mut palette = vec![0u64];
        let mut palette_index: HashMap<u64, u64> = HashMap::new();
        let mut indexed = Vec::with_capacity(self.entries.len());
        for &(h, bits) in &self.entries {
            let idx = *palette_index.entry(bits).or_insert_with(|| {
                palette.push(bits);
                (palette.len() - 1) as u64
            });
            indexed.push((h, idx));
        }
        drop(self.entries);
        let palette_bits = (usize::BITS - palette.len().leading_zeros()).max(4);
        if palette_bits > 24 {
            return Err(CompileError::Domains(
                "too many distinct category combinations".into(),
            ));
        }
        // Load factor 0.7: short probe runs for misses, 11.4 bytes a domain.
        let capacity = (indexed.len() as u64 * 10 / 7 + 8) as usize;
        let mut slots = vec![0u64; capacity];
        let high = !((1u64 << palette_bits) - 1);
        for (h, idx) in indexed.iter().copied() {
            let mut pos = slot_of(h, capacity);
            while slots[pos] != 0 {
                pos += 1;
                if pos == capacity {
                    pos = 0;
                }
            }
            slots[pos] = (h & high) | idx;
        }
        Ok(DomainIndex {
            slots,
            palette,
            palette_bits,
            label_counts: self.label_counts,
            names: indexed.len(),
            ips: self.ips,
        })
    }
}

/// Maps a hash onto `0..n` without division (Lemire's multiply-shift).
#[inline]
fn slot_of(h: u64, n: usize) -> usize {
    ((u128::from(h) * n as u128) >> 64) as usize
}

const INDEX_MAGIC: &[u8; 8] = b"GHDIDX02";

/// Reads a serialised index from any reader, refusing short input.
struct Reader<R> {
    inner: R,
}

impl<R: std::io::Read> Reader<R> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], CompileError> {
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| CompileError::BadIndex(format!("truncated ({e})")))?;
        Ok(buf)
    }

    fn word(&mut self) -> Result<u64, CompileError> {
        Ok(u64::from_le_bytes(self.take::<8>()?))
    }

    /// Reads `n` words straight into their vector, in blocks, so that loading a large
    /// index needs no second buffer the size of the file.
    fn words(&mut self, n: usize) -> Result<Vec<u64>, CompileError> {
        let mut out = Vec::new();
        out.try_reserve_exact(n)
            .map_err(|_| CompileError::BadIndex(format!("cannot allocate {n} words")))?;
        let mut block = vec![0u8; 64 * 1024];
        let mut left = n;
        while left > 0 {
            let words = left.min(block.len() / 8);
            let chunk = &mut block[..words * 8];
            self.inner
                .read_exact(chunk)
                .map_err(|e| CompileError::BadIndex(format!("truncated ({e})")))?;
            out.extend(
                chunk
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
            );
            left -= words;
        }
        Ok(out)
    }
}

impl DomainIndex {
    /// An index with no entries.
    pub fn empty() -> DomainIndex {
        DomainIndex {
            slots: vec![0; 1],
            palette: vec![0],
            palette_bits: 4,
            label_counts: 0,
            names: 0,
            ips: HashMap::new(),
        }
    }

    #[inline]
    fn probe(&self, h: u64) -> u64 {
        let pos = slot_of(h, self.slots.len());
        self.probe_from(h, pos, self.slots[pos])
    }

    /// Continues a probe from `pos`, whose slot held `slot`.
    #[inline]
    fn probe_from(&self, h: u64, mut pos: usize, mut slot: u64) -> u64 {
        let mask = (1u64 << self.palette_bits) - 1;
        let n = self.slots.len();
        loop {
            if slot == 0 {
                return 0;
            }
            if (slot ^ h) & !mask == 0 {
                return self.palette[(slot & mask) as usize];
            }
            pos += 1;
            if pos == n {
                pos = 0;
            }
            slot = self.slots[pos];
        }
    }

    /// Categories of every listed domain that `name` equals or is a subdomain of.
    ///
    /// All suffix hashes are computed and their first slots loaded before any is
    /// examined: the loads do not depend on each other, so the CPU has them in flight
    /// together and a cold lookup costs about one memory latency, not one per label.
    #[inline]
    pub fn lookup_name(&self, name: &str) -> u64 {
        const MAX: usize = 8;
        let bytes = name.as_bytes();
        let total = bytes.iter().filter(|&&b| b == b'.').count() + 1;
        let n = self.slots.len();
        let mut hashes = [0u64; MAX];
        let mut positions = [0usize; MAX];
        let mut k = 0;
        let mut start = 0;
        let mut labels = total;
        let mut bits = 0;
        loop {
            if self.label_counts & label_bit(labels) != 0 {
                let h = name_hash(&bytes[start..]);
                if k == MAX {
                    // Very deep names: probe the rest one by one.
                    bits |= self.probe(h);
                } else {
                    hashes[k] = h;
                    positions[k] = slot_of(h, n);
                    k += 1;
                }
            }
            match bytes[start..].iter().position(|&b| b == b'.') {
                Some(dot) => {
                    start += dot + 1;
                    labels -= 1;
                }
                None => break,
            }
        }
        let mut first = [0u64; MAX];
        for i in 0..k {
            first[i] = self.slots[positions[i]];
        }
        for i in 0..k {
            bits |= self.probe_from(hashes[i], positions[i], first[i]);
        }
        bits
    }

    /// Categories listing `host`: suffix match for names, exact match for addresses.
    pub fn lookup(&self, host: &Host) -> u64 {
        match host {
            Host::Name(name) => self.lookup_name(name),
            Host::V4(ip) => self.ips.get(&IpAddr::V4(*ip)).copied().unwrap_or(0),
            Host::V6(ip) => self.ips.get(&IpAddr::V6(*ip)).copied().unwrap_or(0),
        }
    }

    /// Number of distinct names and addresses.
    pub fn len(&self) -> usize {
        self.names + self.ips.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory the index holds.
    pub fn heap_bytes(&self) -> usize {
        self.slots.len() * 8 + self.palette.len() * 8 + self.ips.capacity() * 32
    }

    /// Count of entries per category bit (for `gatehouse check` and metrics).
    pub fn counts_per_bit(&self) -> [u64; 64] {
        let mask = (1u64 << self.palette_bits) - 1;
        let mut per_palette = vec![0u64; self.palette.len()];
        for &slot in &self.slots {
            if slot != 0 {
                per_palette[(slot & mask) as usize] += 1;
            }
        }
        let mut counts = [0u64; 64];
        let mut add = |bits: u64, n: u64| {
            for id in CategorySet::from_bits(bits).iter() {
                counts[id.index()] += n;
            }
        };
        for (i, n) in per_palette.into_iter().enumerate() {
            add(self.palette[i], n);
        }
        for &bits in self.ips.values() {
            add(bits, 1);
        }
        counts
    }

    /// Entries per distinct set of categories, as (category bits, entries), most
    /// first: a set of more than one category is an overlap between lists.
    pub fn counts_per_set(&self) -> Vec<(u64, u64)> {
        let mask = (1u64 << self.palette_bits) - 1;
        let mut per_palette = vec![0u64; self.palette.len()];
        for &slot in &self.slots {
            if slot != 0 {
                per_palette[(slot & mask) as usize] += 1;
            }
        }
        let mut sets: HashMap<u64, u64> = HashMap::new();
        for (i, n) in per_palette.into_iter().enumerate() {
            if n > 0 {
                *sets.entry(self.palette[i]).or_default() += n;
            }
        }
        for &bits in self.ips.values() {
            *sets.entry(bits).or_default() += 1;
        }
        let mut out: Vec<(u64, u64)> = sets.into_iter().collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    /// Serialises the index: magic, fingerprint of the sources, header, addresses,
    /// palette, slots. Little-endian throughout.
    pub fn to_bytes(&self, fingerprint: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.slots.len() * 8 + self.palette.len() * 8 + self.ips.len() * 25 + 64,
        );
        out.extend_from_slice(INDEX_MAGIC);
        for word in [
            fingerprint,
            u64::from(self.palette_bits),
            self.label_counts,
            self.names as u64,
            self.ips.len() as u64,
            self.palette.len() as u64,
            self.slots.len() as u64,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        for (ip, bits) in &self.ips {
            match ip {
                IpAddr::V4(v4) => {
                    out.push(4);
                    out.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    out.push(6);
                    out.extend_from_slice(&v6.octets());
                }
            }
            out.extend_from_slice(&bits.to_le_bytes());
        }
        for word in self.palette.iter().chain(self.slots.iter()) {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// The fingerprint stored in serialised bytes, if they are an index at all.
    pub fn fingerprint_of(bytes: &[u8]) -> Option<u64> {
        if bytes.len() < 64 || &bytes[..8] != INDEX_MAGIC {
            return None;
        }
        Some(u64::from_le_bytes(bytes[8..16].try_into().ok()?))
    }

    /// Reads an index written by [`DomainIndex::to_bytes`], checking every bound.
    pub fn from_bytes(bytes: &[u8]) -> Result<DomainIndex, CompileError> {
        DomainIndex::read(bytes, None)
    }

    /// Reads an index from `reader`. With `expect`, an index built from other sources
    /// (another fingerprint) is refused after reading only its header.
    pub fn read<R: std::io::Read>(
        reader: R,
        expect: Option<u64>,
    ) -> Result<DomainIndex, CompileError> {
        let bad = |m: &str| CompileError::BadIndex(m.to_string());
        let mut r = Reader { inner: reader };
        if &r.take::<8>()? != INDEX_MAGIC {
            return Err(bad(
                "not a Gatehouse domain index of this version (bad magic)",
            ));
        }
        let fingerprint = r.word()?;
        if expect.is_some_and(|e| e != fingerprint) {
            return Err(CompileError::Stale);
        }
        let palette_bits = r.word()?;
        let label_counts = r.word()?;
        let names = r.word()? as usize;
        let n_ips = r.word()?;
        let n_palette = r.word()? as usize;
        let n_slots = r.word()? as usize;
        if !(4..=24).contains(&palette_bits)
            || n_palette == 0
            || n_palette > (1 << palette_bits)
            || n_slots == 0
            || names > n_slots
        {
            return Err(bad("inconsistent header"));
        }
        let mut ips = HashMap::new();
        for _ in 0..n_ips {
            let ip = match r.take::<1>()?[0] {
                4 => IpAddr::from(r.take::<4>()?),
                6 => IpAddr::from(r.take::<16>()?),
                _ => return Err(bad("bad address kind")),
            };
            ips.insert(ip, r.word()?);
        }
        let palette = r.words(n_palette)?;
        let slots = r.words(n_slots)?;
        let mask = (1u64 << palette_bits) - 1;
        // A damaged file must not make a lookup index past the palette or spin forever.
        if slots
            .iter()
            .any(|&s| s != 0 && ((s & mask) as usize >= n_palette || s & mask == 0))
            || !slots.contains(&0)
        {
            return Err(bad("corrupt slot table"));
        }
        Ok(DomainIndex {
            slots,
            palette,
            palette_bits: palette_bits as u32,
            label_counts,
            names,
            ips,
        })
    }
}

// ---------------------------------------------------------------------------------------
// URL prefixes and hashes

/// Lowercases `host/path` and decodes percent-escapes of unreserved characters, so that
/// `/Bad%2Dpage` and `/bad-page` are the same URL to every list. Reserved characters
/// (`%2F` …) stay encoded: decoding them would change which resource is named.
pub fn normalise_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let c = (h * 16 + l) as u8;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    out.push(c.to_ascii_lowercase() as char);
                } else {
                    out.push('%');
                    out.push(bytes[i + 1].to_ascii_uppercase() as char);
                    out.push(bytes[i + 2].to_ascii_uppercase() as char);
                }
                i += 3;
                continue;
            }
        }
        out.push(b.to_ascii_lowercase() as char);
        i += 1;
    }
    out
}

/// Host-and-path prefixes (`example.com/forum/`), matched on the host and its subdomains.
#[derive(Default)]
pub struct UrlPrefixes {
    by_host: HashMap<String, Vec<(String, u64)>>,
    len: usize,
}

impl UrlPrefixes {
    /// Adds `host` + `path_prefix` (already normalised: lowercase, starts with `/`).
    pub fn insert(&mut self, host: &Host, path_prefix: &str, bits: u64) {
        let path = normalise_path(path_prefix);
        let entries = self.by_host.entry(host.to_string()).or_default();
        match entries.iter_mut().find(|(p, _)| *p == path) {
            Some(existing) => existing.1 |= bits,
            None => {
                entries.push((path, bits));
                self.len += 1;
            }
        }
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Categories whose prefixes match `host` (or a parent domain) and `path`
    /// (normalised with [`normalise_path`]).
    pub fn lookup(&self, host: &Host, path: &str) -> u64 {
        let mut bits = 0;
        let host = host.text();
        for suffix in suffixes(&host) {
            if let Some(entries) = self.by_host.get(suffix) {
                for (prefix, b) in entries {
                    if path.starts_with(prefix.as_str()) {
                        bits |= b;
                    }
                }
            }
        }
        bits
    }
}

impl UrlPrefixes {
    /// Categories with a prefix anywhere on `host` (or a parent domain), whatever the
    /// path: what a TLS tunnel to `host` may reach, since its paths cannot be seen.
    pub fn host_bits(&self, host: &Host) -> u64 {
        let host = host.text();
        suffixes(&host)
            .filter_map(|suffix| self.by_host.get(suffix))
            .flatten()
            .fold(0, |bits, (_, b)| bits | b)
    }

    /// Each host that has prefixes, with the categories they carry.
    pub fn hosts(&self) -> impl Iterator<Item = (&str, u64)> {
        self.by_host
            .iter()
            .map(|(host, entries)| (host.as_str(), entries.iter().fold(0, |a, (_, b)| a | b)))
    }
}

/// `www.example.com`, `example.com`, `com`: the name and each parent, for suffix lookups
/// in hash maps. An IP literal (dotted or bracketed) yields only itself.
pub fn suffixes(host: &str) -> impl Iterator<Item = &str> {
    let is_ip = host.starts_with('[') || host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let mut rest = Some(host);
    std::iter::from_fn(move || {
        let current = rest?;
        rest = if is_ip {
            None
        } else {
            current.find('.').map(|i| &current[i + 1..])
        };
        Some(current)
    })
}

/// SHA-256 digests of `host/path` strings, for lists distributed as hashes.
#[derive(Default)]
pub struct UrlHashes {
    digests: HashMap<[u8; 32], u64>,
}

impl UrlHashes {
    /// Adds a digest.
    pub fn insert(&mut self, digest: [u8; 32], bits: u64) {
        *self.digests.entry(digest).or_default() |= bits;
    }

    /// Number of digests.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The digest of a `host/path` string as the lists hold it.
    pub fn digest(host_path: &str) -> [u8; 32] {
        Sha256::digest(host_path.as_bytes()).into()
    }

    /// Categories whose digests match the URL: the host with (and without) a leading
    /// `www.`, with the whole path and query, the path alone, and each prefix of the path
    /// that ends in `/`.
    pub fn lookup(&self, host: &Host, path: &str, query: Option<&str>) -> u64 {
        if self.digests.is_empty() {
            return 0;
        }
        let host = host.text();
        let bare = host.strip_prefix("www.").unwrap_or(&host);
        let mut bits = 0;
        let mut check = |s: &str| {
            if let Some(b) = self.digests.get(&UrlHashes::digest(s)) {
                bits |= b;
            }
        };
        for h in [&*host, bare] {
            if let Some(q) = query {
                check(&format!("{h}{path}?{q}"));
            }
            check(&format!("{h}{path}"));
            if path.len() > 1 {
                check(&format!("{h}{}", path.trim_end_matches('/')));
            }
            for (i, _) in path.match_indices('/') {
                check(&format!("{h}{}", &path[..=i]));
                if i > 0 {
                    check(&format!("{h}{}", &path[..i]));
                }
            }
            check(h);
            if h == bare {
                break;
            }
        }
        bits
    }
}

// ---------------------------------------------------------------------------------------
// Expressions

/// Regular expressions over `host/path?query`, compiled into one set.
pub struct Expressions {
    set: RegexSet,
    bits: Vec<u64>,
}

impl Expressions {
    /// Compiles `(pattern, categories)` pairs. Patterns are case-insensitive.
    pub fn new(patterns: &[(String, u64)]) -> Result<Expressions, CompileError> {
        for (p, _) in patterns {
            if let Err(e) = regex::Regex::new(p) {
                return Err(CompileError::Expression {
                    pattern: p.clone(),
                    message: e.to_string(),
                });
            }
        }
        let set = regex::RegexSetBuilder::new(patterns.iter().map(|(p, _)| p))
            .case_insensitive(true)
            .size_limit(64 << 20)
            .build()
            .map_err(|e| CompileError::ExpressionSet(e.to_string()))?;
        Ok(Expressions {
            set,
            bits: patterns.iter().map(|(_, b)| *b).collect(),
        })
    }

    /// Number of expressions.
    pub fn len(&self) -> usize {
        self.bits.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }

    /// Categories whose expressions match `url` (`host/path?query`, normalised).
    pub fn lookup(&self, url: &str) -> u64 {
        self.set
            .matches(url)
            .iter()
            .fold(0, |acc, i| acc | self.bits[i])
    }
}

// ---------------------------------------------------------------------------------------
// Search terms

/// A search engine whose query Gatehouse reads: the host's registrable label, the path
/// its results live under, and the query parameter.
struct SearchEngine {
    /// A label the host must contain (`google` matches `www.google.co.uk`).
    label: &'static str,
    path_prefix: &'static str,
    param: &'static str,
}

/// The search engines pupils use, and where each keeps the query.
const SEARCH_ENGINES: &[SearchEngine] = &[
    SearchEngine {
        label: "google",
        path_prefix: "/search",
        param: "q",
    },
    SearchEngine {
        label: "bing",
        path_prefix: "/search",
        param: "q",
    },
    SearchEngine {
        label: "bing",
        path_prefix: "/images/search",
        param: "q",
    },
    SearchEngine {
        label: "bing",
        path_prefix: "/videos/search",
        param: "q",
    },
    SearchEngine {
        label: "duckduckgo",
        path_prefix: "/",
        param: "q",
    },
    SearchEngine {
        label: "yahoo",
        path_prefix: "/search",
        param: "p",
    },
    SearchEngine {
        label: "youtube",
        path_prefix: "/results",
        param: "search_query",
    },
    SearchEngine {
        label: "ecosia",
        path_prefix: "/search",
        param: "q",
    },
    SearchEngine {
        label: "brave",
        path_prefix: "/search",
        param: "q",
    },
    SearchEngine {
        label: "startpage",
        path_prefix: "/",
        param: "query",
    },
    SearchEngine {
        label: "startpage",
        path_prefix: "/",
        param: "q",
    },
    SearchEngine {
        label: "yandex",
        path_prefix: "/search",
        param: "text",
    },
    SearchEngine {
        label: "baidu",
        path_prefix: "/s",
        param: "wd",
    },
    SearchEngine {
        label: "ask",
        path_prefix: "/web",
        param: "q",
    },
    SearchEngine {
        label: "kiddle",
        path_prefix: "/s.php",
        param: "q",
    },
    SearchEngine {
        label: "tiktok",
        path_prefix: "/search",
        param: "q",
    },
    SearchEngine {
        label: "pinterest",
        path_prefix: "/search",
        param: "q",
    },
];

/// Extracts the search typed into a known search engine, decoded and lowercased with
/// runs of whitespace collapsed; `None` when the URL is not a search.
pub fn search_query(host: &Host, path: &str, query: Option<&str>) -> Option<String> {
    let name = host.as_name()?;
    let query = query?;
    let labels: Vec<&str> = name.split('.').collect();
    for engine in SEARCH_ENGINES {
        if !labels.contains(&engine.label) || !path.starts_with(engine.path_prefix) {
            continue;
        }
        // A query string is form-encoded: `+` is a space, `%XX` a byte.
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if key == engine.param && !value.is_empty() {
                let decoded = value.to_lowercase();
                let collapsed = decoded.split_whitespace().collect::<Vec<_>>().join(" ");
                return (!collapsed.is_empty()).then_some(collapsed);
            }
        }
    }
    None
}

/// One search term found in a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermMatch {
    /// The term as listed.
    pub term: String,
    /// The category whose list holds it.
    pub category: CategoryId,
}

/// Search-term lists compiled into one Aho-Corasick automaton.
pub struct SearchTerms {
    automaton: AhoCorasick,
    terms: Vec<(String, CategoryId)>,
}

impl SearchTerms {
    /// Compiles `(term, category)` pairs. Terms are lowercased and whitespace-collapsed.
    pub fn new(terms: Vec<(String, CategoryId)>) -> Result<SearchTerms, CompileError> {
        let terms: Vec<(String, CategoryId)> = terms
            .into_iter()
            .map(|(t, c)| {
                (
                    t.split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .to_lowercase(),
                    c,
                )
            })
            .filter(|(t, _)| !t.is_empty())
            .collect();
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(terms.iter().map(|(t, _)| t))
            .map_err(|e| CompileError::SearchTerms(e.to_string()))?;
        Ok(SearchTerms { automaton, terms })
    }

    /// Number of terms.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Every listed term that occurs in `search` as whole words.
    pub fn find(&self, search: &str) -> Vec<TermMatch> {
        let bytes = search.as_bytes();
        let is_word = |i: usize| bytes.get(i).is_some_and(|b| b.is_ascii_alphanumeric());
        let mut found: Vec<TermMatch> = Vec::new();
        for m in self.automaton.find_overlapping_iter(search) {
            let before_ok = m.start() == 0 || !is_word(m.start() - 1);
            if !before_ok || is_word(m.end()) {
                continue;
            }
            let (term, category) = &self.terms[m.pattern().as_usize()];
            if !found
                .iter()
                .any(|f| f.term == *term && f.category == *category)
            {
                found.push(TermMatch {
                    term: term.clone(),
                    category: *category,
                });
            }
        }
        found
    }
}

// ---------------------------------------------------------------------------------------
// The classifier

/// What the lists say about one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classification {
    /// Every category that matched, by any list.
    pub categories: CategorySet,
    /// The categories that matched only because of search terms.
    pub search_categories: CategorySet,
    /// The search typed, when the URL is a search-engine query.
    pub search: Option<String>,
    /// The listed search terms found in it.
    pub terms: Vec<TermMatch>,
    /// Categories that matched a TLS tunnel only because the host has URL-level entries
    /// in them somewhere (see [`CompiledLists::classify_tunnel`]).
    pub whole_host: CategorySet,
}

/// All compiled lists of one policy: the value a reload swaps in whole.
pub struct CompiledLists {
    /// Domains and IP addresses.
    pub domains: DomainIndex,
    /// Host-and-path prefixes.
    pub urls: UrlPrefixes,
    /// Hashed host-and-path entries.
    pub hashes: UrlHashes,
    /// Regular expressions over the URL.
    pub expressions: Option<Expressions>,
    /// Search terms.
    pub terms: Option<SearchTerms>,
}

impl CompiledLists {
    /// Lists with nothing in them.
    pub fn empty() -> CompiledLists {
        CompiledLists {
            domains: DomainIndex::empty(),
            urls: UrlPrefixes::default(),
            hashes: UrlHashes::default(),
            expressions: None,
            terms: None,
        }
    }

    /// Classifies a TLS tunnel's target, whose path cannot be seen: as [`classify`]
    /// (the host and `/`), plus the categories in `whole_host` that have a URL-prefix
    /// entry anywhere on the host. For `illegal` categories this blocks the whole host
    /// over HTTPS (the path-level entries of the IWF list would otherwise never match an
    /// HTTPS site); `whole_host` says which categories take that rule.
    ///
    /// [`classify`]: CompiledLists::classify
    pub fn classify_tunnel(&self, target: &Target, whole_host: CategorySet) -> Classification {
        let mut classification = self.classify(target);
        let extra = CategorySet::from_bits(self.urls.host_bits(&target.host))
            .intersection(whole_host)
            .difference(classification.categories);
        classification.categories = classification.categories.union(extra);
        classification.whole_host = extra;
        classification
    }

    /// Classifies a request target against every list.
    pub fn classify(&self, target: &Target) -> Classification {
        let mut bits = self.domains.lookup(&target.host);
        let needs_path =
            !self.urls.is_empty() || !self.hashes.is_empty() || self.expressions.is_some();
        if needs_path {
            let path = normalise_path(&target.path);
            bits |= self.urls.lookup(&target.host, &path);
            bits |= self
                .hashes
                .lookup(&target.host, &path, target.query.as_deref());
            if let Some(expressions) = &self.expressions {
                let query_len = target.query.as_ref().map_or(0, |q| q.len() + 1);
                let mut url = String::with_capacity(64 + path.len() + query_len);
                target.host.push_to(&mut url);
                url.push_str(&path);
                if let Some(q) = &target.query {
                    url.push('?');
                    let start = url.len();
                    url.push_str(q);
                    url[start..].make_ascii_lowercase();
                }
                bits |= expressions.lookup(&url);
            }
        }
        let mut classification = Classification {
            categories: CategorySet::from_bits(bits),
            ..Classification::default()
        };
        if let Some(terms) = &self.terms {
            if let Some(search) = search_query(&target.host, &target.path, target.query.as_deref())
            {
                let found = terms.find(&search);
                let search_bits: CategorySet = found.iter().map(|m| m.category).collect();
                classification.search_categories =
                    search_bits.difference(classification.categories);
                classification.categories = classification.categories.union(search_bits);
                classification.terms = found;
                classification.search = Some(search);
            }
        }
        classification
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Host {
        Host::parse(s).expect("test host parses")
    }

    fn index(entries: &[(&str, u64)]) -> DomainIndex {
        let mut b = DomainIndexBuilder::new();
        for (name, bits) in entries {
            b.insert(&host(name), *bits).expect("insert");
        }
        b.build().expect("build")
    }

    #[test]
    fn domain_lookup_table() {
        let idx = index(&[
            ("example.com", 1),
            ("ads.example.com", 2),
            ("ample.com", 4),
            ("co.uk", 8),
            ("example.com", 16), // duplicate entry in another category: OR-ed
            ("10.0.0.1", 32),
            ("2001:db8::1", 64),
        ]);
        let rows: &[(&str, u64)] = &[
            ("example.com", 1 | 16),
            ("www.example.com", 1 | 16),
            ("a.b.c.example.com", 1 | 16),
            ("ads.example.com", 1 | 2 | 16),
            ("x.ads.example.com", 1 | 2 | 16),
            ("badexample.com", 0), // not a label boundary
            ("ample.com", 4),
            ("sample.com", 0),
            ("example.co", 0),
            ("com", 0),
            ("bbc.co.uk", 8),
            ("10.0.0.1", 32),
            ("10.0.0.2", 0),
            ("[2001:db8::1]", 64),
            ("0x0a000001", 32), // hex IPv4 literal normalises to 10.0.0.1
        ];
        for (input, want) in rows {
            assert_eq!(idx.lookup(&host(input)), *want, "lookup {input}");
        }
    }

    #[test]
    fn index_round_trips_through_bytes() {
        let idx = index(&[("example.com", 1), ("10.0.0.1", 2), ("::1", 4)]);
        let bytes = idx.to_bytes(42);
        assert_eq!(DomainIndex::fingerprint_of(&bytes), Some(42));
        let back = DomainIndex::from_bytes(&bytes).expect("reads back");
        assert_eq!(back.lookup(&host("www.example.com")), 1);
        assert_eq!(back.lookup(&host("10.0.0.1")), 2);
        assert_eq!(back.lookup(&host("[::1]")), 4);
        assert_eq!(back.len(), 3);
        assert!(DomainIndex::from_bytes(b"nonsense").is_err());
        // Every truncation is refused; every single-byte corruption is refused or safe.
        for cut in 0..bytes.len() {
            assert!(
                DomainIndex::from_bytes(&bytes[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        for i in 8..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0xff;
            if let Ok(idx) = DomainIndex::from_bytes(&damaged) {
                idx.lookup(&host("www.example.com"));
                idx.lookup(&host("other.example.org"));
            }
        }
    }

    #[test]
    fn url_prefixes_match_host_suffix_and_path_prefix() {
        let mut urls = UrlPrefixes::default();
        urls.insert(&host("bbc.co.uk"), "/bitesize", 1);
        urls.insert(&host("example.com"), "/forum/", 2);
        let rows: &[(&str, &str, u64)] = &[
            ("bbc.co.uk", "/bitesize/maths", 1),
            ("www.bbc.co.uk", "/bitesize", 1),
            ("bbc.co.uk", "/news", 0),
            ("example.com", "/forum/thread/1", 2),
            ("example.com", "/forum", 0),
            ("example.com", &normalise_path("/FORUM/%74hread"), 2),
        ];
        for (h, p, want) in rows {
            assert_eq!(urls.lookup(&host(h), p), *want, "{h}{p}");
        }
    }

    #[test]
    fn a_tunnel_matches_url_entries_anywhere_on_its_host_for_the_chosen_categories() {
        let mut lists = CompiledLists::empty();
        lists.urls.insert(&host("mixed.example"), "/listed/", 0b01);
        lists.urls.insert(&host("cdn.example"), "/a/", 0b10);
        let whole_host = CategorySet::from_bits(0b01);
        // (tunnel host, categories matched, of which by the whole-host rule)
        let rows: &[(&str, u64, u64)] = &[
            ("mixed.example", 0b01, 0b01),
            ("img.mixed.example", 0b01, 0b01), // entries cover subdomains
            ("example", 0, 0),                 // not a parent's
            ("other.example", 0, 0),
            ("cdn.example", 0, 0), // a category not chosen stays per URL
        ];
        for (h, want, by_host) in rows {
            let target = Target::from_authority(&format!("{h}:443")).expect("target");
            let c = lists.classify_tunnel(&target, whole_host);
            assert_eq!(c.categories.bits(), *want, "{h}");
            assert_eq!(c.whole_host.bits(), *by_host, "{h}");
            // Plain classification of the same target is per URL, as before.
            assert_eq!(lists.classify(&target).categories.bits(), 0, "{h}");
        }
        assert_eq!(lists.urls.host_bits(&host("a.b.mixed.example")), 0b01);
    }

    #[test]
    fn normalise_path_table() {
        let rows = [
            ("/Foo/Bar", "/foo/bar"),
            ("/a%2Db", "/a-b"),
            ("/a%2fb", "/a%2Fb"), // reserved stays encoded
            ("/%7Euser", "/~user"),
            ("/100%", "/100%"),
            ("/%zz", "/%zz"),
            ("/x%4", "/x%4"),
        ];
        for (input, want) in rows {
            assert_eq!(normalise_path(input), want, "{input}");
        }
    }

    #[test]
    fn hashed_urls_match_prefixes() {
        let mut hashes = UrlHashes::default();
        hashes.insert(UrlHashes::digest("bad.example/dir/"), 1);
        hashes.insert(UrlHashes::digest("img.example/a.jpg"), 2);
        assert_eq!(
            hashes.lookup(&host("bad.example"), "/dir/page.html", None),
            1
        );
        assert_eq!(hashes.lookup(&host("www.bad.example"), "/dir/x", None), 1);
        assert_eq!(hashes.lookup(&host("bad.example"), "/other", None), 0);
        assert_eq!(
            hashes.lookup(&host("img.example"), "/a.jpg", Some("x=1")),
            2
        );
    }

    #[test]
    fn search_query_extraction() {
        let rows: &[(&str, &str, Option<&str>, Option<&str>)] = &[
            (
                "www.google.co.uk",
                "/search",
                Some("q=how+to%20Self+Harm&hl=en"),
                Some("how to self harm"),
            ),
            (
                "www.bing.com",
                "/search",
                Some("form=x&q=Hello"),
                Some("hello"),
            ),
            (
                "www.youtube.com",
                "/results",
                Some("search_query=cats"),
                Some("cats"),
            ),
            ("search.yahoo.com", "/search", Some("p=x"), Some("x")),
            ("duckduckgo.com", "/", Some("q=a++b"), Some("a b")),
            ("www.google.com", "/maps", Some("q=x"), None),
            ("example.com", "/search", Some("q=x"), None),
            ("www.google.com", "/search", Some("q="), None),
            ("www.google.com", "/search", None, None),
            // An escape at the very end is decoded too (the hand-written decoder missed it).
            (
                "www.google.com",
                "/search",
                Some("q=self%20harm%21"),
                Some("self harm!"),
            ),
            // A broken escape stays as typed.
            (
                "www.google.com",
                "/search",
                Some("q=100%+sure%zz"),
                Some("100% sure%zz"),
            ),
            // The parameter's name may be escaped as well.
            ("www.google.com", "/search", Some("%71=bets"), Some("bets")),
        ];
        for (h, p, q, want) in rows {
            assert_eq!(
                search_query(&host(h), p, *q).as_deref(),
                *want,
                "{h}{p}?{q:?}"
            );
        }
    }

    #[test]
    fn search_terms_match_whole_words() {
        let c0 = CategoryId::new(0).expect("id");
        let c1 = CategoryId::new(1).expect("id");
        let terms = SearchTerms::new(vec![
            ("self harm".into(), c0),
            ("anal".into(), c1),
            ("Kill  Myself".into(), c0),
        ])
        .expect("compiles");
        let rows: &[(&str, &[&str])] = &[
            ("how to self harm", &["self harm"]),
            ("self harming", &[]),
            ("data analysis", &[]),
            ("anal", &["anal"]),
            ("i want to kill myself", &["kill myself"]),
            ("", &[]),
        ];
        for (search, want) in rows {
            let got: Vec<String> = terms.find(search).into_iter().map(|m| m.term).collect();
            assert_eq!(got, *want, "{search}");
        }
    }

    #[test]
    fn expressions_match_the_url() {
        let ex = Expressions::new(&[(r"(^|[-/_.?=&])(porn|xxx)([-/_.?=&]|$)".into(), 1)])
            .expect("compiles");
        assert_eq!(ex.lookup("example.com/xxx/videos"), 1);
        assert_eq!(ex.lookup("essex.example.com/sussex"), 0);
        assert!(Expressions::new(&[("(unclosed".into(), 1)]).is_err());
    }

    #[test]
    fn expressions_see_host_path_and_lowercased_query() {
        let lists = CompiledLists {
            expressions: Some(
                Expressions::new(&[
                    (r"^10\.0\.0\.1/a/b\?q=xxx$".into(), 1),
                    (r"^www\.example\.com/PATH\?$".into(), 2),
                    (r"^www\.example\.com/PATH$".into(), 4),
                ])
                .expect("compiles"),
            ),
            ..CompiledLists::empty()
        };
        let rows = [
            ("http://10.0.0.1/a/b?Q=XxX", 1),
            ("http://10.0.0.1/a/b?q=xxx", 1),
            ("http://www.example.com/PATH?", 2),
            ("http://www.example.com/PATH", 4),
        ];
        for (url, want) in rows {
            let target = Target::parse(url).expect("test URL");
            assert_eq!(lists.classify(&target).categories.bits(), want, "{url}");
        }
    }

    #[test]
    fn suffixes_of_names_and_ips() {
        assert_eq!(suffixes("a.b.c").collect::<Vec<_>>(), ["a.b.c", "b.c", "c"]);
        assert_eq!(suffixes("10.0.0.1").collect::<Vec<_>>(), ["10.0.0.1"]);
        assert_eq!(suffixes("[::1]").collect::<Vec<_>>(), ["[::1]"]);
    }
}
