//! The alert outbox: a directory with one JSON file per alert not yet delivered on every
//! channel, so that no alert is lost across a restart, a `kill -9` or an outage of the
//! mail server or webhook.
//!
//! A file is `<id, 20 digits>.json`, written whole and atomically: the new text goes to
//! `.<id>.tmp`, is fsynced, renamed over the file, and the directory is fsynced. So a
//! crash leaves either the old file or the new one, never half of one (a stray `.tmp`
//! is removed at start). An entry records which channels have already delivered it
//! (`sent`), how many attempts failed and when the next is due; it is rewritten after
//! each change and deleted once every configured channel has delivered it. What was
//! sent and what failed is in the decision log ([`crate::decision_log::Body::Alert`]),
//! not here: the outbox only holds what is still owed.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::alert::{Alert, Digest};

/// What an entry delivers.
// An alert is bigger than a digest's handle on its lines; boxing it would save a few
// hundred bytes per outbox entry, of which there are a handful, at the cost of a box
// at every construction and match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// An immediate alert.
    Alert(Alert),
    /// A digest email.
    Digest(Digest),
}

/// One alert still owed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Its id (rises; unique in this outbox).
    pub id: u64,
    /// When it may next be sent (Unix seconds).
    pub due: i64,
    /// The decision it reports (0 for a digest).
    pub of: u64,
    /// What it says.
    pub payload: Payload,
    /// Channels that have delivered it.
    pub sent: Vec<String>,
    /// Failed attempts so far.
    pub failures: u32,
}

/// Why the outbox could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// A file-system error, with the path.
    #[error("alert outbox {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The outbox directory.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Outbox {
    /// Opens (creating) the directory and reads every entry in it, oldest first. An
    /// unreadable entry is moved aside as `<name>.bad` and reported, not deleted: it is
    /// evidence.
    pub fn open(dir: &Path) -> Result<(Outbox, Vec<OutboxEntry>), OutboxError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut entries = Vec::new();
        for item in std::fs::read_dir(dir).map_err(io(dir))? {
            let item = item.map_err(io(dir))?;
            let name = item.file_name().to_string_lossy().into_owned();
            let path = item.path();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let text = std::fs::read(&path).map_err(io(&path))?;
            match serde_json::from_slice::<OutboxEntry>(&text) {
                Ok(e) => entries.push(e),
                Err(err) => {
                    tracing::error!(target: "gatehouse::alerts", file = %path.display(), "unreadable outbox entry, moved aside: {err}");
                    let _ = std::fs::rename(&path, path.with_extension("json.bad"));
                }
            }
        }
        entries.sort_by_key(|e| e.id);
        Ok((
            Outbox {
                dir: dir.to_path_buf(),
            },
            entries,
        ))
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.json"))
    }

    /// Writes `entry` atomically (see the module documentation).
    pub fn write(&self, entry: &OutboxEntry) -> Result<(), OutboxError> {
        let path = self.path(entry.id);
        let tmp = self.dir.join(format!(".{:020}.tmp", entry.id));
        let text = serde_json::to_vec_pretty(entry).map_err(|e| OutboxError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&text).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        self.sync_dir()
    }

    /// Deletes a delivered entry.
    pub fn remove(&self, id: u64) -> Result<(), OutboxError> {
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn sync_dir(&self) -> Result<(), OutboxError> {
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopening_and_bad_ones_are_set_aside() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (outbox, entries) = Outbox::open(dir.path()).expect("opens");
        assert!(entries.is_empty());
        let entry = |id| OutboxEntry {
            id,
            due: 100,
            of: 7,
            payload: Payload::Digest(Digest {
                school: "S".into(),
                timezone: "Europe/London".into(),
                from: chrono::DateTime::UNIX_EPOCH,
                until: chrono::DateTime::UNIX_EPOCH,
                lines: vec![],
            }),
            sent: vec!["email".into()],
            failures: 2,
        };
        outbox.write(&entry(2)).expect("writes");
        outbox.write(&entry(1)).expect("writes");
        std::fs::write(dir.path().join(".00000000000000000003.tmp"), b"half").expect("tmp");
        std::fs::write(dir.path().join("00000000000000000004.json"), b"{torn").expect("bad");
        let (outbox, entries) = Outbox::open(dir.path()).expect("reopens");
        assert_eq!(entries, [entry(1), entry(2)]);
        assert!(!dir.path().join(".00000000000000000003.tmp").exists());
        assert!(dir.path().join("00000000000000000004.json.bad").exists());
        outbox.remove(1).expect("removes");
        outbox.remove(1).expect("removing twice is fine");
        assert_eq!(Outbox::open(dir.path()).expect("reopens").1, [entry(2)]);
    }
}
