//! A snapshot: one policy with its compiled lists, loaded whole, swapped whole.
//!
//! [`load`] is the one path from files to a usable snapshot, for start-up, `check`,
//! `classify` and every reload: read the policy and users files, compile, load the lists,
//! check the policy against them. Any error leaves nothing half-built. [`Live`] holds the
//! snapshot in force behind an [`arc_swap::ArcSwap`]: a request takes the snapshot once
//! and finishes on it, a reload replaces it in one store, and the request path never
//! takes a lock.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::ca::{CaCert, CaError};
use crate::core::classify::{Classification, CompiledLists};
use crate::core::config::{
    ConfigError, ConfigErrorKind, ConfigErrors, RawPolicy, RawUsers, Source,
};
use crate::core::grants::{self, GrantSet};
use crate::core::policy::Policy;
use crate::inspection::InspectionTls;
use crate::lists::{self, CacheMode, ListReport};
use crate::settings::Settings;

/// A policy, its lists and its grants, and the shell's settings, valid together.
pub struct Snapshot {
    /// The policy.
    pub policy: Arc<Policy>,
    /// The listener, log and admin settings from the same file.
    pub settings: Arc<Settings>,
    /// Its compiled lists.
    pub lists: Arc<CompiledLists>,
    /// What loading the lists found.
    pub report: ListReport,
    /// The grants file, validated against this policy and these lists.
    pub grants: Arc<GrantSet>,
    /// The school CA's certificate, read when a setting needs it (`[inspection]
    /// enrol_listen`), so a listener serves what was read at start or reload.
    pub ca: Option<Arc<CaCert>>,
    /// The school CA's signing half and the TLS settings for inspected tunnels, when the
    /// CA's files are there (see [`crate::inspection`]).
    pub inspection: Option<Arc<InspectionTls>>,
}

impl Snapshot {
    /// This snapshot with the grants file read again: policy and lists are shared, so a
    /// grants reload costs only the grants.
    pub fn with_grants(&self) -> Result<Snapshot, ConfigErrors> {
        let grants = load_grants(&self.policy, &self.lists)?;
        Ok(Snapshot {
            policy: self.policy.clone(),
            settings: self.settings.clone(),
            lists: self.lists.clone(),
            report: self.report.clone(),
            grants: Arc::new(grants),
            ca: self.ca.clone(),
            inspection: self.inspection.clone(),
        })
    }

    /// This snapshot with `grants` in place of its own (grants from etcd, compiled by
    /// the caller against this policy).
    pub fn with_grant_set(&self, grants: GrantSet) -> Snapshot {
        Snapshot {
            policy: self.policy.clone(),
            settings: self.settings.clone(),
            lists: self.lists.clone(),
            report: self.report.clone(),
            grants: Arc::new(grants),
            ca: self.ca.clone(),
            inspection: self.inspection.clone(),
        }
    }

    /// Classifies a target against this snapshot's lists.
    pub fn classify(&self, target: &crate::core::host::Target) -> Classification {
        self.lists.classify(target)
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        kind: ConfigErrorKind::Io(e.to_string()),
    })
}

/// Loads the policy at `path`, its users file and its lists.
pub fn load(path: &Path, cache: CacheMode) -> Result<Snapshot, ConfigErrors> {
    let text = read(path)?;
    let source = Source::new(path, &text);
    let raw: RawPolicy = source.parse(&text)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let users_path: Option<PathBuf> = raw.identity.users_file.as_ref().map(|f| base.join(f));
    let (raw_users, users_source) = match &users_path {
        Some(p) => {
            let text = read(p)?;
            let users_source = Source::new(p, &text);
            let raw_users: RawUsers = users_source.parse(&text)?;
            (Some(raw_users), Some(users_source))
        }
        None => (None, None),
    };
    // Settings and policy are checked in one pass: every problem in the file is listed.
    let settings = Settings::compile(&raw, &source);
    let policy = Policy::compile(raw, &source, raw_users.zip(users_source.as_ref()));
    let (policy, settings) = match (policy, settings) {
        (Ok(policy), Ok(settings)) => (policy, settings),
        (policy, settings) => {
            let mut errors = policy.err().map(|e| e.0).unwrap_or_default();
            errors.extend(settings.err().unwrap_or_default());
            errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            return Err(ConfigErrors(errors));
        }
    };
    // Before the lists, which may take seconds: a missing CA is said at once.
    let ca = load_ca(&settings, path)?;
    let inspection = load_inspection(&settings, &policy, path)?;
    let (lists, report) = lists::load(&policy, cache).map_err(ConfigErrors)?;
    let mut errors = policy.check_lists(&lists);
    errors.extend(illegal_lists_missing(&policy, &report));
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    // Grants in etcd are the running node's mirror's, compiled by the proxy against
    // this policy (see `etcd_grants`); the file is not theirs.
    let grants = match &settings.grants_store {
        crate::settings::GrantsStore::File => load_grants(&policy, &lists)?,
        crate::settings::GrantsStore::Etcd(_) => GrantSet::default(),
    };
    Ok(Snapshot {
        policy: Arc::new(policy),
        settings: Arc::new(settings),
        lists: Arc::new(lists),
        report,
        grants: Arc::new(grants),
        ca,
        inspection,
    })
}

/// Reads the school CA's signing half when its certificate is there: TLS inspection
/// for the groups that opt in, and for sites with pages on an illegal list. A group with
/// `inspect_tls` and no CA is an error, so the policy does not load with an inspection
/// it cannot do.
fn load_inspection(
    settings: &Settings,
    policy: &Policy,
    path: &Path,
) -> Result<Option<Arc<InspectionTls>>, ConfigErrors> {
    let inspection = &settings.inspection;
    let error = |file: &Path, message: String| {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            line: None,
            kind: ConfigErrorKind::Ca(message),
        }])
    };
    match InspectionTls::load(inspection) {
        Ok(Some(tls)) => Ok(Some(Arc::new(tls))),
        Ok(None) => match policy.groups().find(|(_, g)| g.inspect_tls) {
            Some((_, g)) => Err(error(
                &inspection.ca_cert,
                format!(
                    "no school CA certificate here, and group {:?} has inspect_tls on: create it with `gatehouse ca init --config {}`",
                    g.name,
                    path.display()
                ),
            )),
            None => Ok(None),
        },
        Err(e) => Err(error(&inspection.ca_cert, e.to_string())),
    }
}

/// The entries loaded for each `illegal` category, as a line for the tracing log and the
/// decision log (`child-abuse 1 entries, terrorism 1 entries`): written at every start
/// and every policy reload, so the record shows the illegal lists were in force.
pub fn illegal_counts(snap: &Snapshot) -> String {
    let parts: Vec<String> = snap
        .policy
        .categories()
        .filter(|(_, def)| def.category.severity == crate::core::category::Severity::Illegal)
        .filter_map(|(id, def)| {
            let c = snap.report.counts.get(id.index())?;
            Some(format!(
                "{} {} entries",
                def.category.name,
                c.domains + c.urls + c.hashes + c.expressions
            ))
        })
        .collect();
    if parts.is_empty() {
        "no illegal categories".into()
    } else {
        parts.join(", ")
    }
}

/// An `illegal` category whose list has no entries at all — its directory missing or
/// empty, as after a mistyped `[lists] dir` or a failed mount — fails closed: the proxy
/// does not start (or reload) without it, since every group, pupils first, would be
/// served with nothing of that list enforced. A list with only its canary loads; the
/// canary is the check that it is enforced.
fn illegal_lists_missing(policy: &Policy, report: &lists::ListReport) -> Vec<ConfigError> {
    policy
        .categories()
        .filter(|(_, def)| def.category.severity == crate::core::category::Severity::Illegal)
        .filter_map(|(id, def)| {
            let c = report.counts.get(id.index())?;
            let entries = c.domains + c.urls + c.hashes + c.expressions;
            (entries == 0).then(|| ConfigError {
                file: def.list_dir.clone(),
                line: None,
                kind: ConfigErrorKind::List(format!(
                    "category {} is illegal and its list has no entries (the directory is missing or empty): \
                     Gatehouse does not run without its illegal lists; put the list (or at least its canary, \
                     {}.canary.gatehouse.invalid, in `domains`) there",
                    def.category.name, def.category.name
                )),
            })
        })
        .collect()
}

/// Reads the school CA's certificate when the enrolment listener will serve it; a
/// missing or unusable one is an error naming the file, so the proxy does not start (or
/// reload) with a listener that has nothing to give devices.
fn load_ca(settings: &Settings, policy: &Path) -> Result<Option<Arc<CaCert>>, ConfigErrors> {
    let inspection = &settings.inspection;
    if inspection.enrol_listen.is_none() {
        return Ok(None);
    }
    let message = match CaCert::load(&inspection.ca_cert) {
        Ok(ca) => return Ok(Some(Arc::new(ca))),
        // The listener also serves the PAC file: it runs without a CA (its certificate
        // routes answer 503) until one is made.
        Err(CaError::Missing { .. }) if settings.pac.is_some() => return Ok(None),
        Err(CaError::Missing { .. }) => format!(
            "no school CA certificate here, and [inspection] enrol_listen serves it to \
             devices: create it with `gatehouse ca init --config {}`",
            policy.display()
        ),
        Err(CaError::Invalid { reason, .. }) => format!(
            "not a usable CA certificate ({reason}), and [inspection] enrol_listen serves \
             it to devices: replace it with `gatehouse ca init --force --config {}`",
            policy.display()
        ),
        Err(e) => format!("cannot read the school CA certificate: {e}"),
    };
    Err(ConfigErrors(vec![ConfigError {
        file: inspection.ca_cert.clone(),
        line: None,
        kind: ConfigErrorKind::Ca(message),
    }]))
}

/// Reads and validates the grants file; a missing file means no grants.
pub fn load_grants(policy: &Policy, lists: &CompiledLists) -> Result<GrantSet, ConfigErrors> {
    let path = &policy.grant_rules.file;
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(GrantSet::default()),
        Err(e) => {
            return Err(ConfigErrors(vec![ConfigError {
                file: path.clone(),
                line: None,
                kind: ConfigErrorKind::Io(e.to_string()),
            }]))
        }
    };
    let source = Source::new(path, &text);
    grants::compile_file(&text, &source, policy, lists, chrono::Utc::now())
}

/// The snapshot in force, swapped atomically on reload.
pub struct Live {
    current: ArcSwap<Snapshot>,
}

impl Live {
    /// Starts with `snapshot`.
    pub fn new(snapshot: Snapshot) -> Live {
        Live {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The snapshot in force now. Hold the `Arc` for the whole request.
    pub fn get(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot in force; requests already holding the old one finish on it.
    pub fn replace(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}
