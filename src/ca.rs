//! The school's inspection CA: the certificate authority that the school's devices are
//! told to trust, so that Gatehouse can later inspect HTTPS for the groups that opt in.
//!
//! [`init`] makes it: an ECDSA P-256 key and a self-signed certificate that names the
//! school, with the key written mode 0600 (its directory, when made here, 0700), both
//! files replaced atomically (temporary file, fsync, rename), and never over an existing
//! CA unless asked: every device enrolled with the old CA would have to be enrolled
//! again. [`CaCert`] reads the certificate back (PEM or DER) for `gatehouse ca show`,
//! `gatehouse check` and the enrolment listener, with the fingerprints that people
//! compare on a device before trusting it.
//!
//! Shell, not core: it reads the clock's date, asks the operating system for random
//! numbers and writes files. Nothing here serves or even reads the private key after
//! writing it.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};

use crate::settings::InspectionSettings;

/// How long a new CA is valid, in years. The certificate is installed on every device by
/// hand or by a device-management profile, so replacing it means enrolling every device
/// again: ten years outlives a school's laptops and tablets. A long life costs little
/// here because what the CA signs for inspection is short-lived, and the limits that
/// browsers put on certificate lifetimes (398 days) apply to those server certificates,
/// not to a root that the device's owner installed. The key, not the date, is what must
/// be protected.
pub const VALIDITY_YEARS: u32 = 10;

/// RFC 5280's upper bound for a common name and an organisation name, in characters.
const NAME_MAX: usize = 64;

/// What follows the school's name in the certificate's common name.
const CN_SUFFIX: &str = " Gatehouse inspection CA";

/// Why the school CA could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA is already there and replacing it was not asked for.
    #[error(
        "a school CA already exists ({}); devices enrolled with it trust it. \
         `gatehouse ca init --force` replaces it, and every device enrolled with the old \
         one must then be enrolled again",
        list(.existing)
    )]
    Exists {
        /// The files found.
        existing: Vec<PathBuf>,
    },
    /// The certificate file is not there.
    #[error(
        "{}: no school CA certificate here; `gatehouse ca init` creates one",
        path.display()
    )]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no usable CA certificate.
    #[error("{}: not a usable CA certificate: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key or certificate could not be made.
    #[error("making the CA: {0}")]
    Generate(#[from] rcgen::Error),
    /// The operating system gave no random numbers for the serial number.
    #[error("the operating system gave no random numbers")]
    Random,
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The school CA's certificate as read from its file, with what people compare.
#[derive(Debug, Clone)]
pub struct CaCert {
    /// The file it was read from.
    pub path: PathBuf,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The certificate, PEM (`\n` line ends).
    pub pem: String,
    /// The subject, as `CN=…, O=…`.
    pub subject: String,
    /// Valid from.
    pub not_before: DateTime<Utc>,
    /// Valid until.
    pub not_after: DateTime<Utc>,
    /// SHA-256 of the DER, as Windows and openssl show it ([`fingerprint`]).
    pub sha256: String,
    /// SHA-1 of the DER: Windows' certificate dialogue shows this one as "Thumbprint".
    pub sha1: String,
}

impl CaCert {
    /// Reads the certificate at `path`: [`CaError::Missing`] if there is no file.
    pub fn load(path: &Path) -> Result<CaCert, CaError> {
        match fs::read(path) {
            Ok(bytes) => CaCert::parse(path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CaError::Missing {
                path: path.to_path_buf(),
            }),
            Err(source) => Err(CaError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Reads a certificate from `bytes` (PEM, the first `CERTIFICATE` block, or DER) as
    /// if from `path`; it must be a CA certificate.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<CaCert, CaError> {
        let invalid = |reason: String| CaError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let der = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            pem::parse_many(bytes)
                .map_err(|e| invalid(format!("bad PEM: {e}")))?
                .into_iter()
                .find(|p| p.tag() == "CERTIFICATE")
                .ok_or_else(|| invalid("no CERTIFICATE block in the PEM file".into()))?
                .into_contents()
        } else {
            bytes.to_vec()
        };
        let (subject, not_before, not_after) = {
            let (rest, cert) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| invalid(format!("not an X.509 certificate ({e})")))?;
            if !rest.is_empty() {
                return Err(invalid("bytes follow the certificate".into()));
            }
            if !cert.is_ca() {
                return Err(invalid(
                    "it is not a CA certificate (no basicConstraints CA:TRUE)".into(),
                ));
            }
            let time = |t: x509_parser::time::ASN1Time| {
                DateTime::from_timestamp(t.timestamp(), 0)
                    .ok_or_else(|| invalid("a validity date out of range".into()))
            };
            (
                cert.subject().to_string(),
                time(cert.validity().not_before)?,
                time(cert.validity().not_after)?,
            )
        };
        let pem = pem::encode_config(
            &pem::Pem::new("CERTIFICATE", der.clone()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        Ok(CaCert {
            path: path.to_path_buf(),
            sha256: fingerprint(ring::digest::digest(&ring::digest::SHA256, &der).as_ref()),
            sha1: fingerprint(
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der).as_ref(),
            ),
            der,
            pem,
            subject,
            not_before,
            not_after,
        })
    }

    /// Whole days from `now` until the certificate expires (0 on its last day); see
    /// [`CaCert::expired`] for whether it already has.
    pub fn days_left(&self, now: DateTime<Utc>) -> i64 {
        (self.not_after - now).num_days()
    }

    /// Whether the certificate has expired at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.not_after <= now
    }
}

/// A digest as colon-separated upper-case hex pairs (`AB:CD:…`), as Windows' certificate
/// dialogue and `openssl x509 -fingerprint` show it, so a technician can compare them
/// by eye.
pub fn fingerprint(digest: &[u8]) -> String {
    let mut out = String::with_capacity(digest.len() * 3);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// The certificate's common name and organisation for `school`: "`<school>` Gatehouse
/// inspection CA" and "`<school>`", the school's part shortened to keep each within
/// RFC 5280's 64 characters (some clients refuse longer names). No school name gives
/// "Gatehouse inspection CA" and no organisation.
pub fn subject_names(school: &str) -> (String, Option<String>) {
    let school = school.trim();
    if school.is_empty() {
        return (CN_SUFFIX.trim_start().to_string(), None);
    }
    let room = NAME_MAX - CN_SUFFIX.chars().count();
    let cn = format!("{}{CN_SUFFIX}", first_chars(school, room).trim_end());
    (
        cn,
        Some(first_chars(school, NAME_MAX).trim_end().to_string()),
    )
}

fn first_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The validity of a CA made on `today` (UTC): from the day before, so that a device
/// whose clock is a little behind still accepts it, for [`VALIDITY_YEARS`] (29 February
/// becomes 28 February). `None` only for dates at the end of the calendar.
pub fn validity(today: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
    let from = today.pred_opt()?;
    let until = from.checked_add_months(Months::new(12 * VALIDITY_YEARS))?;
    Some((from, until))
}

/// Where devices download the certificate from the enrolment listener at `listen`. A
/// listener on every address (`0.0.0.0`) cannot know the name devices reach it by, so
/// the URL says where that goes.
pub fn download_base(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        format!("http://<this server's address>:{}", listen.port())
    } else {
        format!("http://{listen}")
    }
}

/// What [`init`] made.
#[derive(Debug)]
pub struct Created {
    /// The new certificate, as read back.
    pub cert: CaCert,
    /// Files of a previous CA that were replaced (only with `force`).
    pub replaced: Vec<PathBuf>,
}

/// Makes the school CA for `school` at the paths in `settings`, valid from the day before
/// `today` for [`VALIDITY_YEARS`]. Refuses ([`CaError::Exists`]) when either file exists,
/// unless `force`.
pub fn init(
    settings: &InspectionSettings,
    school: &str,
    force: bool,
    today: NaiveDate,
) -> Result<Created, CaError> {
    let (cert_path, key_path) = (&settings.ca_cert, &settings.ca_key);
    let existing: Vec<PathBuf> = [cert_path, key_path]
        .into_iter()
        .filter(|p| fs::symlink_metadata(p).is_ok())
        .cloned()
        .collect();
    if !existing.is_empty() && !force {
        return Err(CaError::Exists { existing });
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params(school, today, random_serial()?)?.self_signed(&key)?;
    let cert_pem = cert.pem();
    // Both files are complete and on disk before either replaces anything: an error
    // before the renames leaves the old CA whole.
    let key_file = Staged::write(key_path, key.serialize_pem().as_bytes(), 0o600, 0o700)?;
    let cert_file = Staged::write(cert_path, cert_pem.as_bytes(), 0o644, 0o755)?;
    key_file.commit()?;
    cert_file.commit()?;
    Ok(Created {
        cert: CaCert::parse(cert_path, cert_pem.as_bytes())?,
        replaced: existing,
    })
}

/// The certificate's contents: subject naming the school, CA:TRUE with path length 0
/// (it signs server certificates itself, never another CA), key usage limited to
/// signing certificates and revocation lists, the validity from [`validity`].
fn params(
    school: &str,
    today: NaiveDate,
    serial: rcgen::SerialNumber,
) -> Result<rcgen::CertificateParams, CaError> {
    let mut params = rcgen::CertificateParams::default();
    let (cn, organisation) = subject_names(school);
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, cn);
    if let Some(o) = organisation {
        name.push(rcgen::DnType::OrganizationName, o);
    }
    params.distinguished_name = name;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let (from, until) = validity(today).ok_or(CaError::Generate(rcgen::Error::Time))?;
    let ymd = |d: NaiveDate| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    params.not_before = ymd(from);
    params.not_after = ymd(until);
    params.serial_number = Some(serial);
    Ok(params)
}

/// A random, positive 16-byte serial number: RFC 5280 allows up to 20 bytes, and
/// browsers expect at least 64 bits of randomness in it.
fn random_serial() -> Result<rcgen::SerialNumber, CaError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    // Positive, and no leading zero byte for DER to strip.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

/// The unix permission bits of `path`, `None` if it does not exist: `check` warns when
/// the CA key can be read by anyone but its owner.
pub fn mode_of(path: &Path) -> Result<Option<u32>, CaError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.permissions().mode() & 0o7777)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CaError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A file written in full beside its destination, not yet in place; removed if dropped
/// before [`Staged::commit`].
struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    done: bool,
}

impl Staged {
    /// Writes `bytes` to a temporary file beside `path` with permissions `mode` (exactly:
    /// set after creating, whatever the umask) and fsyncs it. A missing directory is
    /// made with `dir_mode`.
    fn write(path: &Path, bytes: &[u8], mode: u32, dir_mode: u32) -> Result<Staged, CaError> {
        let io = |source| CaError::Io {
            path: path.to_path_buf(),
            source,
        };
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a file name",
            ))
        })?;
        let dir = parent_of(path);
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(dir_mode)
                .create(dir)
                .map_err(io)?;
        }
        let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
        let staged = Staged {
            tmp,
            path: path.to_path_buf(),
            done: false,
        };
        match fs::remove_file(&staged.tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&staged.tmp)
            .map_err(io)?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(staged)
    }

    /// Renames the file into place and fsyncs the directory, so the rename survives a
    /// power cut.
    fn commit(mut self) -> Result<(), CaError> {
        let io = |source| CaError::Io {
            path: self.path.clone(),
            source,
        };
        fs::rename(&self.tmp, &self.path).map_err(io)?;
        self.done = true;
        fs::File::open(parent_of(&self.path))
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_table() {
        let rows: [(&[u8], &str); 4] = [
            (&[], ""),
            (&[0x00], "00"),
            (&[0xab, 0x01, 0xff], "AB:01:FF"),
            (&[0x0f, 0xf0, 0x10, 0x9a], "0F:F0:10:9A"),
        ];
        for (digest, expected) in rows {
            assert_eq!(fingerprint(digest), expected, "{digest:?}");
        }
        // A SHA-256 is 32 pairs and 31 colons.
        let sha = fingerprint(ring::digest::digest(&ring::digest::SHA256, b"abc").as_ref());
        assert_eq!(sha.len(), 32 * 3 - 1);
        assert!(sha.starts_with("BA:78:16:BF:8F:01:CF:EA"), "{sha}");
    }

    #[test]
    fn subject_names_table() {
        let long = "The Very Long Name of a Multi-Academy Trust in the East of England";
        let rows = [
            (
                "Example Academy Trust",
                "Example Academy Trust Gatehouse inspection CA",
                Some("Example Academy Trust"),
            ),
            (
                "  St Mary's C of E Primary  ",
                "St Mary's C of E Primary Gatehouse inspection CA",
                Some("St Mary's C of E Primary"),
            ),
            ("", "Gatehouse inspection CA", None),
            (
                long,
                "The Very Long Name of a Multi-Academy Tr Gatehouse inspection CA",
                Some("The Very Long Name of a Multi-Academy Trust in the East of Engla"),
            ),
            (
                "Ysgol Gymraeg Aberystwyth ŵŷ",
                "Ysgol Gymraeg Aberystwyth ŵŷ Gatehouse inspection CA",
                Some("Ysgol Gymraeg Aberystwyth ŵŷ"),
            ),
        ];
        for (school, cn, o) in rows {
            let (got_cn, got_o) = subject_names(school);
            assert_eq!(got_cn, cn, "{school}");
            assert_eq!(got_o.as_deref(), o, "{school}");
            assert!(got_cn.chars().count() <= NAME_MAX, "{got_cn}");
        }
    }

    #[test]
    fn validity_table() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date");
        let rows = [
            ("2026-12-04", "2026-12-03", "2036-12-03"),
            ("2026-01-01", "2025-12-31", "2035-12-31"),
            // Made on 1 March of a leap year: from 29 February, to 28 February.
            ("2028-03-01", "2028-02-29", "2038-02-28"),
        ];
        for (today, from, until) in rows {
            assert_eq!(validity(d(today)), Some((d(from), d(until))), "{today}");
        }
    }

    #[test]
    fn download_base_table() {
        let rows = [
            ("0.0.0.0:8081", "http://<this server's address>:8081"),
            ("[::]:80", "http://<this server's address>:80"),
            ("10.1.2.3:8081", "http://10.1.2.3:8081"),
            ("[2001:db8::1]:8081", "http://[2001:db8::1]:8081"),
        ];
        for (listen, expected) in rows {
            let addr: SocketAddr = listen.parse().expect("test address");
            assert_eq!(download_base(addr), expected);
        }
    }

    #[test]
    fn init_writes_a_ca_and_refuses_to_overwrite_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = InspectionSettings {
            ca_cert: dir.path().join("ca/ca.crt"),
            ca_key: dir.path().join("ca/ca.key"),
            enrol_listen: None,
            extra_roots: Vec::new(),
            leaf_cache_size: 1,
            leaf_validity: std::time::Duration::from_secs(3600),
        };
        let today = NaiveDate::from_ymd_opt(2026, 12, 4).expect("date");
        let made = init(&settings, "Test School", false, today).expect("init");
        assert!(made.replaced.is_empty());
        assert_eq!(
            made.cert.subject,
            "CN=Test School Gatehouse inspection CA, O=Test School"
        );
        assert_eq!(
            made.cert.not_before.to_rfc3339(),
            "2026-12-03T00:00:00+00:00"
        );
        assert_eq!(
            made.cert.not_after.to_rfc3339(),
            "2036-12-03T00:00:00+00:00"
        );
        assert_eq!(mode_of(&settings.ca_key).expect("mode"), Some(0o600));
        assert_eq!(mode_of(&dir.path().join("ca")).expect("mode"), Some(0o700));
        let read = CaCert::load(&settings.ca_cert).expect("reads back");
        assert_eq!(read.sha256, made.cert.sha256);
        assert_eq!(read.der, made.cert.der);

        let key_before = fs::read(&settings.ca_key).expect("key");
        let refused = init(&settings, "Test School", false, today).expect_err("exists");
        assert!(matches!(refused, CaError::Exists { ref existing } if existing.len() == 2));
        assert!(refused.to_string().contains("enrolled again"), "{refused}");
        assert_eq!(fs::read(&settings.ca_key).expect("key"), key_before);

        let again = init(&settings, "Test School", true, today).expect("forced");
        assert_eq!(again.replaced.len(), 2);
        assert_ne!(again.cert.sha256, made.cert.sha256, "a new key and serial");
        assert_ne!(fs::read(&settings.ca_key).expect("key"), key_before);
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("ca"))
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn unusable_certificate_files_are_named() {
        let path = Path::new("/x/ca.crt");
        let rows: [(&[u8], &str); 3] = [
            (b"", "not an X.509 certificate"),
            (
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "no CERTIFICATE block",
            ),
            (b"hello", "not an X.509 certificate"),
        ];
        for (bytes, expected) in rows {
            let e = CaCert::parse(path, bytes).expect_err("refused");
            let text = e.to_string();
            assert!(
                text.starts_with("/x/ca.crt: not a usable CA certificate")
                    && text.contains(expected),
                "{text}"
            );
        }
        // A certificate that is not a CA's is refused too.
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["leaf.test".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("leaf");
        let e = CaCert::parse(path, leaf.pem().as_bytes()).expect_err("not a CA");
        assert!(e.to_string().contains("not a CA certificate"), "{e}");
        assert!(matches!(
            CaCert::load(Path::new("/nonexistent/ca.crt")),
            Err(CaError::Missing { .. })
        ));
    }
}
