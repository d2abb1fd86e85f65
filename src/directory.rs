//! The school's directory (LDAP / Active Directory): sign-in by an LDAP bind as the
//! user, the user's groups (nested ones included), a short cache of successful sign-ins
//! and a periodic re-read of signed-in users' groups.
//!
//! A sign-in searches the user's DN with the service account (`bind_dn`), binds as that
//! DN with the password given, then reads the user's groups with the service account
//! again: `memberOf` on the user, and the groups holding those, upwards (see
//! [`NestedGroups`]). An empty password is refused before the directory is asked: LDAP
//! treats a bind with a DN and no password as an anonymous bind, which "succeeds".
//!
//! Each cache miss opens its own connection (connect, TLS, service bind, search, bind,
//! unbind); the cache keeps the directory from being asked per request, and parallel
//! sign-ins with the same credentials (a browser's several connections) share one
//! bind. A successful
//! sign-in is remembered for `cache_ttl` by a SHA-256 of the directory URL, account and
//! password (never the password); failures are never remembered as successes, and a
//! refused account and password is not tried again for [`REFUSED_FOR`]. The
//! groups of the users signed in are re-read every `sync_interval`, so a group change
//! takes effect within it without a new sign-in; a user the directory no longer finds is
//! forgotten at once. While the directory cannot be reached, remembered sign-ins keep
//! working until their `cache_ttl` runs out and new ones are refused as unavailable.
//!
//! Which Gatehouse group the groups map to is the policy's
//! ([`crate::core::directory::GroupMapping`]), applied per request, so a policy reload
//! changes it at once.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, StdStream};
use sha2::{Digest, Sha256};

use crate::core::directory::{
    escape_filter_value, normalise_dn, normalise_username, user_filter, UsernameError,
};
use crate::metrics::Metrics;
use crate::settings::{DirectorySettings, DirectoryTls, NestedGroups};

/// LDAP's `invalidCredentials` result code (RFC 4511 §A.1).
const INVALID_CREDENTIALS: u32 = 49;
/// LDAP's `noSuchObject` result code.
const NO_SUCH_OBJECT: u32 = 32;
/// Active Directory's LDAP_MATCHING_RULE_IN_CHAIN: `member:OID:=DN` matches the groups
/// that hold DN at any depth.
pub const AD_IN_CHAIN: &str = "1.2.840.113556.1.4.1941";
/// The most groups read for one user: a bound on the searches one sign-in makes.
const MAX_GROUPS: usize = 1000;
/// How long a refused account and password are refused without asking the directory
/// again. A browser resends a wrong saved password with every request; each would be a
/// failed bind, and Active Directory locks an account after a few of those (its lockout
/// threshold). A corrected password is another key, so it is tried at once.
pub const REFUSED_FOR: Duration = Duration::from_secs(30);

/// What went wrong talking to the directory, or why a sign-in is refused.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The service account's password file cannot be read.
    #[error("cannot read the service account's password file {}: {source}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The service account's password file is empty: a bind with it would be anonymous.
    #[error("the service account's password file {} is empty (a bind without a password is anonymous)", path.display())]
    EmptyServicePassword {
        /// The file.
        path: PathBuf,
    },
    /// The extra CA file cannot be read or holds no certificate.
    #[error("cannot use the directory CA file {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No connection: refused, timed out, TLS failed, or it broke.
    #[error("cannot reach the directory at {url}: {reason}")]
    Unreachable {
        /// The directory's URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The service account's bind was refused.
    #[error("the directory refused the service account {dn}: {reason}")]
    ServiceBind {
        /// The service account.
        dn: String,
        /// The directory's words.
        reason: String,
    },
    /// A search failed.
    #[error("a directory search under {base} failed: {reason}")]
    Search {
        /// The base DN.
        base: String,
        /// The directory's words.
        reason: String,
    },
    /// The base DN does not exist.
    #[error("the base DN {base} does not exist in the directory")]
    BaseMissing {
        /// The base DN.
        base: String,
    },
    /// No account of that name under the base DN.
    #[error("no directory account {account:?}")]
    NoSuchUser {
        /// The account name searched.
        account: String,
    },
    /// Several entries match the user filter: which one signs in is not guessed.
    #[error("{count} directory entries match account {account:?}; the user filter must find one")]
    Ambiguous {
        /// The account name.
        account: String,
        /// How many matched.
        count: usize,
    },
    /// The password is wrong (or the account may not sign in).
    #[error("the directory refused the password for {account:?}: {reason}")]
    InvalidCredentials {
        /// The account name.
        account: String,
        /// The directory's words.
        reason: String,
    },
    /// An empty password: an LDAP bind with it would be anonymous.
    #[error("empty password")]
    EmptyPassword,
    /// The user name cannot be an account name.
    #[error("{0}")]
    Username(#[from] UsernameError),
}

impl DirectoryError {
    /// Whether the directory could not answer (so the user's credentials were not
    /// judged), rather than refusing them.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DirectoryError::PasswordFile { .. }
                | DirectoryError::EmptyServicePassword { .. }
                | DirectoryError::CaFile { .. }
                | DirectoryError::Unreachable { .. }
                | DirectoryError::ServiceBind { .. }
                | DirectoryError::Search { .. }
                | DirectoryError::BaseMissing { .. }
        )
    }
}

/// A directory account and its groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account name, normalised (what the decision log records).
    pub name: String,
    /// Its DN.
    pub dn: String,
    /// Its groups' DNs, direct ones first, then nested ones in the order found.
    pub groups: Vec<String>,
    /// The same DNs normalised once (`normalise_dn`), for mapping on every request.
    pub normalised_groups: Vec<String>,
}

impl Account {
    /// An account with its groups' normalised DNs worked out.
    pub fn new(name: String, dn: String, groups: Vec<String>) -> Account {
        let normalised_groups = groups
            .iter()
            .map(|g| crate::core::directory::normalise_dn(g))
            .collect();
        Account {
            name,
            dn,
            groups,
            normalised_groups,
        }
    }
}

/// One connection, bound as the service account.
struct Session<'a> {
    ldap: Ldap,
    settings: &'a DirectorySettings,
    password: String,
}

fn unreachable(settings: &DirectorySettings, reason: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::Unreachable {
        url: settings.url.clone(),
        reason: reason.to_string(),
    }
}

/// The rustls configuration trusting only `ca_file`'s certificates.
pub fn tls_config(ca_file: &std::path::Path) -> Result<rustls::ClientConfig, DirectoryError> {
    let bad = |reason: String| DirectoryError::CaFile {
        path: ca_file.to_path_buf(),
        reason,
    };
    let text = std::fs::read(ca_file).map_err(|e| bad(e.to_string()))?;
    let blocks = pem::parse_many(&text).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
        roots
            .add(rustls::pki_types::CertificateDer::from(
                block.contents().to_vec(),
            ))
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE in it".into()));
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// The ldap3 connection settings for `settings`: StartTLS when asked, the extra CA
/// when given, the connect timeout.
pub fn conn_settings(settings: &DirectorySettings) -> Result<LdapConnSettings, DirectoryError> {
    let mut conn = LdapConnSettings::new()
        .set_conn_timeout(settings.connect_timeout)
        .set_starttls(settings.tls == DirectoryTls::StartTls);
    if let Some(ca) = &settings.ca_file {
        conn = conn.set_config(Arc::new(tls_config(ca)?));
    }
    Ok(conn)
}

/// A TCP connection to the directory at `url` (`ldap://` or `ldaps://`, the port given
/// or the scheme's), with Nagle's algorithm off. An LDAP exchange is a few small
/// messages each way, and with Nagle on, a message sent while the last is unacknowledged
/// waits for the peer's delayed ACK (40 ms on Linux) on every sign-in.
async fn dial(url: &str) -> Result<std::net::TcpStream, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    let port = parsed.port().unwrap_or(match parsed.scheme() {
        "ldaps" => 636,
        _ => 389,
    });
    let host = match parsed.host() {
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(h) => h.to_string(),
        None => return Err(format!("{url:?} names no host")),
    };
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.into_std().map_err(|e| e.to_string())
}

impl<'a> Session<'a> {
    /// Connects and binds as the service account.
    async fn open(settings: &'a DirectorySettings) -> Result<Session<'a>, DirectoryError> {
        let password = std::fs::read_to_string(&settings.bind_password_file)
            .map_err(|source| DirectoryError::PasswordFile {
                path: settings.bind_password_file.clone(),
                source,
            })?
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if password.is_empty() {
            return Err(DirectoryError::EmptyServicePassword {
                path: settings.bind_password_file.clone(),
            });
        }
        let conn = conn_settings(settings)?;
        let (conn, ldap) = tokio::time::timeout(settings.connect_timeout, async {
            let stream = dial(&settings.url).await?;
            LdapConnAsync::with_settings(conn.set_std_stream(StdStream::Tcp(stream)), &settings.url)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| unreachable(settings, "timed out connecting"))?
        .map_err(|e| unreachable(settings, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(target: "gatehouse::directory", error = %e, "directory connection ended");
            }
        });
        let mut session = Session {
            ldap,
            settings,
            password,
        };
        session.bind_service().await?;
        Ok(session)
    }

    async fn bind_service(&mut self) -> Result<(), DirectoryError> {
        let settings = self.settings;
        let result = tokio::time::timeout(
            settings.timeout,
            self.ldap.simple_bind(&settings.bind_dn, &self.password),
        )
        .await
        .map_err(|_| unreachable(settings, "timed out binding"))?
        .map_err(|e| unreachable(settings, e))?;
        if result.rc != 0 {
            return Err(DirectoryError::ServiceBind {
                dn: settings.bind_dn.clone(),
                reason: result.to_string(),
            });
        }
        Ok(())
    }

    /// DNs and `attr` values of the entries `filter` finds under `base`.
    async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let settings = self.settings;
        let searched = tokio::time::timeout(
            settings.timeout,
            self.ldap.search(base, scope, filter, attrs.to_vec()),
        )
        .await
        .map_err(|_| unreachable(settings, "timed out searching"))?
        .map_err(|e| unreachable(settings, e))?;
        let (entries, result) = (searched.0, searched.1);
        if result.rc == NO_SUCH_OBJECT {
            return Err(DirectoryError::BaseMissing {
                base: base.to_string(),
            });
        }
        if result.rc != 0 {
            return Err(DirectoryError::Search {
                base: base.to_string(),
                reason: result.to_string(),
            });
        }
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(SearchEntry::construct)
            .collect())
    }

    /// The account's entry: its DN and direct groups.
    async fn find_user(&mut self, account: &str) -> Result<(String, Vec<String>), DirectoryError> {
        let filter = user_filter(&self.settings.user_filter, account);
        let base = self.settings.base_dn.clone();
        let mut found = self
            .search(&base, Scope::Subtree, &filter, &["memberOf"])
            .await?;
        match found.len() {
            0 => Err(DirectoryError::NoSuchUser {
                account: account.to_string(),
            }),
            1 => {
                let entry = found.remove(0);
                let member_of = entry
                    .attrs
                    .into_iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("memberOf"))
                    .flat_map(|(_, v)| v)
                    .collect();
                Ok((entry.dn, member_of))
            }
            count => Err(DirectoryError::Ambiguous {
                account: account.to_string(),
                count,
            }),
        }
    }

    /// Every group `dn` is in: `direct` (its `memberOf`) and, by [`NestedGroups`], the
    /// groups above.
    async fn groups(
        &mut self,
        dn: &str,
        direct: Vec<String>,
    ) -> Result<Vec<String>, DirectoryError> {
        let base = self.settings.base_dn.clone();
        let mut seen: HashSet<String> = direct.iter().map(|g| normalise_dn(g)).collect();
        let mut groups = direct;
        let mut add = |groups: &mut Vec<String>, found: Vec<SearchEntry>| {
            let mut new = Vec::new();
            for e in found {
                if groups.len() < MAX_GROUPS && seen.insert(normalise_dn(&e.dn)) {
                    groups.push(e.dn.clone());
                    new.push(e.dn);
                }
            }
            new
        };
        match self.settings.nested_groups {
            NestedGroups::AdChain => {
                let filter = format!("(member:{AD_IN_CHAIN}:={})", escape_filter_value(dn));
                let found = self
                    .search(&base, Scope::Subtree, &filter, &["1.1"])
                    .await?;
                add(&mut groups, found);
            }
            NestedGroups::Walk => {
                let mut frontier: Vec<String> = std::iter::once(dn.to_string())
                    .chain(groups.iter().cloned())
                    .collect();
                for _ in 0..DirectorySettings::MAX_NESTING {
                    let mut next = Vec::new();
                    for member in &frontier {
                        let value = escape_filter_value(member);
                        let filter = format!("(|(member={value})(uniqueMember={value}))");
                        let found = self
                            .search(&base, Scope::Subtree, &filter, &["1.1"])
                            .await?;
                        next.extend(add(&mut groups, found));
                    }
                    if next.is_empty() || groups.len() >= MAX_GROUPS {
                        break;
                    }
                    frontier = next;
                }
            }
        }
        Ok(groups)
    }

    /// The account and its groups, without its password.
    async fn account(&mut self, account: &str) -> Result<Account, DirectoryError> {
        let (dn, direct) = self.find_user(account).await?;
        let groups = self.groups(&dn, direct).await?;
        Ok(Account::new(account.to_string(), dn, groups))
    }

    /// Binds as `dn` with `password`, then as the service account again.
    async fn check_password(
        &mut self,
        account: &str,
        dn: &str,
        password: &str,
    ) -> Result<(), DirectoryError> {
        let settings = self.settings;
        let result = tokio::time::timeout(settings.timeout, self.ldap.simple_bind(dn, password))
            .await
            .map_err(|_| unreachable(settings, "timed out binding"))?
            .map_err(|e| unreachable(settings, e))?;
        if result.rc != 0 {
            // 49 is a wrong password; others (an account disabled, locked, expired: AD
            // says which in the text's "data" code) refuse the sign-in too.
            return Err(DirectoryError::InvalidCredentials {
                account: account.to_string(),
                reason: if result.rc == INVALID_CREDENTIALS {
                    "invalid credentials".to_string()
                } else {
                    result.to_string()
                },
            });
        }
        self.bind_service().await
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ldap.unbind()).await;
    }
}

/// Signs `typed` in with `password`: the account and its groups, or why not.
pub async fn authenticate(
    settings: &DirectorySettings,
    typed: &str,
    password: &str,
) -> Result<Account, DirectoryError> {
    if password.is_empty() {
        return Err(DirectoryError::EmptyPassword);
    }
    let account = normalise_username(typed)?;
    let mut session = Session::open(settings).await?;
    let result = async {
        let (dn, direct) = session.find_user(&account).await?;
        session.check_password(&account, &dn, password).await?;
        let groups = session.groups(&dn, direct).await?;
        Ok(Account::new(account.clone(), dn, groups))
    }
    .await;
    session.close().await;
    result
}

/// How `typed` resolves, without a password (the service account reads it): for
/// `gatehouse identity test`.
pub async fn lookup(settings: &DirectorySettings, typed: &str) -> Result<Account, DirectoryError> {
    let account = normalise_username(typed)?;
    let mut session = Session::open(settings).await?;
    let result = session.account(&account).await;
    session.close().await;
    result
}

/// Reaches the directory as `gatehouse check` does: binds as the service account and
/// finds the base DN.
pub async fn check(settings: &DirectorySettings) -> Result<(), DirectoryError> {
    let mut session = Session::open(settings).await?;
    let base = settings.base_dn.clone();
    let result = session
        .search(&base, Scope::Base, "(objectClass=*)", &["1.1"])
        .await
        .and_then(|found| {
            if found.is_empty() {
                Err(DirectoryError::BaseMissing { base })
            } else {
                Ok(())
            }
        });
    session.close().await;
    result
}

/// The outcome of a sign-in through the cache.
#[derive(Debug)]
pub enum SignIn {
    /// Signed in: the account and its groups.
    Ok(Arc<Account>),
    /// The credentials were refused.
    Refused(DirectoryError),
    /// The directory could not be asked.
    Unavailable(DirectoryError),
}

struct Remembered {
    account: String,
    at: Instant,
}

struct Known {
    account: Arc<Account>,
    used: Instant,
}

/// Takes a key out of [`Directory::in_flight`] when its sign-in ends.
struct InFlight<'a> {
    map: &'a Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
    key: [u8; 32],
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(&self.key);
        }
    }
}

/// The cache of successful sign-ins and the accounts behind them.
pub struct Directory {
    /// SHA-256(url, account, password) → the account, when signed in.
    binds: Mutex<HashMap<[u8; 32], Remembered>>,
    /// Account name → its groups as last read, and when last used.
    accounts: Mutex<HashMap<String, Known>>,
    /// SHA-256(url, account, password) → when the directory refused it (see
    /// [`REFUSED_FOR`]). Never read as a success.
    refused: Mutex<HashMap<[u8; 32], Instant>>,
    /// Sign-ins being asked of the directory now, by key: a browser opens several
    /// connections at once with the same credentials, and one bind answers them all.
    in_flight: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
    /// Moves on whenever a remembered account's groups change or an account is
    /// forgotten, so an answer kept elsewhere (a connection's last sign-in, see
    /// [`Directory::generation`]) knows to ask again.
    generation: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Directory {
    /// An empty cache counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Directory {
        Directory {
            binds: Mutex::new(HashMap::new()),
            accounts: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            metrics,
        }
    }

    /// Changes when an account's groups or its being signed in may have changed: an
    /// answer from [`Directory::sign_in_until`] holds while this is unchanged and its
    /// time has not run out.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn key(settings: &DirectorySettings, account: &str, password: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(settings.url.as_bytes())
            .chain_update([0])
            .chain_update(account.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into()
    }

    /// Signs in through the cache.
    pub async fn sign_in(
        &self,
        settings: &DirectorySettings,
        typed: &str,
        password: &str,
    ) -> SignIn {
        self.sign_in_until(settings, typed, password).await.0
    }

    /// Signs in through the cache; for a success, also when its sign-in runs out (the
    /// bind's time plus the cache TTL), so a caller that keeps the answer keeps it no
    /// longer than the cache would.
    pub async fn sign_in_until(
        &self,
        settings: &DirectorySettings,
        typed: &str,
        password: &str,
    ) -> (SignIn, Option<Instant>) {
        // Neither is asked of the directory, so neither is counted as a bind.
        if password.is_empty() {
            return (SignIn::Refused(DirectoryError::EmptyPassword), None);
        }
        let account = match normalise_username(typed) {
            Ok(a) => a,
            Err(e) => return (SignIn::Refused(e.into()), None),
        };
        let key = Directory::key(settings, &account, password);
        if let Some(done) = self.answered(settings, &key, &account) {
            return done;
        }
        // One bind per key at a time; the others wait for it and take its answer.
        let gate = match self.in_flight.lock() {
            Ok(mut in_flight) => Some(in_flight.entry(key).or_default().clone()),
            Err(_) => None,
        };
        let _turn = match &gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        };
        // Removes the entry however this ends, a dropped request included.
        let _done = InFlight {
            map: &self.in_flight,
            key,
        };
        if let Some(done) = self.answered(settings, &key, &account) {
            return done;
        }
        // Taken before the bind, so never later than the cache's own end for it.
        let asked_at = Instant::now();
        let asked = self.ask(settings, key, account, password).await;
        let until = matches!(asked, SignIn::Ok(_)).then(|| asked_at + settings.cache_ttl);
        (asked, until)
    }

    /// The answer the caches already hold for `key`, if any.
    fn answered(
        &self,
        settings: &DirectorySettings,
        key: &[u8; 32],
        account: &str,
    ) -> Option<(SignIn, Option<Instant>)> {
        if let Some((known, until)) = self.remembered(settings, key) {
            self.metrics.directory_cache_hits.inc();
            return Some((SignIn::Ok(known), Some(until)));
        }
        if self.recently_refused(key) {
            return Some((
                SignIn::Refused(DirectoryError::InvalidCredentials {
                    account: account.to_string(),
                    reason: format!(
                        "refused by the directory less than {} s ago; not asked again yet",
                        REFUSED_FOR.as_secs()
                    ),
                }),
                None,
            ));
        }
        None
    }

    /// Asks the directory, and remembers the answer.
    async fn ask(
        &self,
        settings: &DirectorySettings,
        key: [u8; 32],
        account: String,
        password: &str,
    ) -> SignIn {
        match authenticate(settings, &account, password).await {
            Ok(found) => {
                self.count_bind("ok");
                self.metrics.directory_up.set(1);
                let found = Arc::new(found);
                self.remember(settings, key, found.clone());
                SignIn::Ok(found)
            }
            Err(e) if e.is_unavailable() => {
                self.count_bind("unavailable");
                self.metrics.directory_up.set(0);
                SignIn::Unavailable(e)
            }
            Err(e) => {
                self.count_bind("refused");
                self.metrics.directory_up.set(1);
                if let Ok(mut refused) = self.refused.lock() {
                    if refused.len() >= settings.cache_size {
                        refused.retain(|_, at| at.elapsed() < REFUSED_FOR);
                        if refused.len() >= settings.cache_size {
                            refused.clear();
                        }
                    }
                    refused.insert(key, Instant::now());
                }
                SignIn::Refused(e)
            }
        }
    }

    fn recently_refused(&self, key: &[u8; 32]) -> bool {
        self.refused
            .lock()
            .map(|r| r.get(key).is_some_and(|at| at.elapsed() < REFUSED_FOR))
            .unwrap_or(false)
    }

    fn count_bind(&self, result: &str) {
        self.metrics
            .directory_binds
            .with_label_values(&[result])
            .inc();
    }

    /// The account a remembered bind signed in, if that sign-in is younger than the
    /// TTL, and when it runs out.
    fn remembered(
        &self,
        settings: &DirectorySettings,
        key: &[u8; 32],
    ) -> Option<(Arc<Account>, Instant)> {
        let now = Instant::now();
        let (name, until) = {
            let binds = self.binds.lock().ok()?;
            let r = binds.get(key)?;
            let until = r.at + settings.cache_ttl;
            if now >= until {
                return None;
            }
            (r.account.clone(), until)
        };
        let mut accounts = self.accounts.lock().ok()?;
        let known = accounts.get_mut(&name)?;
        known.used = now;
        Some((known.account.clone(), until))
    }

    fn remember(&self, settings: &DirectorySettings, key: [u8; 32], account: Arc<Account>) {
        if let Ok(mut binds) = self.binds.lock() {
            if binds.len() >= settings.cache_size {
                binds.retain(|_, r| r.at.elapsed() < settings.cache_ttl);
                if binds.len() >= settings.cache_size {
                    binds.clear();
                }
            }
            binds.insert(
                key,
                Remembered {
                    account: account.name.clone(),
                    at: Instant::now(),
                },
            );
        }
        self.keep(settings, account);
    }

    /// Keeps `account` among the remembered ones, making room when the cache is full.
    fn keep(&self, settings: &DirectorySettings, account: Arc<Account>) {
        let Ok(mut accounts) = self.accounts.lock() else {
            return;
        };
        let before = accounts.len();
        if before >= settings.cache_size {
            accounts.retain(|_, k| k.used.elapsed() < settings.cache_ttl);
            if accounts.len() >= settings.cache_size {
                accounts.clear();
            }
        }
        let shrunk = accounts.len() < before;
        let replaced = accounts.insert(
            account.name.clone(),
            Known {
                account: account.clone(),
                used: Instant::now(),
            },
        );
        if shrunk || replaced.is_some_and(|old| old.account.groups != account.groups) {
            self.changed();
        }
    }

    /// The groups of `account`, already proven by other means (a Kerberos ticket): from
    /// the accounts the sync keeps fresh when it is there, else read with the service
    /// account and kept there from now on.
    pub async fn account(&self, settings: &DirectorySettings, account: &str) -> SignIn {
        if let Ok(mut accounts) = self.accounts.lock() {
            if let Some(known) = accounts.get_mut(account) {
                if known.used.elapsed() < settings.cache_ttl {
                    known.used = Instant::now();
                    self.metrics.directory_cache_hits.inc();
                    return SignIn::Ok(known.account.clone());
                }
            }
        }
        match lookup(settings, account).await {
            Ok(found) => {
                self.metrics.directory_up.set(1);
                let found = Arc::new(found);
                self.keep(settings, found.clone());
                SignIn::Ok(found)
            }
            Err(e) if e.is_unavailable() => {
                self.metrics.directory_up.set(0);
                SignIn::Unavailable(e)
            }
            Err(e) => SignIn::Refused(e),
        }
    }

    /// Re-reads the groups of the accounts used within the cache TTL (one connection
    /// for all); forgets the others, and any account the directory no longer finds.
    pub async fn sync(&self, settings: &DirectorySettings) {
        let names: Vec<String> = match self.accounts.lock() {
            Ok(mut accounts) => {
                let before = accounts.len();
                accounts.retain(|_, k| k.used.elapsed() < settings.cache_ttl);
                if accounts.len() < before {
                    self.changed();
                }
                accounts.keys().cloned().collect()
            }
            Err(_) => return,
        };
        if names.is_empty() {
            // Still a check that the directory answers, for the gauge and the alert.
            let up = check(settings).await.is_ok();
            self.metrics.directory_up.set(i64::from(up));
            return;
        }
        let mut session = match Session::open(settings).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(target: "gatehouse::directory", error = %e, "directory sync failed; signed-in users keep their groups until their sign-in expires");
                self.metrics.directory_up.set(0);
                self.metrics
                    .directory_syncs
                    .with_label_values(&["error"])
                    .inc();
                return;
            }
        };
        let mut failed = false;
        for name in names {
            match session.account(&name).await {
                Ok(fresh) => {
                    if let Ok(mut accounts) = self.accounts.lock() {
                        if let Some(known) = accounts.get_mut(&name) {
                            let changed = known.account.groups != fresh.groups;
                            known.account = Arc::new(fresh);
                            if changed {
                                tracing::info!(target: "gatehouse::directory", account = %name, "directory groups changed");
                                self.changed();
                            }
                        }
                    }
                }
                Err(DirectoryError::NoSuchUser { .. }) => {
                    tracing::info!(target: "gatehouse::directory", account = %name, "account no longer in the directory; signed out");
                    self.forget(&name);
                }
                Err(e) => {
                    tracing::warn!(target: "gatehouse::directory", account = %name, error = %e, "directory sync failed for an account");
                    failed = true;
                    if e.is_unavailable() {
                        break;
                    }
                }
            }
        }
        session.close().await;
        self.metrics.directory_up.set(i64::from(!failed));
        self.metrics
            .directory_syncs
            .with_label_values(&[if failed { "error" } else { "ok" }])
            .inc();
    }

    /// Forgets an account and every sign-in of it.
    fn forget(&self, name: &str) {
        if let Ok(mut accounts) = self.accounts.lock() {
            accounts.remove(name);
        }
        if let Ok(mut binds) = self.binds.lock() {
            binds.retain(|_, r| r.account != name);
        }
        self.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_config_trusts_the_ca_file_and_refuses_junk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).expect("CA");
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.pem()).expect("write");
        assert!(tls_config(&good).is_ok());
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let missing = dir.path().join("missing.pem");
        for path in [&junk, &missing] {
            match tls_config(path) {
                Err(e @ DirectoryError::CaFile { .. }) => assert!(e.is_unavailable()),
                other => panic!("{}: {other:?}", path.display()),
            }
        }
    }

    #[tokio::test]
    async fn the_directory_is_dialled_with_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stream = dial(&format!("ldap://127.0.0.1:{port}"))
            .await
            .expect("dials");
        assert!(stream.nodelay().expect("reads the option"));
        assert_eq!(stream.peer_addr().expect("peer").port(), port);
        for bad in ["ldap://", "not a url"] {
            assert!(dial(bad).await.is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_empty_password_never_reaches_the_directory() {
        // A URL nothing listens on: an empty password is refused before any connection.
        let settings = DirectorySettings {
            url: "ldap://127.0.0.1:1".into(),
            tls: DirectoryTls::Plain,
            bind_dn: "cn=svc,dc=x".into(),
            bind_password_file: PathBuf::from("/nonexistent"),
            base_dn: "dc=x".into(),
            user_filter: "(uid={user})".into(),
            nested_groups: NestedGroups::Walk,
            ca_file: None,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            cache_ttl: Duration::from_secs(60),
            cache_size: 10,
            sync_interval: Duration::from_secs(60),
        };
        let directory = Directory::new(Arc::new(Metrics::new()));
        // An empty service password would be an anonymous bind: refused before connecting.
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty.password");
        std::fs::write(&empty, "\n").expect("write");
        let with_empty = DirectorySettings {
            bind_password_file: empty,
            ..settings.clone()
        };
        match check(&with_empty).await {
            Err(e @ DirectoryError::EmptyServicePassword { .. }) => assert!(e.is_unavailable()),
            other => panic!("{other:?}"),
        }
        match directory.sign_in(&settings, "ann", "").await {
            SignIn::Refused(DirectoryError::EmptyPassword) => {}
            other => panic!("{other:?}"),
        }
        match directory.sign_in(&settings, "ann", "secret").await {
            SignIn::Unavailable(e) => assert!(e.is_unavailable(), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
