//! Reading category lists from disk and caching the compiled domain index.
//!
//! Lists live in `blocklists/<category>/` in the UT1 layout: `domains` (a domain and its
//! subdomains per line), `urls` (host+path prefixes), `urls.sha256` (hex SHA-256 of
//! `host/path`, for feeds distributed as hashes), `expressions` (regular expressions over
//! `host/path?query`) and `search_terms` (words and phrases matched in search-engine
//! queries). `#` starts a comment line.
//!
//! The domain index for millions of entries is the slow part to build, so it is cached
//! in one file keyed by a fingerprint of the source files (path, size, modification
//! time). A stale or damaged cache is rebuilt, never trusted. This is the I/O shell
//! around [`crate::core::classify`].

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::core::category::{CategoryId, CategorySet};
use crate::core::classify::{
    CompileError, CompiledLists, DomainIndex, DomainIndexBuilder, Expressions, SearchTerms,
    UrlHashes, UrlPrefixes,
};
use crate::core::config::{ConfigError, ConfigErrorKind};
use crate::core::host::Host;
use crate::core::policy::Policy;
use crate::core::site::SiteEntry;

/// Whether to use the compiled cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Use a fresh cache; rebuild and rewrite a stale or missing one.
    Use,
    /// Rebuild from text and rewrite the cache (`gatehouse lists compile`).
    Rebuild,
    /// Build from text; do not read or write the cache.
    Off,
}

/// A line of a list that was skipped, with where it is.
#[derive(Debug, Clone)]
pub struct ListWarning {
    /// File.
    pub file: PathBuf,
    /// 1-based line (0 when the warning is about the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Entry counts of one category.
#[derive(Debug, Clone, Default)]
pub struct CategoryCounts {
    /// Distinct domains and IP addresses.
    pub domains: u64,
    /// URL prefixes.
    pub urls: u64,
    /// Hashed URLs.
    pub hashes: u64,
    /// Expressions.
    pub expressions: u64,
    /// Search terms.
    pub terms: u64,
}

/// What loading the lists found.
#[derive(Debug, Clone, Default)]
pub struct ListReport {
    /// Counts per category, in policy order.
    pub counts: Vec<CategoryCounts>,
    /// Skipped lines (at most [`MAX_WARNINGS`] kept; `skipped` counts them all).
    pub warnings: Vec<ListWarning>,
    /// Total skipped lines.
    pub skipped: u64,
    /// Category list directories that do not exist (the category matches nothing).
    pub missing_dirs: Vec<PathBuf>,
    /// Whether the domain index came from the cache.
    pub from_cache: bool,
    /// Why the cache could not be written, if it could not.
    pub cache_error: Option<String>,
    /// How long loading took.
    pub elapsed: Duration,
    /// Per category, in policy order: when its newest list file was last changed (Unix
    /// seconds; `None` with no file). A feed's update or an edit both move it, so it is
    /// how old each category's lists are.
    pub modified: Vec<Option<i64>>,
}

/// Warnings kept in a [`ListReport`]; the rest are only counted.
pub const MAX_WARNINGS: usize = 20;

impl ListReport {
    /// When category `id`'s newest list file was last changed (Unix seconds), if it
    /// has one.
    pub fn modified(&self, id: CategoryId) -> Option<i64> {
        self.modified.get(id.index()).copied().flatten()
    }

    fn warn(&mut self, file: &Path, line: usize, message: String) {
        self.skipped += 1;
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(ListWarning {
                file: file.to_path_buf(),
                line,
                message,
            });
        }
    }
}

/// Loads and compiles every category list of `policy`.
///
/// Errors (an expression that does not compile, an unreadable file) name file and line;
/// malformed domain lines are skipped with a warning, as bulk-imported lists carry a few.
pub fn load(
    policy: &Policy,
    cache: CacheMode,
) -> Result<(CompiledLists, ListReport), Vec<ConfigError>> {
    let started = Instant::now();
    let mut report = ListReport::default();
    let mut errors = Vec::new();
    let categories: Vec<(CategoryId, PathBuf)> = policy
        .categories()
        .map(|(id, def)| (id, def.list_dir.clone()))
        .collect();
    report.counts = vec![CategoryCounts::default(); categories.len()];

    report.missing_dirs = categories
        .iter()
        .filter(|(_, dir)| !dir.is_dir())
        .map(|(_, dir)| dir.clone())
        .collect();

    // Domains: from the cache when it matches the sources, else from text.
    let fingerprint = fingerprint(&categories);
    let mut domains = None;
    if cache == CacheMode::Use {
        if let Ok(file) = fs::File::open(&policy.lists_cache) {
            match DomainIndex::read(std::io::BufReader::new(file), Some(fingerprint)) {
                Ok(index) => {
                    domains = Some(index);
                    report.from_cache = true;
                }
                Err(CompileError::Stale) => {}
                Err(e) => report.warn(&policy.lists_cache, 0, format!("{e}; rebuilding")),
            }
        }
    }
    let mut urls = UrlPrefixes::default();
    let domains = match domains {
        Some(index) => index,
        None => {
            let mut builder = DomainIndexBuilder::new();
            for (id, dir) in &categories {
                let bits = CategorySet::single(*id).bits();
                for file in list_files(dir, "domains") {
                    match read_optional(&file) {
                        Ok(Some(text)) => {
                            add_domains(&mut builder, &file, &text, bits, &mut report)
                        }
                        Ok(None) => {}
                        Err(e) => errors.push(e),
                    }
                }
                // `urls` entries without a path are whole-domain entries.
                for file in list_files(dir, "urls") {
                    match read_optional(&file) {
                        Ok(Some(text)) => {
                            for (line_no, line) in entries(&text) {
                                if let Ok(entry) = SiteEntry::parse(line) {
                                    if entry.path.is_none() {
                                        if let Err(e) = builder.insert(&entry.host, bits) {
                                            report.warn(&file, line_no, e.to_string());
                                        }
                                    }
                                }
                            }
                        }
                        Ok(None) => {}
                        Err(e) => errors.push(e),
                    }
                }
            }
            let index = builder.build().map_err(|e| {
                vec![ConfigError {
                    file: policy.lists_dir.clone(),
                    line: None,
                    kind: ConfigErrorKind::List(e.to_string()),
                }]
            })?;
            if cache != CacheMode::Off {
                if let Err(e) = write_atomically(&policy.lists_cache, &index.to_bytes(fingerprint))
                {
                    report.cache_error = Some(format!(
                        "cannot write {}: {e}",
                        policy.lists_cache.display()
                    ));
                }
            }
            index
        }
    };
    let per_bit = domains.counts_per_bit();

    // The small lists are always read from text: they are quick, and reading them keeps
    // their line numbers for errors.
    let mut hashes = UrlHashes::default();
    let mut patterns: Vec<(String, u64)> = Vec::new();
    let mut terms: Vec<(String, CategoryId)> = Vec::new();
    for (i, (id, dir)) in categories.iter().enumerate() {
        let bits = CategorySet::single(*id).bits();
        report.counts[i].domains = per_bit[id.index()];

        for file in list_files(dir, "urls") {
            match read_optional(&file) {
                Ok(Some(text)) => {
                    for (line_no, line) in entries(&text) {
                        match SiteEntry::parse(line) {
                            Ok(SiteEntry {
                                host,
                                path: Some(path),
                                ..
                            }) => {
                                urls.insert(&host, &path, bits);
                                report.counts[i].urls += 1;
                            }
                            Ok(_) => {}
                            Err(why) => report.warn(&file, line_no, format!("{line:?}: {why}")),
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }

        let file = dir.join("urls.sha256");
        match read_optional(&file) {
            Ok(Some(text)) => {
                for (line_no, line) in entries(&text) {
                    match parse_digest(line) {
                        Some(digest) => {
                            hashes.insert(digest, bits);
                            report.counts[i].hashes += 1;
                        }
                        None => report.warn(
                            &file,
                            line_no,
                            format!("{line:?} is not a hex SHA-256 digest"),
                        ),
                    }
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }

        let file = dir.join("expressions");
        match read_optional(&file) {
            Ok(Some(text)) => {
                for (line_no, line) in entries(&text) {
                    match Expressions::new(&[(line.to_string(), bits)]) {
                        Ok(_) => {
                            patterns.push((line.to_string(), bits));
                            report.counts[i].expressions += 1;
                        }
                        Err(e) => errors.push(ConfigError {
                            file: file.clone(),
                            line: Some(line_no),
                            kind: ConfigErrorKind::List(e.to_string()),
                        }),
                    }
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }

        let file = dir.join("search_terms");
        match read_optional(&file) {
            Ok(Some(text)) => {
                for (_, line) in entries(&text) {
                    terms.push((line.to_string(), *id));
                    report.counts[i].terms += 1;
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    let list_error = |e: crate::core::classify::CompileError| ConfigError {
        file: policy.lists_dir.clone(),
        line: None,
        kind: ConfigErrorKind::List(e.to_string()),
    };
    let expressions = if patterns.is_empty() {
        None
    } else {
        match Expressions::new(&patterns) {
            Ok(e) => Some(e),
            Err(e) => {
                errors.push(list_error(e));
                None
            }
        }
    };
    let terms = if terms.is_empty() {
        None
    } else {
        match SearchTerms::new(terms) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(list_error(e));
                None
            }
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    report.modified = categories
        .iter()
        .map(|(_, dir)| newest_change(dir))
        .collect();
    report.elapsed = started.elapsed();
    Ok((
        CompiledLists {
            domains,
            urls,
            hashes,
            expressions,
            terms,
        },
        report,
    ))
}

/// Non-comment, non-blank lines, trimmed, with their 1-based numbers.
fn entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.trim();
        (!line.is_empty() && !line.starts_with('#')).then_some((i + 1, line))
    })
}

/// Adds a `domains` file. Plain lowercase names (nearly every line of a real list) take a
/// fast path; anything else goes through full host normalisation.
fn add_domains(
    builder: &mut DomainIndexBuilder,
    file: &Path,
    text: &str,
    bits: u64,
    report: &mut ListReport,
) {
    for (line_no, line) in entries(text) {
        let entry = line.strip_prefix("*.").unwrap_or(line);
        let entry = entry.strip_prefix('.').unwrap_or(entry);
        let result = if crate::core::host::is_plain_name(entry) {
            builder.insert_name(entry, bits).map_err(|e| e.to_string())
        } else {
            match Host::parse(entry) {
                Ok(host) => builder.insert(&host, bits).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        if let Err(why) = result {
            report.warn(file, line_no, format!("{entry:?}: {why}"));
        }
    }
}

fn parse_digest(s: &str) -> Option<[u8; 32]> {
    let s = s.split_whitespace().next()?;
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// A category's files of one kind: `base` itself (the curated or hand-kept list) and
/// each `base.<source>` that `gatehouse lists import` writes (`domains.ut1`, …), sorted
/// by name. `urls.sha256` is a list of another kind, not a source of `urls`. A file that
/// does not exist is not listed; `base` is listed even then, so that its absence is
/// fingerprinted.
pub fn list_files(dir: &Path, base: &str) -> Vec<PathBuf> {
    let mut files = vec![dir.join(base)];
    let prefix = format!("{base}.");
    if let Ok(entries) = fs::read_dir(dir) {
        let mut extra: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let source = name.strip_prefix(&prefix)?;
                (is_source_name(source) && source != "sha256").then(|| e.path())
            })
            .collect();
        extra.sort();
        files.extend(extra);
    }
    files
}

/// The list files a category's directory holds: `domains` and `urls` with each import's
/// own (`domains.ut1`, …), `urls.sha256`, `expressions` and `search_terms`; only those
/// that exist.
pub fn category_files(dir: &Path) -> Vec<PathBuf> {
    ["domains", "urls"]
        .into_iter()
        .flat_map(|k| list_files(dir, k))
        .chain(
            ["urls.sha256", "expressions", "search_terms"]
                .into_iter()
                .map(|k| dir.join(k)),
        )
        .filter(|f| f.is_file())
        .collect()
}

/// When the newest of a category's list files was last changed (Unix seconds).
fn newest_change(dir: &Path) -> Option<i64> {
    category_files(dir)
        .iter()
        .filter_map(|f| fs::metadata(f).ok()?.modified().ok())
        .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .max()
}

/// A name an import may give its files: lowercase letters, digits, `-` and `_`.
pub fn is_source_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A list file's bytes as text. Old lists are sometimes Latin-1: stray bytes become
/// U+FFFD, and their lines are then skipped as malformed.
pub fn text_of(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn read_optional(file: &Path) -> Result<Option<String>, ConfigError> {
    match fs::read(file) {
        Ok(bytes) => Ok(Some(text_of(bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError {
            file: file.to_path_buf(),
            line: None,
            kind: ConfigErrorKind::Io(e.to_string()),
        }),
    }
}

/// A fingerprint of every file the domain index is built from: path, size and mtime.
/// Any edit, replacement or rename changes it.
fn fingerprint(categories: &[(CategoryId, PathBuf)]) -> u64 {
    let mut h = Sha256::new();
    h.update(b"gatehouse domain index v1\n");
    for (id, dir) in categories {
        // By the directory's canonical path (a category may have no `urls` file), so the
        // same policy named by another relative path finds the same cache.
        let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        for file in ["domains", "urls"]
            .into_iter()
            .flat_map(|name| list_files(&dir, name))
        {
            h.update(format!("{} {}\n", id.index(), file.display()).as_bytes());
            if let Ok(meta) = fs::metadata(&file) {
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                h.update(format!("{} {}\n", meta.len(), mtime).as_bytes());
            }
        }
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`, so that
/// a reader sees the old file or the new one, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("gatehouse"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(parse_digest(hex).map(|d| d[0]), Some(0xe3));
        assert_eq!(parse_digest("abc"), None);
        assert_eq!(parse_digest(&hex.replace('e', "g")), None);
    }
}
