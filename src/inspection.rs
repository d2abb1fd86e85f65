//! TLS inspection, the machinery: the school CA's signing half, the leaf certificates it
//! mints for inspected tunnels (kept in a bounded cache), and the TLS settings for both
//! sides of an inspected tunnel.
//!
//! [`InspectionTls::load`] reads the CA's certificate and key (when both files are there)
//! with the snapshot, so a reload that changes the CA takes effect whole. Every leaf is
//! signed with one ECDSA P-256 key made at start-up (minting then costs one signature,
//! not a key generation), names its host in the subject alternative name (a DNS name,
//! or an IP address for a tunnel to a bare address), is valid for
//! `[inspection] leaf_validity_hours` from an hour ago (clock skew), and is served with
//! the CA certificate after it.
//!
//! Upstream, inspected tunnels verify the server fully ([`InspectionTls::upstream`]):
//! the Mozilla roots (`webpki-roots`) plus `[inspection] extra_roots`, the host's name,
//! dates and usage. Nothing here lets an invalid certificate through.
//!
//! Shell, not core: it reads files, the clock and the system's random numbers.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::sign::CertifiedKey;

use crate::ca::CaError;
use crate::core::host::Host;
use crate::settings::InspectionSettings;

/// ALPN offered to clients of inspected tunnels: HTTP/2 first, as origins do.
const CLIENT_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why inspection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InspectionError {
    /// The CA's certificate could not be read.
    #[error("{0}")]
    Ca(#[from] CaError),
    /// The CA's key could not be read or used.
    #[error("{}: the school CA's key cannot be used: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An extra root could not be read.
    #[error("{}: [inspection] extra_roots: {reason}", path.display())]
    Root {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Making a key or a TLS setting failed.
    #[error("setting up TLS inspection: {0}")]
    Setup(String),
}

/// The CA's signing half and the TLS settings, for one snapshot.
pub struct InspectionTls {
    /// The CA certificate as rcgen's issuer.
    issuer: rcgen::Certificate,
    issuer_key: rcgen::KeyPair,
    /// The CA certificate, DER, sent after every leaf.
    ca_der: CertificateDer<'static>,
    /// SHA-256 of the CA certificate: which CA a cached leaf was signed by.
    pub ca_sha256: [u8; 32],
    /// The one key every leaf certifies.
    leaf_key: rcgen::KeyPair,
    leaf_signer: Arc<dyn rustls::sign::SigningKey>,
    /// Upstream TLS: full verification, ALPN http/1.1.
    pub upstream: Arc<rustls::ClientConfig>,
    /// Leaf validity.
    pub validity: Duration,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl InspectionTls {
    /// Reads the CA at `settings`' paths and the extra roots. `Ok(None)` when there is
    /// no CA certificate file, or no key beside it (a node that only serves the
    /// certificate for enrolment): inspection is then unavailable.
    pub fn load(settings: &InspectionSettings) -> Result<Option<InspectionTls>, InspectionError> {
        if !settings.ca_cert.exists() || !settings.ca_key.exists() {
            return Ok(None);
        }
        let cert = crate::ca::CaCert::load(&settings.ca_cert)?;
        let key_err = |reason: String| InspectionError::Key {
            path: settings.ca_key.clone(),
            reason,
        };
        let key_pem =
            std::fs::read_to_string(&settings.ca_key).map_err(|e| key_err(e.to_string()))?;
        let issuer_key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| key_err(e.to_string()))?;
        let ca_der = CertificateDer::from(cert.der.clone());
        let params = rcgen::CertificateParams::from_ca_cert_der(&ca_der)
            .map_err(|e| key_err(format!("the certificate cannot be used to sign: {e}")))?;
        // rcgen signs with the issuer's name and key identifier; re-signing the CA's own
        // parameters with its key gives it both (the certificate made is not served).
        let issuer = params
            .self_signed(&issuer_key)
            .map_err(|e| key_err(e.to_string()))?;
        if issuer_key.public_key_der() != public_key_of(&cert.der).unwrap_or_default() {
            return Err(key_err(format!(
                "it is not the key of the certificate {}",
                settings.ca_cert.display()
            )));
        }
        let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| InspectionError::Setup(e.to_string()))?;
        let leaf_signer = rustls::crypto::ring::sign::any_ecdsa_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        ))
        .map_err(|e| InspectionError::Setup(e.to_string()))?;
        let roots = upstream_roots(&settings.extra_roots)?;
        let mut upstream = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| InspectionError::Setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Upstream connections are pooled HTTP/1.1.
        upstream.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut sha = [0u8; 32];
        sha.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &cert.der).as_ref());
        Ok(Some(InspectionTls {
            issuer,
            issuer_key,
            ca_der,
            ca_sha256: sha,
            leaf_key,
            leaf_signer,
            upstream: Arc::new(upstream),
            validity: settings.leaf_validity,
        }))
    }

    /// Mints a leaf certificate for `host`, valid from an hour ago for the validity.
    pub fn mint(&self, host: &Host) -> Result<CertifiedKey, InspectionError> {
        let setup = |e: rcgen::Error| InspectionError::Setup(e.to_string());
        let mut params = rcgen::CertificateParams::default();
        let text = host.to_string();
        let bare = text.trim_start_matches('[').trim_end_matches(']');
        params.subject_alt_names = vec![match bare.parse::<IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(bare.try_into().map_err(setup)?),
        }];
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::CommonName, bare);
        params.distinguished_name = name;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::seconds(self.validity.as_secs() as i64);
        params.serial_number = Some(random_serial()?);
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer, &self.issuer_key)
            .map_err(setup)?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.ca_der.clone()],
            self.leaf_signer.clone(),
        ))
    }

    /// The server settings for one inspected tunnel: `leaf`, ALPN h2 and http/1.1, and
    /// the shared session cache and ticketer (so clients resume across tunnels).
    pub fn server_config(
        &self,
        leaf: Arc<CertifiedKey>,
        sessions: &Sessions,
    ) -> Result<rustls::ServerConfig, InspectionError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| InspectionError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(leaf)));
        config.alpn_protocols = CLIENT_ALPN.iter().map(|p| p.to_vec()).collect();
        config.session_storage = sessions.storage.clone();
        config.ticketer = sessions.ticketer.clone();
        Ok(config)
    }
}

/// The public key (SubjectPublicKeyInfo, DER) of a certificate.
fn public_key_of(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.public_key().raw.to_vec())
}

/// The authorities an upstream server's certificate is checked against: the Mozilla
/// roots and `[inspection] extra_roots` (a school's own CA, or its web filter's). Used
/// by inspected tunnels and by list feeds alike.
pub fn upstream_roots(extra_roots: &[PathBuf]) -> Result<rustls::RootCertStore, InspectionError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for path in extra_roots {
        add_roots(&mut roots, path)?;
    }
    Ok(roots)
}

fn add_roots(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), InspectionError> {
    let err = |reason: String| InspectionError::Root {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let blocks = pem::parse_many(&bytes).map_err(|e| err(format!("bad PEM: {e}")))?;
    let mut added = 0;
    for block in blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE") {
        roots
            .add(CertificateDer::from(block.into_contents()))
            .map_err(|e| err(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(err("no CERTIFICATE block in the file".into()));
    }
    Ok(())
}

fn random_serial() -> Result<rcgen::SerialNumber, InspectionError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| {
            InspectionError::Setup("the operating system gave no random numbers".into())
        })?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

/// One certificate for every handshake of a tunnel: it was minted for the tunnel's name.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// TLS session resumption state shared by every inspected tunnel's server settings.
pub struct Sessions {
    storage: Arc<dyn rustls::server::StoresServerSessions>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
}

impl Sessions {
    /// A session cache of `size` entries and a ticketer with rotating keys.
    pub fn new(size: usize) -> Result<Sessions, InspectionError> {
        Ok(Sessions {
            storage: rustls::server::ServerSessionMemoryCache::new(size),
            ticketer: rustls::crypto::ring::Ticketer::new()
                .map_err(|e| InspectionError::Setup(e.to_string()))?,
        })
    }
}

/// Whether a leaf came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Found, fresh, and from the CA in force.
    Hit,
    /// Minted now.
    Miss,
}

/// Minted leaves by host, least recently used dropped first. An entry is minted again
/// once half its validity has passed, or when the CA has changed since.
pub struct LeafCache {
    leaves: Mutex<lru::LruCache<String, Leaf>>,
}

/// A cached leaf: the certificate and key, the CA that signed it, when it was minted.
type Leaf = (Arc<CertifiedKey>, [u8; 32], Instant);

impl LeafCache {
    /// A cache of `size` leaves (at least one).
    pub fn new(size: usize) -> LeafCache {
        let size = std::num::NonZeroUsize::new(size.max(1)).expect("at least one");
        LeafCache {
            leaves: Mutex::new(lru::LruCache::new(size)),
        }
    }

    /// The leaf for `host` from `tls`'s CA: cached, or minted now.
    pub fn get(
        &self,
        tls: &InspectionTls,
        host: &Host,
    ) -> Result<(Arc<CertifiedKey>, Lookup), InspectionError> {
        let key = host.to_string();
        {
            let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((leaf, ca, minted)) = leaves.get(&key) {
                if *ca == tls.ca_sha256 && minted.elapsed() < tls.validity / 2 {
                    return Ok((leaf.clone(), Lookup::Hit));
                }
            }
        }
        // Minted outside the lock: a signature takes a while, and other hosts' lookups
        // need not wait for it. Two tunnels to a new host may both mint; one is kept.
        let leaf = Arc::new(tls.mint(host)?);
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        leaves.put(key, (leaf.clone(), tls.ca_sha256, Instant::now()));
        Ok((leaf, Lookup::Miss))
    }

    /// Leaves kept.
    pub fn len(&self) -> usize {
        self.leaves.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The name an inspected tunnel's upstream certificate must carry.
pub fn server_name(host: &Host) -> Option<ServerName<'static>> {
    let text = host.to_string();
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string()).ok()
}
