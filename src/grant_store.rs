//! Editing the grants file: what `gatehouse grant add|revoke` and the admin API's
//! `POST`/`DELETE /api/grants` do.
//!
//! Every edit runs under an exclusive lock on `grants.toml.lock`, archives grants that
//! have expired, validates the whole resulting file against the policy and its lists,
//! and only then replaces the file atomically (temporary file and rename): concurrent
//! edits queue and none is lost, and the file is never half-written or invalid. The
//! running proxy sees the rename through its watcher.

use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::core::config::{ConfigErrors, Source};
use crate::snapshot::Snapshot;

/// Why an edit was refused, or the file could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be read, locked, parsed or written.
    #[error(transparent)]
    Io(#[from] FileError),
    /// A revocation must say who revokes and why: the audit trail keeps both.
    #[error("a revocation needs who (--by) and why (--reason)")]
    RevocationUnexplained,
    /// No grant with this id is in force (it may have expired or been revoked).
    #[error("no grant {0:?} in force")]
    NoSuchGrant(String),
    /// The grants file holds `grant` or `archived` as something other than an array of
    /// tables: the file is at fault, not the request; fix it by hand.
    #[error("the grants file's `{0}` must be [[{0}]] tables")]
    Shape(&'static str),
    /// The resulting file would not validate; nothing was changed.
    #[error("refused: the grants file would not be valid; nothing was changed\n{0}")]
    Invalid(ConfigErrors),
    /// A lesson override that may not be made (a locked or illegal category, too long,
    /// an unknown classroom, no reason, …); nothing was changed.
    #[error("refused: {0}")]
    Lesson(#[from] crate::core::grants::GrantError),
    /// A teacher acting for a classroom or class that is not theirs, or ending another
    /// teacher's override; nothing was changed.
    #[error("refused: {0}")]
    NotYours(String),
    /// A request naming a group, category or effect the policy does not have.
    #[error("refused: {0}")]
    Unknown(String),
    /// The etcd grants store (`[grants] store = "etcd"`) could not be read or written;
    /// nothing was changed.
    #[error(transparent)]
    Etcd(#[from] crate::etcd_grants::EtcdError),
    /// `grant import` with the grants in the file store: there is nowhere to move them.
    #[error("the policy keeps grants in the file {0}; set [grants] store = \"etcd\" to move them into etcd")]
    NotEtcd(PathBuf),
    /// A grant in the file has the id of a different grant already in the store;
    /// nothing was changed.
    #[error("refused: {id} is already in the store as another grant (the store's: {stored:?}); nothing was changed")]
    IdTaken {
        /// The id.
        id: String,
        /// The store's grant, as its own grants file.
        stored: String,
    },
}

/// What went wrong with the grants file or its lock file, and which file.
///
/// The message already says why (it ends with the underlying error), and that error is
/// kept as a field, not as `source()`: the admin API sends the message alone, and an
/// error chain printed by the CLI would otherwise say the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The lock file could not be opened (or created).
    #[error("opening {}: {error}", path.display())]
    OpenLock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The lock could not be taken.
    #[error("locking {}: {error}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The grants file exists but could not be read.
    #[error("reading {}: {error}", path.display())]
    Read {
        /// The grants file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The edited grants file could not be written; the old one is still in place.
    #[error("writing {}: {error}", path.display())]
    Write {
        /// The grants file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The grants file is not TOML, so it cannot be edited.
    #[error("{} is not valid TOML: {error}", path.display())]
    Syntax {
        /// The grants file.
        path: PathBuf,
        /// Where and why (boxed: it is large, and every `Result` here would carry it).
        error: Box<toml_edit::TomlError>,
    },
    /// The grants file is TOML but not a grants file (unknown or missing fields).
    #[error("{} is not a valid grants file: {error}", path.display())]
    Format {
        /// The grants file.
        path: PathBuf,
        /// Where and why (boxed, as for `Syntax`).
        error: Box<toml::de::Error>,
    },
}

/// Where a grant stands, as `list` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantState {
    /// In force now.
    Active,
    /// Starts later.
    Future,
    /// Ran out (archived as expired, or past its expiry and not yet archived).
    Expired,
    /// Revoked by a technician (archived with who and why).
    Revoked,
}

impl GrantState {
    /// The word used in listings and in the JSON: `active`, `future`, `expired`, `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Active => "active",
            GrantState::Future => "future",
            GrantState::Expired => "expired",
            GrantState::Revoked => "revoked",
        }
    }
}

/// One grant of the file (in force or archived) as `list` reports it: its fields as
/// written, its state and its time left. Serialises to the objects of `GET /api/grants`
/// and `gatehouse grant list --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GrantRow {
    /// Identifier (`g-12`).
    pub id: String,
    /// `ticket` (a technician's) or `lesson` (a teacher's lesson override).
    pub kind: &'static str,
    /// A lesson override's `allow` or `block`; `allow` for a ticketed grant.
    pub effect: &'static str,
    /// Where it stands now.
    pub state: GrantState,
    /// Helpdesk ticket; for a lesson override, `lesson:<id>` (as the decision log has it).
    pub ticket: String,
    /// A lesson override's classrooms.
    pub classrooms: Vec<String>,
    /// Technician who issued it.
    pub issued_by: String,
    /// Why it was issued.
    pub reason: String,
    /// Groups it covers.
    pub groups: Vec<String>,
    /// Users it covers.
    pub users: Vec<String>,
    /// Client networks it covers.
    pub subnets: Vec<String>,
    /// Sites and URL prefixes it opens.
    pub sites: Vec<String>,
    /// Categories it opens.
    pub categories: Vec<String>,
    /// Start as written (RFC 3339), if the file gives one.
    pub starts: Option<String>,
    /// Expiry as written (RFC 3339).
    pub expires: String,
    /// For an active grant: `2d 3h 15m left`.
    pub time_left: Option<String>,
    /// For a revoked grant: who revoked it.
    pub revoked_by: Option<String>,
    /// For an archived grant: why it was revoked, or `expired`.
    pub revoke_reason: Option<String>,
}

/// A grant to add, as the CLI and the API take it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    /// Helpdesk ticket.
    pub ticket: String,
    /// Technician issuing it (the API fills in the token's owner).
    #[serde(default)]
    pub issued_by: String,
    /// Why.
    pub reason: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Users.
    #[serde(default)]
    pub users: Vec<String>,
    /// Client networks.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Sites and URL prefixes.
    #[serde(default)]
    pub sites: Vec<String>,
    /// Categories.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Start (default now).
    #[serde(default)]
    pub starts: Option<DateTime<Utc>>,
    /// Expiry.
    pub expires: DateTime<Utc>,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn tables<'a>(
    doc: &'a mut toml_edit::DocumentMut,
    key: &'static str,
) -> Result<&'a mut toml_edit::ArrayOfTables, StoreError> {
    if !doc.contains_key(key) {
        doc.insert(
            key,
            toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()),
        );
    }
    doc[key]
        .as_array_of_tables_mut()
        .ok_or(StoreError::Shape(key))
}

/// Moves grants that have expired into the archive, so the file says what is in force.
fn archive_expired(doc: &mut toml_edit::DocumentMut, now: DateTime<Utc>) -> Result<(), StoreError> {
    let Some(grants) = doc
        .get_mut("grant")
        .and_then(|g| g.as_array_of_tables_mut())
    else {
        return Ok(());
    };
    let mut expired = Vec::new();
    let mut i = 0;
    while i < grants.len() {
        let ended = grants
            .get(i)
            .and_then(|t| t.get("expires"))
            .and_then(|v| v.as_str())
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .is_some_and(|t| t <= now);
        if ended {
            if let Some(t) = grants.get(i).cloned() {
                expired.push(t);
            }
            grants.remove(i);
        } else {
            i += 1;
        }
    }
    if !expired.is_empty() {
        let archive = tables(doc, "archived")?;
        for mut t in expired {
            t.insert("revoke_reason", toml_edit::value("expired"));
            archive.push(t);
        }
    }
    Ok(())
}

fn next_id(doc: &toml_edit::DocumentMut) -> String {
    let max = ["grant", "archived"]
        .iter()
        .filter_map(|k| doc.get(k).and_then(|g| g.as_array_of_tables()))
        .flat_map(|a| a.iter())
        .filter_map(|t| t.get("id").and_then(|v| v.as_str()))
        .filter_map(|id| id.strip_prefix("g-").and_then(|n| n.parse::<u64>().ok()))
        .max()
        .unwrap_or(0);
    format!("g-{}", max + 1)
}

fn string_array(items: &[String]) -> toml_edit::Item {
    let mut a = toml_edit::Array::new();
    for i in items {
        a.push(i.as_str());
    }
    toml_edit::value(a)
}

/// The grants file's text; a file not yet created has no grants.
fn read(path: &std::path::Path) -> Result<String, FileError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(error) => Err(FileError::Read {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// Runs `edit` on the grants file under the lock, validates, writes. Returns what
/// `edit` returned.
fn edit<T>(
    snap: &Snapshot,
    now: DateTime<Utc>,
    edit: impl FnMut(&mut toml_edit::DocumentMut) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if let crate::settings::GrantsStore::Etcd(etcd) = &snap.settings.grants_store {
        return edit_etcd(etcd, snap, now, edit);
    }
    let mut edit = edit;
    let path = snap.policy.grant_rules.file.clone();
    let lock_path = path.with_extension("toml.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|error| FileError::OpenLock {
            path: lock_path.clone(),
            error,
        })?;
    lock.lock().map_err(|error| FileError::Lock {
        path: lock_path.clone(),
        error,
    })?;
    let text = read(&path)?;
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|error| FileError::Syntax {
        path: path.clone(),
        error: Box::new(error),
    })?;
    archive_expired(&mut doc, now)?;
    let result = edit(&mut doc)?;
    let new_text = doc.to_string();
    let source = Source::new(&path, &new_text);
    crate::core::grants::compile_file(&new_text, &source, &snap.policy, &snap.lists, now)
        .map_err(StoreError::Invalid)?;
    crate::lists::write_atomically(&path, new_text.as_bytes()).map_err(|error| {
        FileError::Write {
            path: path.clone(),
            error,
        }
    })?;
    drop(lock);
    Ok(result)
}

/// How many times an etcd edit is tried when other nodes change the same keys.
const ETCD_ATTEMPTS: usize = 5;

/// [`edit`] for grants in etcd: the keys read as one grants file, edited and checked
/// as the file is, then each grant that changed written back as its own key in one
/// transaction that fails if another node changed any of them meanwhile (then read
/// and edit again). Only the grants that change are validated, each under its key's
/// name, so an error names the key and line.
fn edit_etcd<T>(
    etcd: &crate::settings::EtcdSettings,
    snap: &Snapshot,
    now: DateTime<Utc>,
    mut edit: impl FnMut(&mut toml_edit::DocumentMut) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    use crate::etcd_grants as store;
    let run = async {
        let mut client = store::connect(etcd).await?;
        for _ in 0..ETCD_ATTEMPTS {
            let entries = store::read(&mut client, etcd).await?;
            let text = entries.document(etcd);
            let path = PathBuf::from(format!("etcd:{}", etcd.prefix));
            let mut doc: toml_edit::DocumentMut =
                text.parse().map_err(|error| FileError::Syntax {
                    path: path.clone(),
                    error: Box::new(error),
                })?;
            // The keys as this node would write them, to tell what the edit changed.
            let before = per_key(&doc, etcd)?;
            archive_expired(&mut doc, now)?;
            let result = edit(&mut doc)?;
            let after = per_key(&doc, etcd)?;
            let mut wanted = std::collections::BTreeMap::new();
            let mut changed = std::collections::BTreeMap::new();
            for (key, value) in after {
                if before.get(&key) != Some(&value) {
                    changed.insert(key.clone(), value.clone());
                }
                // Unchanged keys keep their stored text, so `commit` leaves them be.
                let stored = entries
                    .keys
                    .get(&key)
                    .filter(|_| before.get(&key) == Some(&value))
                    .map(|(v, _)| v.clone());
                wanted.insert(key, stored.unwrap_or(value));
            }
            store::compile(&changed, etcd, &snap.policy, &snap.lists, now)
                .map_err(StoreError::Invalid)?;
            if store::commit(&mut client, etcd, &entries, &wanted).await? {
                return Ok(result);
            }
        }
        Err(store::EtcdError::Contended.into())
    };
    store::block_on(run).map_err(|error| FileError::Write {
        path: PathBuf::from(format!("etcd:{}", etcd.prefix)),
        error,
    })?
}

/// Each `[[grant]]` and `[[archived]]` table of `doc` as its own one-table grants file,
/// by the key it is stored under.
fn per_key(
    doc: &toml_edit::DocumentMut,
    etcd: &crate::settings::EtcdSettings,
) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
    let mut out = std::collections::BTreeMap::new();
    for (kind, key_of) in [
        (
            "grant",
            crate::etcd_grants::grant_key as fn(&crate::settings::EtcdSettings, &str) -> String,
        ),
        ("archived", crate::etcd_grants::archived_key),
    ] {
        let Some(item) = doc.get(kind) else { continue };
        let tables = item.as_array_of_tables().ok_or(StoreError::Shape(kind))?;
        for t in tables.iter() {
            let id = id_of(t, kind)?;
            let mut one = toml_edit::DocumentMut::new();
            let mut array = toml_edit::ArrayOfTables::new();
            array.push(bare(t));
            one.insert(kind, toml_edit::Item::ArrayOfTables(array));
            out.insert(key_of(etcd, id), one.to_string());
        }
    }
    Ok(out)
}

/// What [`import`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// Grants and archived grants written to the store, by id.
    pub added: Vec<String>,
    /// Ids the store already held exactly so (an import run again).
    pub already: Vec<String>,
}

/// Moves the grants and the archive of the grants file `file` into the etcd store, in
/// one transaction and keeping their ids, so a school going from one node to several
/// keeps its grants and their history. The file is checked against the policy first
/// (errors name its lines) and left as it is. A grant already in the store exactly so
/// is skipped, so an import can be run again; an id the store holds as another grant is
/// refused, and then nothing is written.
pub fn import(
    snap: &Snapshot,
    file: &std::path::Path,
    now: DateTime<Utc>,
) -> Result<Imported, StoreError> {
    let crate::settings::GrantsStore::Etcd(_) = &snap.settings.grants_store else {
        return Err(StoreError::NotEtcd(snap.policy.grant_rules.file.clone()));
    };
    let text = read(file)?;
    let source = Source::new(file, &text);
    crate::core::grants::compile_file(&text, &source, &snap.policy, &snap.lists, now)
        .map_err(StoreError::Invalid)?;
    let from: toml_edit::DocumentMut = text.parse().map_err(|error| FileError::Syntax {
        path: file.to_path_buf(),
        error: Box::new(error),
    })?;
    edit(snap, now, |doc| {
        let mut done = Imported::default();
        for kind in ["grant", "archived"] {
            let Some(item) = from.get(kind) else { continue };
            let incoming = item.as_array_of_tables().ok_or(StoreError::Shape(kind))?;
            for t in incoming.iter() {
                let id = id_of(t, kind)?.to_string();
                let table = bare(t);
                match stored_as(doc, &id) {
                    Some((stored_kind, stored)) => {
                        if stored_kind == kind && stored.to_string() == table.to_string() {
                            done.already.push(id);
                        } else {
                            return Err(StoreError::IdTaken {
                                id,
                                stored: format!("[[{stored_kind}]]\n{stored}"),
                            });
                        }
                    }
                    None => {
                        tables(doc, kind)?.push(table);
                        done.added.push(id);
                    }
                }
            }
        }
        Ok(done)
    })
}

/// The `[[grant]]` or `[[archived]]` table of `doc` with this id, and which it is.
fn stored_as(doc: &toml_edit::DocumentMut, id: &str) -> Option<(&'static str, toml_edit::Table)> {
    ["grant", "archived"].into_iter().find_map(|kind| {
        let t = doc
            .get(kind)?
            .as_array_of_tables()?
            .iter()
            .find(|t| id_of(t, kind).is_ok_and(|i| i == id))?;
        Some((kind, bare(t)))
    })
}

/// The id of a `[[grant]]` or `[[archived]]` table (`kind`); one without is the file's
/// fault.
fn id_of<'t>(t: &'t toml_edit::Table, kind: &'static str) -> Result<&'t str, StoreError> {
    t.get("id")
        .and_then(|v| v.as_str())
        .ok_or(StoreError::Shape(kind))
}

/// A table without the comments and blank lines around it, as a key stores it.
fn bare(t: &toml_edit::Table) -> toml_edit::Table {
    let mut t = t.clone();
    t.decor_mut().clear();
    t
}

/// Adds a grant; its id.
pub fn add(snap: &Snapshot, grant: &NewGrant, now: DateTime<Utc>) -> Result<String, StoreError> {
    edit(snap, now, |doc| {
        let id = next_id(doc);
        let mut t = toml_edit::Table::new();
        t.insert("id", toml_edit::value(id.as_str()));
        t.insert("ticket", toml_edit::value(grant.ticket.as_str()));
        t.insert("issued_by", toml_edit::value(grant.issued_by.as_str()));
        t.insert("reason", toml_edit::value(grant.reason.as_str()));
        t.insert("issued_at", toml_edit::value(stamp(now)));
        for (key, items) in [
            ("groups", &grant.groups),
            ("users", &grant.users),
            ("subnets", &grant.subnets),
            ("sites", &grant.sites),
            ("categories", &grant.categories),
        ] {
            if !items.is_empty() {
                t.insert(key, string_array(items));
            }
        }
        t.insert(
            "starts",
            toml_edit::value(stamp(grant.starts.unwrap_or(now))),
        );
        t.insert("expires", toml_edit::value(stamp(grant.expires)));
        tables(doc, "grant")?.push(t);
        Ok(id)
    })
}

/// A teacher's lesson override, as the CLI and `POST /api/lessons` take it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLesson {
    /// `allow` or `block`.
    pub effect: String,
    /// Why (no ticket: the reason is the record).
    pub reason: String,
    /// Classrooms (`[teachers.classrooms]`) it is for.
    #[serde(default)]
    pub classrooms: Vec<String>,
    /// Groups (classes) it is for.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Sites and URL prefixes.
    #[serde(default)]
    pub sites: Vec<String>,
    /// Categories.
    #[serde(default)]
    pub categories: Vec<String>,
    /// At most this many minutes (default: to the end of the lesson, at most the
    /// policy's `max_minutes`).
    #[serde(default)]
    pub minutes: Option<u32>,
}

/// A lesson override made: its id and when it ends.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LessonMade {
    /// Grant id (`g-12`).
    pub id: String,
    /// When it ends (RFC 3339).
    pub expires: String,
}

/// Adds a teacher's lesson override for `teacher` (its name is the issuer), who may act
/// only for `scope`'s classrooms and groups. It ends at the end of the current lesson,
/// at most `[teachers] max_minutes` (and at most `minutes` if asked) from `now`.
pub fn add_lesson(
    snap: &Snapshot,
    lesson: &NewLesson,
    teacher: &str,
    scope: &crate::core::grants::TeacherScope,
    now: DateTime<Utc>,
) -> Result<LessonMade, StoreError> {
    use crate::core::grants::{Effect, Grant, GrantKind, GrantRequest, GrantScope};
    scope
        .permits(&lesson.classrooms, &lesson.groups)
        .map_err(StoreError::NotYours)?;
    let effect = Effect::parse(&lesson.effect).ok_or_else(|| {
        StoreError::Unknown(format!(
            "effect {:?} is not \"allow\" or \"block\"",
            lesson.effect
        ))
    })?;
    let expires = crate::core::grants::lesson_expiry(&snap.policy, now, lesson.minutes)?;
    // Checked here, before the file is touched, for a message about the request
    // rather than about a line of the file; the whole file is validated again below.
    let mut groups = Vec::new();
    for g in &lesson.groups {
        groups.push(
            snap.policy
                .group_id(g)
                .ok_or_else(|| StoreError::Unknown(format!("no group {g:?} in the policy")))?,
        );
    }
    let mut categories = crate::core::category::CategorySet::EMPTY;
    for c in &lesson.categories {
        categories.insert(
            snap.policy
                .category_id(c)
                .ok_or_else(|| StoreError::Unknown(format!("no category {c:?} in the policy")))?,
        );
    }
    Grant::new(
        GrantRequest {
            id: "new".into(),
            kind: GrantKind::Lesson(effect),
            ticket: String::new(),
            classrooms: lesson.classrooms.clone(),
            issued_by: teacher.to_string(),
            reason: lesson.reason.clone(),
            scope: GrantScope {
                groups,
                ..GrantScope::default()
            },
            sites: lesson.sites.clone(),
            categories,
            starts: now,
            expires,
        },
        &snap.policy,
        &snap.lists,
    )?;
    let id = edit(snap, now, |doc| {
        let id = next_id(doc);
        let mut t = toml_edit::Table::new();
        t.insert("id", toml_edit::value(id.as_str()));
        t.insert("kind", toml_edit::value("lesson"));
        t.insert("effect", toml_edit::value(effect.as_str()));
        t.insert("issued_by", toml_edit::value(teacher));
        t.insert("reason", toml_edit::value(lesson.reason.as_str()));
        t.insert("issued_at", toml_edit::value(stamp(now)));
        for (key, items) in [
            ("classrooms", &lesson.classrooms),
            ("groups", &lesson.groups),
            ("sites", &lesson.sites),
            ("categories", &lesson.categories),
        ] {
            if !items.is_empty() {
                t.insert(key, string_array(items));
            }
        }
        t.insert("starts", toml_edit::value(stamp(now)));
        t.insert("expires", toml_edit::value(stamp(expires)));
        tables(doc, "grant")?.push(t);
        Ok(id)
    })?;
    Ok(LessonMade {
        id,
        expires: stamp(expires),
    })
}

/// Ends a lesson override early. With `only_by` set (a teacher), only that teacher's
/// own overrides; a technician passes `None`.
pub fn end_lesson(
    snap: &Snapshot,
    id: &str,
    by: &str,
    only_by: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let rows = list(snap, now)?;
    let row = rows
        .iter()
        .find(|r| r.id == id && r.state == GrantState::Active && r.kind == "lesson")
        .ok_or_else(|| StoreError::NoSuchGrant(id.to_string()))?;
    if let Some(teacher) = only_by {
        if row.issued_by != teacher {
            return Err(StoreError::NotYours(format!(
                "lesson override {id} is {}'s, not yours",
                row.issued_by
            )));
        }
    }
    let why = if only_by.is_some() {
        "ended early by the teacher"
    } else {
        "ended early"
    };
    revoke(snap, id, by, why, now)
}

/// Revokes a grant in force: it moves to the archive with who, when and why.
pub fn revoke(
    snap: &Snapshot,
    id: &str,
    by: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if by.trim().is_empty() || reason.trim().is_empty() {
        return Err(StoreError::RevocationUnexplained);
    }
    edit(snap, now, |doc| {
        let grants = tables(doc, "grant")?;
        let i = grants
            .iter()
            .position(|t| t.get("id").and_then(|v| v.as_str()) == Some(id))
            .ok_or_else(|| StoreError::NoSuchGrant(id.to_string()))?;
        let mut t = grants
            .get(i)
            .cloned()
            .ok_or_else(|| StoreError::NoSuchGrant(id.to_string()))?;
        grants.remove(i);
        t.insert("revoked_at", toml_edit::value(stamp(now)));
        t.insert("revoked_by", toml_edit::value(by));
        t.insert("revoke_reason", toml_edit::value(reason));
        tables(doc, "archived")?.push(t);
        Ok(())
    })
}

/// Every grant in the file, in force and archived, with its state and time left.
pub fn list(snap: &Snapshot, now: DateTime<Utc>) -> Result<Vec<GrantRow>, StoreError> {
    let (path, text) = match &snap.settings.grants_store {
        crate::settings::GrantsStore::File => {
            let path = snap.policy.grant_rules.file.clone();
            let text = read(&path)?;
            (path, text)
        }
        crate::settings::GrantsStore::Etcd(etcd) => {
            use crate::etcd_grants as store;
            let text = store::block_on(async {
                let mut client = store::connect(etcd).await?;
                Ok::<_, store::EtcdError>(store::read(&mut client, etcd).await?.document(etcd))
            })
            .map_err(|error| FileError::Read {
                path: PathBuf::from(format!("etcd:{}", etcd.prefix)),
                error,
            })??;
            (PathBuf::from(format!("etcd:{}", etcd.prefix)), text)
        }
    };
    let path = &path;
    let raw: crate::core::grants::RawGrantsFile =
        toml::from_str(&text).map_err(|error| FileError::Format {
            path: path.clone(),
            error: Box::new(error),
        })?;
    let mut rows = Vec::new();
    for (archived, list) in [(false, &raw.grant), (true, &raw.archived)] {
        for g in list {
            let starts = g
                .starts
                .as_ref()
                .and_then(|s| DateTime::parse_from_rfc3339(s.get_ref()).ok());
            let expires = DateTime::parse_from_rfc3339(g.expires.get_ref()).ok();
            let state = match (archived, starts, expires) {
                (true, _, _) if g.revoked_by.is_some() => GrantState::Revoked,
                (true, _, _) => GrantState::Expired,
                (_, _, Some(e)) if e <= now => GrantState::Expired,
                (_, Some(s), _) if s > now => GrantState::Future,
                _ => GrantState::Active,
            };
            let time_left = expires.filter(|_| state == GrantState::Active).map(|e| {
                let d = e.with_timezone(&Utc) - now;
                format!(
                    "{}d {}h {}m left",
                    d.num_days(),
                    d.num_hours() % 24,
                    d.num_minutes() % 60
                )
            });
            let names = |v: &[toml::Spanned<String>]| {
                v.iter().map(|s| s.get_ref().clone()).collect::<Vec<_>>()
            };
            let lesson = g.kind.as_ref().is_some_and(|k| k.get_ref() == "lesson");
            let effect = match g.effect.as_ref().map(|e| e.get_ref().as_str()) {
                Some("block") => "block",
                _ => "allow",
            };
            rows.push(GrantRow {
                id: g.id.get_ref().clone(),
                kind: if lesson { "lesson" } else { "ticket" },
                effect,
                state,
                ticket: match &g.ticket {
                    Some(t) => t.get_ref().clone(),
                    None => format!(
                        "{}{}",
                        crate::core::grants::LESSON_TICKET_PREFIX,
                        g.id.get_ref()
                    ),
                },
                classrooms: g.classrooms.clone(),
                issued_by: g.issued_by.get_ref().clone(),
                reason: g.reason.get_ref().clone(),
                groups: names(&g.groups),
                users: g.users.clone(),
                subnets: names(&g.subnets),
                sites: names(&g.sites),
                categories: names(&g.categories),
                starts: g.starts.as_ref().map(|s| s.get_ref().clone()),
                expires: g.expires.get_ref().clone(),
                time_left,
                revoked_by: g.revoked_by.clone(),
                revoke_reason: g.revoke_reason.clone(),
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows' JSON is an interface (the admin API's `GET /api/grants`, `grant list
    /// --json`): these are the names and values scripts read.
    #[test]
    fn a_row_serialises_to_the_listed_json() {
        let row = GrantRow {
            id: "g-3".into(),
            kind: "ticket",
            effect: "allow",
            state: GrantState::Revoked,
            ticket: "HD-3".into(),
            classrooms: vec![],
            issued_by: "c".into(),
            reason: "GCSE RE unit".into(),
            groups: vec!["ks4".into()],
            users: vec![],
            subnets: vec!["10.0.0.0/8".into()],
            sites: vec!["bet.test".into()],
            categories: vec![],
            starts: Some("2026-12-04T14:43:50Z".into()),
            expires: "2026-12-05T14:43:50Z".into(),
            time_left: None,
            revoked_by: Some("c".into()),
            revoke_reason: Some("done".into()),
        };
        assert_eq!(
            serde_json::to_value(&row).ok(),
            Some(serde_json::json!({
                "id": "g-3",
                "kind": "ticket",
                "effect": "allow",
                "state": "revoked",
                "ticket": "HD-3",
                "classrooms": [],
                "issued_by": "c",
                "reason": "GCSE RE unit",
                "groups": ["ks4"],
                "users": [],
                "subnets": ["10.0.0.0/8"],
                "sites": ["bet.test"],
                "categories": [],
                "starts": "2026-12-04T14:43:50Z",
                "expires": "2026-12-05T14:43:50Z",
                "time_left": null,
                "revoked_by": "c",
                "revoke_reason": "done",
            }))
        );
        for (state, word) in [
            (GrantState::Active, "active"),
            (GrantState::Future, "future"),
            (GrantState::Expired, "expired"),
            (GrantState::Revoked, "revoked"),
        ] {
            assert_eq!(serde_json::to_value(state).ok(), Some(word.into()));
            assert_eq!(state.as_str(), word);
        }
    }
}
