//! The decision log: an append-only, segmented, checksummed and hash-chained store of
//! every decision, grant change and reload — the evidence a safeguarding lead relies on.
//!
//! # On-disk format (version 1)
//!
//! A log directory holds segments named `decisions-<first seq, 20 digits>.ghlog`.
//! A segment is a header followed by frames:
//!
//! ```text
//! header: "GHLOGv01" | node name length (u16 LE) | node name (UTF-8) | first seq (u64 LE)
//!         | previous chain hash (32 bytes) | created (i64 LE, µs since the Unix epoch)
//!         | crc32c of everything before it (u32 LE)
//! frame:  payload length (u32 LE) | crc32c of payload (u32 LE) | payload
//! ```
//!
//! A payload is one [`Entry`] encoded with postcard (serde, varint integers; [`Body`]
//! says how its kinds are stored, and how a decision with safe search enforced became a
//! kind of its own without changing how any earlier entry reads). Sequence
//! numbers start at 1 and rise by one per entry, across segments and restarts. The chain
//! is `c_0 = BLAKE3("gatehouse decision log v1\0" ‖ node)`, `c_i = BLAKE3(c_{i-1} ‖
//! payload_i)`; a segment's header carries the chain value before its first entry, and a
//! [`Body::Seal`] entry, written at every fsync, carries the value before itself. Editing,
//! deleting or reordering any entry breaks the checksums, the sequence, the chain or a
//! seal, and `gatehouse log verify` names the first entry that does not fit.
//!
//! A decision is written before the response it describes (the proxy waits for the
//! writer's acknowledgement that the bytes are with the operating system); how the
//! request ended (status, bytes, duration) follows as a [`Body::Completion`] entry.

pub mod export;
pub mod reader;
pub mod writer;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use crate::core::safe_search::SafeSearchRewrite;
pub use crate::core::verdict::ReasonCode;

/// Segment file magic and version.
pub const MAGIC: &[u8; 8] = b"GHLOGv01";
/// Largest payload accepted when reading (anything larger is corruption).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// One entry in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Sequence number: never repeats, never goes back.
    pub seq: u64,
    /// Microseconds since the Unix epoch, UTC.
    pub time_us: i64,
    /// What happened.
    pub body: Body,
}

/// Allow or block, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredAction {
    /// Allowed.
    Allow,
    /// Blocked.
    Block,
}

impl StoredAction {
    /// `allow` / `block`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoredAction::Allow => "allow",
            StoredAction::Block => "block",
        }
    }
}

/// A decision about one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Client address.
    pub client: IpAddr,
    /// Authenticated user.
    pub user: Option<String>,
    /// Group decided for.
    pub group: String,
    /// HTTP method (`CONNECT` for tunnels).
    pub method: String,
    /// URL for plain HTTP (scheme, host, port, path, query); `host:port` for tunnels.
    pub url: String,
    /// A tunnel's SNI.
    pub sni: Option<String>,
    /// Categories matched, most severe first.
    pub categories: Vec<String>,
    /// Allow or block.
    pub action: StoredAction,
    /// Why: the rule that decided, or the refusal of how the request arrived. Stored as
    /// its name (`category`, `illegal`, `no_sni`, …), as when it was a string.
    pub reason: ReasonCode,
    /// Ticket of the grant that allowed it.
    pub grant: Option<String>,
    /// Status answered (0 for forwarded requests: see the completion).
    pub status: u16,
    /// Search terms of concern found in the query.
    pub terms: Vec<String>,
    /// Safe search enforced: the request was dialled to the engine's safe-search
    /// address. Not part of this struct's own encoding (which stays the shape every
    /// log before it holds): [`Body`]'s encoding stores a decision that has one as a
    /// [`Body`] kind of its own, after the others.
    #[serde(skip)]
    pub safe_search: Option<SafeSearchRewrite>,
    /// Header and parameter controls enforced on the request (`safe=active`,
    /// `YouTube-Restrict: Strict`, …), and `tls-inspected` on an inspected tunnel. Not
    /// part of this struct's own encoding either: a decision that has any is stored as
    /// "decision with extensions", the controls an [`Extension::Enforced`].
    #[serde(skip)]
    pub enforced: Vec<String>,
    /// The client's device name, where known (the policy's `[[identity.devices]]`, or
    /// reverse DNS). Not part of this struct's own encoding either: a decision with one
    /// is stored as "decision with extensions", the name an [`Extension::Device`].
    #[serde(skip)]
    pub device: Option<String>,
    /// Transparent mode: the address the device itself was connecting to
    /// (`SO_ORIGINAL_DST`), before the firewall redirected it to Gatehouse. Not part of
    /// this struct's own encoding either: stored as an [`Extension::Transparent`].
    #[serde(skip)]
    pub original_destination: Option<String>,
}

/// What an entry records.
///
/// Its encoding is the format: postcard stores a variant as its index, so the variants
/// below are stored in this order, and a new kind of entry goes at the end. A
/// [`Body::Decision`] with safe search enforced is stored as an eighth kind,
/// "decision with safe search" (the decision's fields as before, then the
/// [`SafeSearchRewrite`]); without it, as the first kind, byte for byte as before. So
/// logs written before the field read unchanged, and a log holds both. A decision that
/// carries more than safe search — controls enforced ([`Decision::enforced`]), a device
/// name ([`Decision::device`]), transparent mode's original destination
/// ([`Decision::original_destination`]) — is
/// stored as the eleventh kind, "decision with extensions": the decision's fields, then
/// a list of [`Extension`]s. Whatever a decision comes to carry later is a new
/// `Extension` variant at the end of that enum, never another kind of entry.
// Decisions are nearly every entry, so boxing them to shrink the rare kinds would add an
// allocation to almost every record for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A verdict.
    Decision(Decision),
    /// How a forwarded request ended.
    Completion {
        /// The decision's sequence number.
        of: u64,
        /// Upstream status.
        status: u16,
        /// Bytes client → upstream.
        bytes_up: u64,
        /// Bytes upstream → client.
        bytes_down: u64,
        /// Duration in microseconds.
        duration_us: u64,
    },
    /// A policy, list or grants reload, good or refused.
    Reload {
        /// What was reloaded.
        what: ReloadKind,
        /// Whether it took effect.
        ok: bool,
        /// Errors, or a summary.
        detail: String,
    },
    /// A grant added, revoked, removed or expired, or an admin API call about grants
    /// and decisions (the audit trail).
    Grant {
        /// What happened.
        action: GrantEvent,
        /// Grant id.
        id: String,
        /// Ticket.
        ticket: String,
        /// Who.
        by: String,
        /// What, and why.
        detail: String,
    },
    /// The chain value before this entry, written at every fsync.
    Seal {
        /// Chain hash.
        chain: [u8; 32],
    },
    /// Segments deleted by retention.
    Retention {
        /// Their file names.
        deleted: Vec<String>,
    },
    /// The proxy started (or the log was opened) with this version.
    Start {
        /// Gatehouse version.
        version: String,
    },
    // New variants go here, at the end: postcard stores the variant's index.
    /// A safeguarding alert delivered on one channel, or an attempt that failed (it
    /// stays in the outbox and is retried).
    Alert {
        /// The outbox entry's id.
        id: u64,
        /// `email` or `webhook`.
        channel: String,
        /// Whether this attempt delivered it.
        sent: bool,
        /// Which attempt this was (1 for the first).
        attempt: u32,
        /// What it was about (category and person, `digest`, or `test`).
        subject: String,
        /// The sequence number of the decision it reports (0 for a digest or a test).
        of: u64,
        /// Why an attempt failed, or how many attempts the alert stood for.
        detail: String,
    },
    /// The DSL (or a deputy) acknowledged the alerts about a decision: someone has
    /// picked the concern up. Appended after [`Body::Alert`]; logs before it read
    /// unchanged.
    AlertAck {
        /// The sequence number of the decision whose alerts are acknowledged.
        of: u64,
        /// Who acknowledged (the name given, and the token it came through).
        by: String,
        /// What they are doing about it (may be empty).
        note: String,
    },
    /// The web console: a sign-in (ok, failed or locked out), a sign-out, or an action
    /// taken or refused there. Stored as the twelfth kind (index 11), after "decision
    /// with extensions"; logs before it read unchanged.
    Console {
        /// The account (as typed, for a failed sign-in).
        who: String,
        /// Its console role (`-` when unknown: a failed sign-in).
        role: String,
        /// What: `sign-in`, `sign-in failed`, `sign-in locked`, `sign-out`, `grant`,
        /// `revoke`, `ack`, `lookup`, `refused`, …
        action: String,
        /// The client address, the page, and what was done or why it was refused.
        detail: String,
    },
}

/// [`Body`] as stored, for writing: each kind borrowed from the body, in the stored
/// order. [`Stored`] is the same shape, owned, for reading; a test holds them together.
#[derive(Serialize)]
enum StoredRef<'a> {
    Decision(&'a Decision),
    Completion {
        of: u64,
        status: u16,
        bytes_up: u64,
        bytes_down: u64,
        duration_us: u64,
    },
    Reload {
        what: ReloadKind,
        ok: bool,
        detail: &'a str,
    },
    Grant {
        action: &'a GrantEvent,
        id: &'a str,
        ticket: &'a str,
        by: &'a str,
        detail: &'a str,
    },
    Seal {
        chain: &'a [u8; 32],
    },
    Retention {
        deleted: &'a [String],
    },
    Start {
        version: &'a str,
    },
    SafeSearchDecision(&'a Decision, &'a SafeSearchRewrite),
    Alert {
        id: u64,
        channel: &'a str,
        sent: bool,
        attempt: u32,
        subject: &'a str,
        of: u64,
        detail: &'a str,
    },
    AlertAck {
        of: u64,
        by: &'a str,
        note: &'a str,
    },
    ExtendedDecision(&'a Decision, Vec<ExtensionRef<'a>>),
    Console {
        who: &'a str,
        role: &'a str,
        action: &'a str,
        detail: &'a str,
    },
}

/// What a decision carries beyond its own fields, in the "decision with extensions"
/// entry. Stored by index like [`Body`]: a new extension goes at the end.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub enum Extension {
    /// The safe-search rewrite ([`Decision::safe_search`]).
    SafeSearch(SafeSearchRewrite),
    /// Controls enforced ([`Decision::enforced`]).
    Enforced(Vec<String>),
    /// The client's device name ([`Decision::device`]).
    Device(String),
    /// A connection redirected to transparent mode: where the device was connecting to
    /// ([`Decision::original_destination`]).
    Transparent {
        /// `address:port`, as the device dialled it.
        original_destination: String,
    },
}

/// [`Extension`] borrowed, for writing.
#[derive(Serialize)]
enum ExtensionRef<'a> {
    SafeSearch(&'a SafeSearchRewrite),
    Enforced(&'a [String]),
    Device(&'a str),
    Transparent { original_destination: &'a str },
}

impl Decision {
    /// The extensions this decision carries, in stored order; empty for a plain one.
    fn extensions(&self) -> Vec<ExtensionRef<'_>> {
        let mut out = Vec::new();
        if let Some(rewrite) = &self.safe_search {
            out.push(ExtensionRef::SafeSearch(rewrite));
        }
        if !self.enforced.is_empty() {
            out.push(ExtensionRef::Enforced(&self.enforced));
        }
        if let Some(device) = &self.device {
            out.push(ExtensionRef::Device(device));
        }
        if let Some(original_destination) = &self.original_destination {
            out.push(ExtensionRef::Transparent {
                original_destination,
            });
        }
        out
    }

    /// This decision with `extensions` applied.
    fn extended(mut self, extensions: Vec<Extension>) -> Decision {
        for e in extensions {
            match e {
                Extension::SafeSearch(rewrite) => self.safe_search = Some(rewrite),
                Extension::Enforced(controls) => self.enforced = controls,
                Extension::Device(device) => self.device = Some(device),
                Extension::Transparent {
                    original_destination,
                } => self.original_destination = Some(original_destination),
            }
        }
        self
    }
}

/// [`Body`] as stored, for reading (see [`StoredRef`]).
#[derive(Deserialize)]
enum Stored {
    Decision(Decision),
    Completion {
        of: u64,
        status: u16,
        bytes_up: u64,
        bytes_down: u64,
        duration_us: u64,
    },
    Reload {
        what: ReloadKind,
        ok: bool,
        detail: String,
    },
    Grant {
        action: GrantEvent,
        id: String,
        ticket: String,
        by: String,
        detail: String,
    },
    Seal {
        chain: [u8; 32],
    },
    Retention {
        deleted: Vec<String>,
    },
    Start {
        version: String,
    },
    SafeSearchDecision(Decision, SafeSearchRewrite),
    Alert {
        id: u64,
        channel: String,
        sent: bool,
        attempt: u32,
        subject: String,
        of: u64,
        detail: String,
    },
    AlertAck {
        of: u64,
        by: String,
        note: String,
    },
    ExtendedDecision(Decision, Vec<Extension>),
    Console {
        who: String,
        role: String,
        action: String,
        detail: String,
    },
}

impl Serialize for Body {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let stored = match self {
            // More than safe search: the extensible kind.
            Body::Decision(d)
                if !d.enforced.is_empty()
                    || d.device.is_some()
                    || d.original_destination.is_some() =>
            {
                StoredRef::ExtendedDecision(d, d.extensions())
            }
            Body::Decision(d) => match &d.safe_search {
                None => StoredRef::Decision(d),
                Some(rewrite) => StoredRef::SafeSearchDecision(d, rewrite),
            },
            Body::Completion {
                of,
                status,
                bytes_up,
                bytes_down,
                duration_us,
            } => StoredRef::Completion {
                of: *of,
                status: *status,
                bytes_up: *bytes_up,
                bytes_down: *bytes_down,
                duration_us: *duration_us,
            },
            Body::Reload { what, ok, detail } => StoredRef::Reload {
                what: *what,
                ok: *ok,
                detail,
            },
            Body::Grant {
                action,
                id,
                ticket,
                by,
                detail,
            } => StoredRef::Grant {
                action,
                id,
                ticket,
                by,
                detail,
            },
            Body::Seal { chain } => StoredRef::Seal { chain },
            Body::Retention { deleted } => StoredRef::Retention { deleted },
            Body::Start { version } => StoredRef::Start { version },
            Body::Alert {
                id,
                channel,
                sent,
                attempt,
                subject,
                of,
                detail,
            } => StoredRef::Alert {
                id: *id,
                channel,
                sent: *sent,
                attempt: *attempt,
                subject,
                of: *of,
                detail,
            },
            Body::AlertAck { of, by, note } => StoredRef::AlertAck { of: *of, by, note },
            Body::Console {
                who,
                role,
                action,
                detail,
            } => StoredRef::Console {
                who,
                role,
                action,
                detail,
            },
        };
        stored.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Stored::deserialize(deserializer)? {
            Stored::Decision(d) => Body::Decision(d),
            Stored::SafeSearchDecision(d, rewrite) => Body::Decision(Decision {
                safe_search: Some(rewrite),
                ..d
            }),
            Stored::ExtendedDecision(d, extensions) => Body::Decision(d.extended(extensions)),
            Stored::Completion {
                of,
                status,
                bytes_up,
                bytes_down,
                duration_us,
            } => Body::Completion {
                of,
                status,
                bytes_up,
                bytes_down,
                duration_us,
            },
            Stored::Reload { what, ok, detail } => Body::Reload { what, ok, detail },
            Stored::Grant {
                action,
                id,
                ticket,
                by,
                detail,
            } => Body::Grant {
                action,
                id,
                ticket,
                by,
                detail,
            },
            Stored::Seal { chain } => Body::Seal { chain },
            Stored::Retention { deleted } => Body::Retention { deleted },
            Stored::Start { version } => Body::Start { version },
            Stored::Alert {
                id,
                channel,
                sent,
                attempt,
                subject,
                of,
                detail,
            } => Body::Alert {
                id,
                channel,
                sent,
                attempt,
                subject,
                of,
                detail,
            },
            Stored::AlertAck { of, by, note } => Body::AlertAck { of, by, note },
            Stored::Console {
                who,
                role,
                action,
                detail,
            } => Body::Console {
                who,
                role,
                action,
                detail,
            },
        })
    }
}

/// What a [`Body::Reload`] reloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadKind {
    /// The policy and its lists.
    Policy,
    /// The grants file.
    Grants,
    /// A list feed's update (`[[lists.sources]]`): fetched, refused, or not modified.
    Lists,
}

impl ReloadKind {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadKind::Policy => "policy",
            ReloadKind::Grants => "grants",
            ReloadKind::Lists => "lists",
        }
    }

    fn parse(name: &str) -> Option<ReloadKind> {
        [ReloadKind::Policy, ReloadKind::Grants, ReloadKind::Lists]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// What a [`Body::Grant`] entry records: a change to the grants in force, or a call to
/// the admin API (who looked at grants or decisions, and which calls were refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantEvent {
    /// A grant appeared in the grants file.
    Added,
    /// A grant was revoked (`grant revoke`, `DELETE /api/grants/{id}`).
    Revoked,
    /// A grant left the grants file without being revoked (a hand edit).
    Removed,
    /// A grant ran out.
    Expired,
    /// `GET /api/grants`.
    ApiList,
    /// `GET /api/decisions/{reference}`.
    ApiShow,
    /// An admin API call that was refused. It names the call: the HTTP method when the
    /// caller may not make it (no valid token, a viewer writing), or the operation
    /// (`add`, `revoke`) when the request itself was invalid.
    ApiRefused(String),
}

impl GrantEvent {
    /// The text stored and shown (`added`, `api list`, `api POST refused`).
    pub fn text(&self) -> std::borrow::Cow<'static, str> {
        match self {
            GrantEvent::Added => "added".into(),
            GrantEvent::Revoked => "revoked".into(),
            GrantEvent::Removed => "removed".into(),
            GrantEvent::Expired => "expired".into(),
            GrantEvent::ApiList => "api list".into(),
            GrantEvent::ApiShow => "api show".into(),
            GrantEvent::ApiRefused(call) => format!("api {call} refused").into(),
        }
    }

    /// The event a stored text names.
    pub fn parse(text: &str) -> Option<GrantEvent> {
        Some(match text {
            "added" => GrantEvent::Added,
            "revoked" => GrantEvent::Revoked,
            "removed" => GrantEvent::Removed,
            "expired" => GrantEvent::Expired,
            "api list" => GrantEvent::ApiList,
            "api show" => GrantEvent::ApiShow,
            _ => {
                let call = text.strip_prefix("api ")?.strip_suffix(" refused")?;
                GrantEvent::ApiRefused(call.to_string())
            }
        })
    }
}

impl std::fmt::Display for GrantEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

impl std::fmt::Display for ReloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// Both are stored as their text, as when they were strings: logs written before the
// enums read back unchanged, and an unknown text is an error, not another event.
impl Serialize for GrantEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text())
    }
}

impl<'de> Deserialize<'de> for GrantEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        GrantEvent::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format_args!("unknown grant event {text:?}")))
    }
}

impl Serialize for ReloadKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ReloadKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ReloadKind::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format_args!("unknown reload kind {text:?}")))
    }
}

/// The chain's starting value for a node.
pub fn genesis(node: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"gatehouse decision log v1\0");
    h.update(node.as_bytes());
    *h.finalize().as_bytes()
}

/// The next chain value.
pub fn chain_next(prev: &[u8; 32], payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(prev);
    h.update(payload);
    *h.finalize().as_bytes()
}

/// A segment's file name.
pub fn segment_name(first_seq: u64) -> String {
    format!("decisions-{first_seq:020}.ghlog")
}

/// The first sequence number from a segment's file name.
pub fn segment_first_seq(name: &str) -> Option<u64> {
    name.strip_prefix("decisions-")?
        .strip_suffix(".ghlog")?
        .parse()
        .ok()
}

/// A segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Node that wrote it.
    pub node: String,
    /// Sequence number of its first entry.
    pub first_seq: u64,
    /// Chain value before its first entry.
    pub prev_chain: [u8; 32],
    /// When it was created (µs).
    pub created_us: i64,
}

impl SegmentHeader {
    /// Encodes the header with its checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.node.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.node.len() as u16).to_le_bytes());
        out.extend_from_slice(self.node.as_bytes());
        out.extend_from_slice(&self.first_seq.to_le_bytes());
        out.extend_from_slice(&self.prev_chain);
        out.extend_from_slice(&self.created_us.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a header from the start of `bytes`; its length in bytes.
    pub fn decode(bytes: &[u8]) -> Result<(SegmentHeader, usize), HeaderError> {
        if bytes.len() < 10 || &bytes[..8] != MAGIC {
            return Err(HeaderError::NotASegment);
        }
        let node_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        let len = 10 + node_len + 8 + 32 + 8 + 4;
        if bytes.len() < len {
            return Err(HeaderError::Truncated);
        }
        let crc = u32::from_le_bytes(le_bytes(bytes, len - 4)?);
        if crc32c::crc32c(&bytes[..len - 4]) != crc {
            return Err(HeaderError::BadChecksum);
        }
        let node = String::from_utf8(bytes[10..10 + node_len].to_vec())
            .map_err(|_| HeaderError::NodeNotUtf8)?;
        let mut pos = 10 + node_len;
        let first_seq = u64::from_le_bytes(le_bytes(bytes, pos)?);
        pos += 8;
        let prev_chain = le_bytes(bytes, pos)?;
        pos += 32;
        let created_us = i64::from_le_bytes(le_bytes(bytes, pos)?);
        Ok((
            SegmentHeader {
                node,
                first_seq,
                prev_chain,
                created_us,
            },
            len,
        ))
    }
}

/// The `N` bytes of `bytes` at `at`; a header shorter than its fields is truncated.
fn le_bytes<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], HeaderError> {
    bytes
        .get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .ok_or(HeaderError::Truncated)
}

/// Why the start of a file is not a segment header. The reader adds the file's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Another kind of file, or a segment of a format version this build cannot read.
    #[error("not a Gatehouse decision-log segment (bad magic or version)")]
    NotASegment,
    /// The file ends inside the header: its creation was cut short (a crash or a full
    /// disk as the segment started), so it holds no entry.
    #[error("segment header is truncated")]
    Truncated,
    /// The header's bytes were changed after it was written.
    #[error("segment header checksum does not match")]
    BadChecksum,
    /// The node name is not UTF-8 (the checksum matched, so it was written so).
    #[error("node name is not UTF-8")]
    NodeNotUtf8,
}

/// Frames a payload: length, checksum, bytes.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_damage() {
        let h = SegmentHeader {
            node: "gh-1".into(),
            first_seq: 42,
            prev_chain: [7; 32],
            created_us: 1_700_000_000_000_000,
        };
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok((h, bytes.len())));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(SegmentHeader::decode(&bad).is_err(), "byte {i}");
        }
        assert!(SegmentHeader::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn events_are_stored_as_their_text() {
        let events = [
            (GrantEvent::Added, "added"),
            (GrantEvent::Revoked, "revoked"),
            (GrantEvent::Removed, "removed"),
            (GrantEvent::Expired, "expired"),
            (GrantEvent::ApiList, "api list"),
            (GrantEvent::ApiShow, "api show"),
            (GrantEvent::ApiRefused("POST".into()), "api POST refused"),
            (
                GrantEvent::ApiRefused("revoke".into()),
                "api revoke refused",
            ),
        ];
        for (event, text) in events {
            assert_eq!(event.text(), text);
            // The bytes are the string's: logs from before the enum still read.
            let bytes = postcard::to_stdvec(&event).expect("encodes");
            assert_eq!(bytes, postcard::to_stdvec(text).expect("encodes"));
            assert_eq!(postcard::from_bytes::<GrantEvent>(&bytes).ok(), Some(event));
        }
        for kind in [ReloadKind::Policy, ReloadKind::Grants, ReloadKind::Lists] {
            let bytes = postcard::to_stdvec(&kind).expect("encodes");
            assert_eq!(bytes, postcard::to_stdvec(kind.as_str()).expect("encodes"));
            assert_eq!(postcard::from_bytes::<ReloadKind>(&bytes).ok(), Some(kind));
        }
        for unknown in ["granted", "api list please", ""] {
            let bytes = postcard::to_stdvec(unknown).expect("encodes");
            assert!(
                postcard::from_bytes::<GrantEvent>(&bytes).is_err(),
                "{unknown:?}"
            );
        }
    }

    fn decision(safe_search: Option<SafeSearchRewrite>) -> Decision {
        Decision {
            client: IpAddr::from([10, 20, 3, 4]),
            user: Some("amy".into()),
            group: "ks2".into(),
            method: "CONNECT".into(),
            url: "www.google.com:443".into(),
            sni: Some("www.google.com".into()),
            categories: vec!["search".into()],
            action: StoredAction::Allow,
            reason: ReasonCode::Mode,
            grant: None,
            status: 200,
            terms: vec!["term".into()],
            enforced: Vec::new(),
            safe_search,
            device: None,
            original_destination: None,
        }
    }

    fn on_device(safe_search: Option<SafeSearchRewrite>) -> Decision {
        Decision {
            device: Some("ks2-laptop-17.school.local".into()),
            ..decision(safe_search)
        }
    }

    fn rewrite() -> SafeSearchRewrite {
        SafeSearchRewrite {
            engine: "google".into(),
            level: crate::core::safe_search::Level::Strict,
            dialled: "forcesafesearch.google.com".into(),
        }
    }

    /// The entry types as they were before safe search, copied: what every log written
    /// until then holds.
    mod old {
        use super::super::{GrantEvent, ReasonCode, ReloadKind, StoredAction};
        use serde::Serialize;
        use std::net::IpAddr;

        #[derive(Serialize)]
        pub struct Entry {
            pub seq: u64,
            pub time_us: i64,
            pub body: Body,
        }

        #[derive(Serialize)]
        pub struct Decision {
            pub client: IpAddr,
            pub user: Option<String>,
            pub group: String,
            pub method: String,
            pub url: String,
            pub sni: Option<String>,
            pub categories: Vec<String>,
            pub action: StoredAction,
            pub reason: ReasonCode,
            pub grant: Option<String>,
            pub status: u16,
            pub terms: Vec<String>,
        }

        #[allow(dead_code)] // the variants before Seal are here for its index
        #[derive(Serialize)]
        pub enum Body {
            Decision(Decision),
            Completion {
                of: u64,
                status: u16,
                bytes_up: u64,
                bytes_down: u64,
                duration_us: u64,
            },
            Reload {
                what: ReloadKind,
                ok: bool,
                detail: String,
            },
            Grant {
                action: GrantEvent,
                id: String,
                ticket: String,
                by: String,
                detail: String,
            },
            Seal {
                chain: [u8; 32],
            },
            Retention {
                deleted: Vec<String>,
            },
            Start {
                version: String,
            },
        }
    }

    #[test]
    fn a_decision_in_the_old_shape_still_reads_and_is_still_written() {
        let d = decision(None);
        let old = postcard::to_stdvec(&old::Entry {
            seq: 7,
            time_us: 1_700_000_000_000_000,
            body: old::Body::Decision(old::Decision {
                client: d.client,
                user: d.user.clone(),
                group: d.group.clone(),
                method: d.method.clone(),
                url: d.url.clone(),
                sni: d.sni.clone(),
                categories: d.categories.clone(),
                action: d.action,
                reason: d.reason,
                grant: d.grant.clone(),
                status: d.status,
                terms: d.terms.clone(),
            }),
        })
        .expect("encodes");
        let entry = Entry {
            seq: 7,
            time_us: 1_700_000_000_000_000,
            body: Body::Decision(d),
        };
        assert_eq!(
            postcard::from_bytes::<Entry>(&old).ok(),
            Some(entry.clone())
        );
        // Without safe search a decision is written exactly as before.
        assert_eq!(postcard::to_stdvec(&entry).expect("encodes"), old);
        // The seal keeps its index, which `verify` reads without decoding the rest.
        let seal = |b| postcard::to_stdvec(&b).expect("encodes");
        assert_eq!(
            seal(Body::Seal { chain: [3; 32] }),
            postcard::to_stdvec(&old::Body::Seal { chain: [3; 32] }).expect("encodes")
        );
    }

    #[test]
    fn every_kind_round_trips_and_safe_search_and_device_are_kinds_of_their_own() {
        let bodies = [
            Body::Decision(decision(None)),
            Body::Decision(decision(Some(rewrite()))),
            Body::Decision(on_device(None)),
            Body::Decision(on_device(Some(rewrite()))),
            Body::Completion {
                of: 1,
                status: 200,
                bytes_up: 2,
                bytes_down: 3,
                duration_us: 4,
            },
            Body::Reload {
                what: ReloadKind::Grants,
                ok: false,
                detail: "bad".into(),
            },
            Body::Grant {
                action: GrantEvent::ApiRefused("POST".into()),
                id: "g1".into(),
                ticket: "HD-1".into(),
                by: "tech".into(),
                detail: "why".into(),
            },
            Body::Seal { chain: [9; 32] },
            Body::Retention {
                deleted: vec!["a".into(), "b".into()],
            },
            Body::Start {
                version: "1.0.0".into(),
            },
            Body::Alert {
                id: 4,
                channel: "email".into(),
                sent: true,
                attempt: 1,
                subject: "self-harm".into(),
                of: 9,
                detail: "1 attempt".into(),
            },
            Body::AlertAck {
                of: 9,
                by: "j.smith (dsl-office)".into(),
                note: "spoke to the pupil".into(),
            },
            Body::Decision(decision(None).with_enforced(vec!["safe=active".into()])),
            Body::Decision(decision(Some(rewrite())).with_enforced(vec![
                "YouTube-Restrict: Strict".into(),
                "tls-inspected".into(),
            ])),
            Body::Console {
                who: "j.smith".into(),
                role: "technician".into(),
                action: "grant".into(),
                detail: "127.0.0.1 g-3 HD-1".into(),
            },
        ];
        // (body, its stored kind: the variant index, the payload's first byte here)
        for (body, kind) in bodies
            .iter()
            .zip([0u8, 7, 10, 10, 1, 2, 3, 4, 5, 6, 8, 9, 10, 10, 11])
        {
            let bytes = postcard::to_stdvec(body).expect("encodes");
            assert_eq!(bytes[0], kind, "{body:?}");
            assert_eq!(
                postcard::from_bytes::<Body>(&bytes).ok().as_ref(),
                Some(body)
            );
        }
        // The stored decision with safe search is the old decision, then the rewrite.
        let with =
            postcard::to_stdvec(&Body::Decision(decision(Some(rewrite())))).expect("encodes");
        let without = postcard::to_stdvec(&Body::Decision(decision(None))).expect("encodes");
        let mut expected = vec![7];
        expected.extend_from_slice(&without[1..]);
        expected.extend(postcard::to_stdvec(&rewrite()).expect("encodes"));
        assert_eq!(with, expected);
        // The stored decision with a device is the old decision, then its extensions:
        // here one, the name.
        let device = postcard::to_stdvec(&Body::Decision(on_device(None))).expect("encodes");
        let mut expected = vec![10];
        expected.extend_from_slice(&without[1..]);
        expected.extend(
            postcard::to_stdvec(&vec![ExtensionRef::Device("ks2-laptop-17.school.local")])
                .expect("encodes"),
        );
        assert_eq!(device, expected);
    }

    #[test]
    fn a_transparent_decision_stores_its_original_destination_as_an_extension() {
        let mut transparent = decision(None);
        transparent.original_destination = Some("93.184.215.14:443".into());
        let body = Body::Decision(transparent);
        let bytes = postcard::to_stdvec(&body).expect("encodes");
        // "decision with extensions", the plain decision's fields, then one extension:
        // the fourth (index 3), the address.
        let plain = postcard::to_stdvec(&Body::Decision(decision(None))).expect("encodes");
        let mut expected = vec![10];
        expected.extend_from_slice(&plain[1..]);
        expected.extend(
            postcard::to_stdvec(&vec![ExtensionRef::Transparent {
                original_destination: "93.184.215.14:443",
            }])
            .expect("encodes"),
        );
        assert_eq!(bytes, expected);
        assert_eq!(expected[plain.len() + 1], 3, "the extension's index");
        assert_eq!(postcard::from_bytes::<Body>(&bytes).ok(), Some(body));
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_name(7), "decisions-00000000000000000007.ghlog");
        assert_eq!(segment_first_seq(&segment_name(7)), Some(7));
        assert_eq!(segment_first_seq("other.txt"), None);
    }
}
