//! `gatehouse lists import`: a list in one of the formats schools receive (a UT1 tree or
//! tarball, a hosts file, a plain list, e2guardian's banned site and URL lists) read into
//! the policy's own lists, line by line through [`crate::core::feed`].
//!
//! An import writes, for each category it fills, `<lists>/<category>/domains.<name>` and
//! `urls.<name>` (`<name>` is the format unless `--name` says otherwise), each whole and
//! atomically, sorted and without duplicates. It never touches a category's own
//! `domains` and `urls` (the curated list and its canaries), and importing the same
//! source again replaces what it wrote before, so a feed's removals take effect. The
//! loader reads every `domains.*` and `urls.*` beside the category's own files.
//!
//! Nothing is written unless the whole source could be read and every category it maps to
//! exists in the policy; a bad line is counted and skipped, never fatal.

use std::collections::BTreeMap;

use rustc_hash::FxHashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::core::feed::{self, Entry, Format, Skip};

/// Lines shown per skip reason.
pub const SAMPLES: usize = 3;

/// What to import and where.
#[derive(Debug, Clone)]
pub struct Request {
    /// The source's format.
    pub format: Format,
    /// A file, or for UT1 a directory or `.tar.gz`.
    pub source: PathBuf,
    /// For the single-list formats: the category the entries go to.
    pub category: Option<String>,
    /// For UT1: UT1 category → Gatehouse category (the map file's contents).
    pub map: BTreeMap<String, String>,
    /// The map was the technician's own (`--map`): a category it names that the policy
    /// lacks is an error. The built-in map's such entries are passed over and reported.
    pub own_map: bool,
    /// Suffix of the files written (`domains.<name>`).
    pub name: String,
    /// The categories the policy defines, with their list directories.
    pub categories: BTreeMap<String, PathBuf>,
    /// Count and report only; write nothing.
    pub dry_run: bool,
    /// What the files' header says they came from, when not `lists import` of `source`
    /// (a feed update names its URL: its `source` is a temporary download).
    pub origin: Option<String>,
}

/// Why an import could not be done; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The source could not be read.
    #[error("{path}: {error}")]
    Read {
        /// What.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The request does not fit the format or the policy.
    #[error("{0}")]
    Usage(String),
    /// A file could not be written.
    #[error("cannot write {path}: {error}")]
    Write {
        /// What.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

/// Entries gathered for one category.
#[derive(Debug, Default)]
pub struct Gathered {
    // Fx: a list of millions of names spends more time hashing than reading with the
    // standard library's DoS-resistant hasher, and these names are the school's own feed.
    domains: FxHashSet<String>,
    urls: FxHashSet<String>,
}

/// A skipped line shown as an example: file, line number, text (cut at 120 characters).
pub type Sample = (String, usize, String);

/// What an import did.
#[derive(Debug, Default)]
pub struct Report {
    /// Lines read.
    pub lines: u64,
    /// Per Gatehouse category: domains and URL prefixes written, and the files.
    pub written: BTreeMap<String, (usize, usize, Vec<PathBuf>)>,
    /// Per skip reason: how many, and the first few as (file, line, text).
    pub skipped: BTreeMap<Skip, (u64, Vec<Sample>)>,
    /// UT1 categories in the source that the map does not name, with their lines.
    pub unmapped: BTreeMap<String, u64>,
    /// The built-in map's entries passed over because the policy lacks their category.
    pub not_in_policy: BTreeMap<String, String>,
}

impl Report {
    fn skip(&mut self, reason: Skip, file: &str, line_no: usize, line: &str) {
        let (count, samples) = self.skipped.entry(reason).or_default();
        *count += 1;
        if samples.len() < SAMPLES && reason != Skip::Comment {
            let mut text: String = line.trim().chars().take(120).collect();
            if text.len() < line.trim().len() {
                text.push('…');
            }
            samples.push((file.to_string(), line_no, text));
        }
    }
}

/// Reads the source, writes the lists (unless a dry run), and reports.
pub fn run(request: &Request) -> Result<Report, ImportError> {
    if !crate::lists::is_source_name(&request.name) || request.name == "sha256" {
        return Err(ImportError::Usage(format!(
            "--name {:?}: use lowercase letters, digits, '-' and '_' (and not \"sha256\")",
            request.name
        )));
    }
    let mut report = Report::default();
    let mut gathered: BTreeMap<String, Gathered> = BTreeMap::new();
    match request.format {
        Format::Ut1 => {
            if request.category.is_some() {
                return Err(ImportError::Usage(
                    "a UT1 source holds many categories: map them with --map, not --category"
                        .into(),
                ));
            }
            let mut map = request.map.clone();
            for (ut1, target) in &request.map {
                if request.own_map {
                    check_category(request, target, "the UT1 map")?;
                } else if !request.categories.contains_key(target) {
                    map.remove(ut1);
                    report.not_in_policy.insert(ut1.clone(), target.clone());
                }
            }
            read_ut1(request, &map, &mut gathered, &mut report)?;
        }
        _ => {
            let Some(category) = &request.category else {
                return Err(ImportError::Usage(format!(
                    "a {} source is one list: say which category it fills with --category",
                    request.format.as_str()
                )));
            };
            check_category(request, category, "--category")?;
            let text = read_text(&request.source)?;
            let label = request.source.display().to_string();
            let into = gathered.entry(category.clone()).or_default();
            gather(request.format, &label, &text, into, &mut report);
        }
    }
    for (category, entries) in gathered {
        let Some(dir) = request.categories.get(&category) else {
            continue;
        };
        let mut domains: Vec<String> = entries.domains.into_iter().collect();
        let mut urls: Vec<String> = entries.urls.into_iter().collect();
        domains.sort_unstable();
        urls.sort_unstable();
        let mut files = Vec::new();
        for (kind, list) in [("domains", &domains), ("urls", &urls)] {
            let path = dir.join(format!("{kind}.{}", request.name));
            if list.is_empty() && !path.exists() {
                continue;
            }
            if !request.dry_run {
                let mut text =
                    String::with_capacity(list.iter().map(|e| e.len() + 1).sum::<usize>() + 256);
                let origin = request.origin.clone().unwrap_or_else(|| {
                    format!(
                        "`gatehouse lists import --format {}` from {}",
                        request.format.as_str(),
                        request.source.display()
                    )
                });
                text.push_str(&format!(
                    "# Imported by {origin} on {}: {} entries.\n\
                     # Replaced whole by the next import of this source; keep your own entries in `{kind}`.\n",
                    chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
                    list.len()
                ));
                for e in list.iter() {
                    text.push_str(e);
                    text.push('\n');
                }
                crate::lists::write_atomically(&path, text.as_bytes()).map_err(|error| {
                    ImportError::Write {
                        path: path.clone(),
                        error,
                    }
                })?;
            }
            files.push(path);
        }
        report
            .written
            .insert(category, (domains.len(), urls.len(), files));
    }
    Ok(report)
}

fn check_category(request: &Request, category: &str, from: &str) -> Result<(), ImportError> {
    if request.categories.contains_key(category) {
        Ok(())
    } else {
        Err(ImportError::Usage(format!(
            "{from} names category {category:?}, which the policy does not define (defined: {})",
            request
                .categories
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// A file's text; Latin-1 and other stray bytes become U+FFFD, and their lines are
/// then skipped as invalid names.
fn read_text(path: &Path) -> Result<String, ImportError> {
    let bytes = std::fs::read(path).map_err(|error| ImportError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(crate::lists::text_of(bytes))
}

fn gather(format: Format, label: &str, text: &str, into: &mut Gathered, report: &mut Report) {
    // About one entry per 30 bytes in real feeds: grow once, not by doubling.
    into.domains.reserve(text.len() / 30);
    for (i, line) in text.lines().enumerate() {
        report.lines += 1;
        match feed::parse_line(format, line) {
            Ok(entries) => {
                for entry in entries {
                    let fresh = match entry {
                        Entry::Domain(d) => into.domains.insert(d),
                        Entry::Url(u) => into.urls.insert(u),
                    };
                    if !fresh {
                        report.skip(Skip::Duplicate, label, i + 1, line);
                    }
                }
            }
            Err(reason) => report.skip(reason, label, i + 1, line),
        }
    }
}

/// A UT1 source: a directory holding the category directories (or a `blacklists/`
/// directory that does), or the `.tar.gz` UT1 publishes.
fn read_ut1(
    request: &Request,
    map: &BTreeMap<String, String>,
    gathered: &mut BTreeMap<String, Gathered>,
    report: &mut Report,
) -> Result<(), ImportError> {
    let source = &request.source;
    let mut take = |category: &str, file: &str, label: &str, text: &str| {
        if file != "domains" && file != "urls" {
            return;
        }
        match map.get(category) {
            Some(target) => {
                let into = gathered.entry(target.clone()).or_default();
                gather(Format::Ut1, label, text, into, report);
            }
            None => {
                *report.unmapped.entry(category.to_string()).or_default() +=
                    text.lines().count() as u64;
            }
        }
    };
    if source.is_dir() {
        let root = if source.join("blacklists").is_dir() {
            source.join("blacklists")
        } else {
            source.clone()
        };
        let read_dir = |dir: &Path| {
            std::fs::read_dir(dir).map_err(|error| ImportError::Read {
                path: dir.to_path_buf(),
                error,
            })
        };
        let mut dirs: Vec<PathBuf> = read_dir(&root)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            // UT1 links some old names to new ones: each list is read once, by its own name.
            .filter(|p| p.is_dir() && !p.is_symlink())
            .collect();
        dirs.sort();
        for dir in dirs {
            let Some(category) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string)
            else {
                continue;
            };
            for file in ["domains", "urls"] {
                let path = dir.join(file);
                if path.is_file() {
                    let text = read_text(&path)?;
                    take(&category, file, &path.display().to_string(), &text);
                }
            }
        }
        return Ok(());
    }
    let file = std::fs::File::open(source).map_err(|error| ImportError::Read {
        path: source.clone(),
        error,
    })?;
    let corrupt = |error: std::io::Error| ImportError::Read {
        path: source.clone(),
        error: std::io::Error::new(
            error.kind(),
            format!("not a readable UT1 .tar.gz ({error}); nothing was imported"),
        ),
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    // Read the whole archive before anything is written: a corrupt one imports nothing.
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(corrupt)?.into_owned();
        let mut parts: Vec<String> = path
            .components()
            .filter_map(|c| c.as_os_str().to_str().map(str::to_string))
            .collect();
        let (Some(file), Some(category)) = (parts.pop(), parts.pop()) else {
            continue;
        };
        if file != "domains" && file != "urls" {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(corrupt)?;
        let text = crate::lists::text_of(bytes);
        let label = format!("{}:{}", source.display(), path.display());
        take(&category, &file, &label, &text);
    }
    Ok(())
}
