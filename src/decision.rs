//! Decision records and the hand-off to the decision log.
//!
//! Every verdict the proxy makes becomes a [`Decision`] record, made by
//! [`Decision::new`] from what was [`Asked`] (who, in which group, which method on which
//! URL, taken from the request once) and what was decided, and handed to
//! [`DecisionLog::record`] *before* the response or tunnel it describes goes ahead. The
//! call returns once the decision log's writer has the record with the operating system,
//! with its sequence number: the reference on the block page.
//!
//! # The permit
//!
//! Forwarding a request ([`Pool::send`](crate::proxy::pool::Pool::send)) and splicing a
//! tunnel ([`splice`](crate::proxy::tunnel::splice)) take an [`Allowed`], and only
//! [`DecisionLog::allow`] makes one: from an allow verdict and its record, once the
//! record is with the operating system. So no code path can send a client's bytes
//! upstream without an allow decision that was recorded — the compiler, not a reviewer,
//! checks it. A record of a block makes no permit.
//!
//! When the record cannot be written, `allow` makes no permit either: it returns
//! [`Unlogged`], the error and the permit the record would have given. A group that fails
//! closed (the default) refuses the request; one configured `on_log_failure = "allow"`
//! goes ahead with [`Unlogged::allow_unrecorded`], a permit with no reference — still
//! made only here, from the same decision, and visibly the exception where it is used.

use std::net::IpAddr;

use crate::core::verdict::{Action, GrantRef, ReasonCode, Verdict};
pub use crate::decision_log::writer::LogError;
use crate::decision_log::writer::LogHandle;
use crate::decision_log::{Body, Decision, SafeSearchRewrite, StoredAction};

/// What a request asked for, and who asked: the facts every record of a decision on it
/// shares. The proxy makes one from the request itself, so that every record of the
/// request (its verdict, a refusal of how it arrived, an upstream it may not reach)
/// names the same method and URL.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// Client address.
    pub client: IpAddr,
    /// The signed-in user, if any.
    pub user: Option<&'a str>,
    /// The name of the group decided for.
    pub group: &'a str,
    /// The request's method (`CONNECT` for tunnels).
    pub method: &'a str,
    /// URL for plain HTTP; `host:port` for tunnels.
    pub url: &'a str,
    /// A tunnel's SNI, once its ClientHello has been read.
    pub sni: Option<&'a str>,
    /// The client's device name, where known.
    pub device: Option<&'a str>,
    /// Transparent mode: where the device was connecting to before the redirect.
    pub original_destination: Option<&'a str>,
}

impl Decision {
    /// The record of a decision on what was `asked`: the one constructor the proxy uses.
    pub fn new(
        asked: &Asked<'_>,
        action: StoredAction,
        reason: ReasonCode,
        categories: Vec<String>,
        grant: Option<String>,
        status: u16,
        terms: Vec<String>,
    ) -> Decision {
        Decision {
            client: asked.client,
            user: asked.user.map(str::to_string),
            group: asked.group.to_string(),
            method: asked.method.to_string(),
            url: asked.url.to_string(),
            sni: asked.sni.map(str::to_string),
            categories,
            action,
            reason,
            grant,
            status,
            terms,
            safe_search: None,
            enforced: Vec::new(),
            device: asked.device.map(str::to_string),
            original_destination: asked.original_destination.map(str::to_string),
        }
    }

    /// The record with the header and parameter controls (and TLS inspection) that were
    /// enforced for it.
    pub fn with_enforced(self, enforced: Vec<String>) -> Decision {
        Decision { enforced, ..self }
    }

    /// The record with the safe search that was enforced for it, if any.
    pub fn with_safe_search(self, safe_search: Option<SafeSearchRewrite>) -> Decision {
        Decision {
            safe_search,
            ..self
        }
    }
}

/// Leave to forward one request or open one tunnel: an allow decision, recorded. Only
/// [`DecisionLog::allow`] makes one (see the module documentation).
#[derive(Debug)]
#[must_use = "a permit is what lets a request go upstream"]
pub struct Allowed {
    reason: ReasonCode,
    grant: Option<GrantRef>,
    reference: Option<u64>,
}

impl Allowed {
    /// The decision's sequence number (the reference); `None` when its group fails open
    /// and the record could not be written.
    pub fn reference(&self) -> Option<u64> {
        self.reference
    }

    /// The rule that allowed it.
    pub fn reason(&self) -> ReasonCode {
        self.reason
    }

    /// The grant that allowed it, if one did.
    pub fn grant(&self) -> Option<&GrantRef> {
        self.grant.as_ref()
    }
}

/// Why [`DecisionLog::allow`] made no permit.
#[derive(Debug, thiserror::Error)]
pub enum NoPermit {
    /// The verdict or its record is a block: nothing may go ahead on it, and nothing was
    /// recorded (a caller's mistake: refusals are recorded with [`DecisionLog::record`]).
    #[error("a block decision allows nothing")]
    Blocked,
    /// The record could not be written.
    #[error(transparent)]
    Unlogged(Unlogged),
}

/// An allow decision whose record could not be written: the error, and the permit the
/// record would have given, for the groups that fail open.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Unlogged {
    error: LogError,
    permit: Allowed,
}

impl Unlogged {
    /// Why the record could not be written.
    pub fn error(&self) -> &LogError {
        &self.error
    }

    /// The permit without a record, for a group configured `on_log_failure = "allow"`:
    /// it keeps working, and the lost record is counted by the log's writer.
    pub fn allow_unrecorded(self) -> Allowed {
        self.permit
    }
}

/// The decision log as the request path sees it: records go to the log writer, and a
/// debug-level line to the tracing log (`RUST_LOG=gatehouse::decision=debug`).
#[derive(Clone)]
pub struct DecisionLog {
    /// The writer's handle.
    pub handle: LogHandle,
}

impl DecisionLog {
    /// Records a decision; returns its sequence number (the reference) once the record
    /// is with the operating system.
    pub async fn record(&self, decision: Decision, explanation: &str) -> Result<u64, LogError> {
        let line = tracing::enabled!(target: "gatehouse::decision", tracing::Level::DEBUG)
            .then(|| decision.clone());
        let result = self.handle.append(Body::Decision(decision)).await;
        let Some(record) = line else { return result };
        tracing::debug!(
            target: "gatehouse::decision",
            reference = %result.as_ref().map(|s| format_reference(*s)).unwrap_or_else(|_| "unlogged".into()),
            client = %record.client,
            user = record.user.as_deref().unwrap_or("-"),
            group = %record.group,
            method = %record.method,
            url = %record.url,
            sni = record.sni.as_deref().unwrap_or("-"),
            categories = %record.categories.join(","),
            action = record.action.as_str(),
            reason = %record.reason,
            grant = record.grant.as_deref().unwrap_or("-"),
            status = record.status,
            safe_search = %record
                .safe_search
                .as_ref()
                .map_or_else(|| "-".to_string(), |r| r.to_string()),
            "{explanation}"
        );
        result
    }

    /// Records an allow decision and, once the record is with the operating system,
    /// makes the permit to act on it: the only way to make an [`Allowed`]. Refuses a
    /// verdict or a record that is a block.
    pub async fn allow(
        &self,
        verdict: &Verdict,
        decision: Decision,
        explanation: &str,
    ) -> Result<Allowed, NoPermit> {
        if verdict.action != Action::Allow || decision.action != StoredAction::Allow {
            return Err(NoPermit::Blocked);
        }
        let reason = decision.reason;
        let grant = verdict.grant.clone();
        match self.record(decision, explanation).await {
            Ok(seq) => Ok(Allowed {
                reason,
                grant,
                reference: Some(seq),
            }),
            Err(error) => Err(NoPermit::Unlogged(Unlogged {
                error,
                permit: Allowed {
                    reason,
                    grant,
                    reference: None,
                },
            })),
        }
    }

    /// Records how a request ended (not waited for). A decision that could not be
    /// recorded (`None`: its group fails open) has its completion written against 0,
    /// which no decision has: sequence numbers start at 1.
    pub fn completed(
        &self,
        reference: Option<u64>,
        status: u16,
        bytes_up: u64,
        bytes_down: u64,
        duration: std::time::Duration,
    ) {
        self.handle.append_later(Body::Completion {
            of: reference.unwrap_or(0),
            status,
            bytes_up,
            bytes_down,
            duration_us: duration.as_micros() as u64,
        });
    }
}

/// A reference as shown to people: upper-case hex in groups of four.
pub fn format_reference(reference: u64) -> String {
    // Upper-case hex, most significant digit first, without the formatting machinery.
    let mut digits = [0u8; 16];
    let (mut n, mut len) = (reference, 0);
    loop {
        digits[len] = b"0123456789ABCDEF"[(n & 15) as usize];
        n >>= 4;
        len += 1;
        if n == 0 {
            break;
        }
    }
    let mut out = String::with_capacity(len + len / 4);
    for i in 0..len {
        if i > 0 && (len - i) % 4 == 0 {
            out.push('-');
        }
        out.push(char::from(digits[len - 1 - i]));
    }
    out
}

/// What a technician can do about a blocked decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unblock {
    /// A grant on `site` for the requester (`user` if they signed in, else `group`).
    Grant {
        /// The host that was blocked.
        site: String,
        /// The signed-in user, if any.
        user: Option<String>,
        /// The group decided for.
        group: String,
    },
    /// Illegal content: nothing unblocks it; the DSL should know of the attempt.
    Illegal,
    /// Asked for by IP address: find out which named site was meant.
    ByAddress,
    /// Refused for how it connected (no SNI, hidden ECH name, not TLS, a port, failed
    /// sign-in, the log unwritable): a grant on a site does not change that.
    NotTheSite,
    /// Closed by a teacher's lesson override (the grant named in the decision): it ends
    /// with the lesson; before then the teacher (or a technician, with `grant revoke`)
    /// can end it. A grant would not reopen it: lesson blocks come before grants.
    Lesson {
        /// The override's id (`g-12`).
        id: String,
    },
    /// Not blocked.
    Nothing,
}

/// What can be done about `d`, from its action and reason code.
pub fn unblock(d: &Decision) -> Unblock {
    if d.action != crate::decision_log::StoredAction::Block {
        return Unblock::Nothing;
    }
    use crate::decision_log::ReasonCode as R;
    match d.reason {
        R::Illegal => Unblock::Illegal,
        R::LessonBlock => Unblock::Lesson {
            id: d
                .grant
                .as_deref()
                .and_then(|t| t.strip_prefix(crate::core::grants::LESSON_TICKET_PREFIX))
                .unwrap_or("-")
                .to_string(),
        },
        R::IpLiteral => Unblock::ByAddress,
        R::Category | R::BlockSites | R::Mode => {
            let site = crate::core::host::Target::parse(&d.url)
                .or_else(|_| crate::core::host::Target::from_authority(&d.url))
                .map(|t| t.host.to_string())
                .unwrap_or_else(|_| d.url.clone());
            Unblock::Grant {
                site,
                user: d.user.clone(),
                group: d.group.clone(),
            }
        }
        // Refusals of how the request arrived, and allow reasons on a block (which
        // decide never makes): a grant on the site would not change them.
        R::Port
        | R::NotTls
        | R::NoSni
        | R::BadSni
        | R::Ech
        | R::AuthFailed
        | R::InternalDestination
        | R::UpstreamCertificate
        | R::BadRequest
        | R::Misdirected
        | R::Grant
        | R::LessonAllow
        | R::AllowSites
        | R::AllowDuring
        | R::AllowedCategory => Unblock::NotTheSite,
    }
}

/// Why a reference could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Nothing but spaces and dashes.
    #[error("a reference has at least one digit")]
    Empty,
    /// A character that is not a hex digit, a dash or a space.
    #[error("{0:?} cannot be in a reference (block pages show 0-9 and A-F, in groups of four)")]
    Bad(char),
    /// More digits than a sequence number has.
    #[error("too long for a reference")]
    TooLong,
}

/// A reference as a person types it back: the block page's hex (any case, dashes and
/// spaces anywhere, `1A`, `3a-1f2c`), or `#` and the decimal sequence number that
/// `gatehouse log tail` prints (`#26`).
pub fn parse_reference(text: &str) -> Result<u64, ReferenceError> {
    let text = text.trim();
    if let Some(decimal) = text.strip_prefix('#') {
        let digits = decimal.trim();
        if digits.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if let Some(c) = digits.chars().find(|c| !c.is_ascii_digit()) {
            return Err(ReferenceError::Bad(c));
        }
        return digits.parse().map_err(|_| ReferenceError::TooLong);
    }
    let (mut value, mut digits) = (0u64, 0usize);
    for c in text.chars() {
        if c == '-' || c == ' ' {
            continue;
        }
        let d = c.to_digit(16).ok_or(ReferenceError::Bad(c))?;
        if digits == 0 && d == 0 {
            continue; // leading zeros
        }
        digits += 1;
        if digits > 16 {
            return Err(ReferenceError::TooLong);
        }
        value = value << 4 | u64::from(d);
    }
    if text.chars().all(|c| c == '-' || c == ' ') {
        return Err(ReferenceError::Empty);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_read_back_as_typed() {
        for (typed, want) in [
            ("1A", Ok(0x1A)),
            ("1a", Ok(0x1A)),
            ("  3a-1f2c ", Ok(0x3A_1F2C)),
            ("3A 1F2C", Ok(0x3A_1F2C)),
            ("1234-5678-9ABC", Ok(0x1234_5678_9ABC)),
            ("0", Ok(0)),
            ("0000-001A", Ok(0x1A)),
            ("FFFF-FFFF-FFFF-FFFF", Ok(u64::MAX)),
            ("#26", Ok(26)),
            ("# 26", Ok(26)),
            ("", Err(ReferenceError::Empty)),
            ("--", Err(ReferenceError::Empty)),
            ("#", Err(ReferenceError::Empty)),
            ("1G", Err(ReferenceError::Bad('G'))),
            ("#1A", Err(ReferenceError::Bad('A'))),
            ("1-0000-0000-0000-0000", Err(ReferenceError::TooLong)),
            ("#99999999999999999999", Err(ReferenceError::TooLong)),
        ] {
            assert_eq!(parse_reference(typed), want, "{typed:?}");
        }
        for n in [0, 1, 0xF, 0x10, 0xFFFF, 0x1_0000, 0xABCDE, u64::MAX] {
            assert_eq!(parse_reference(&format_reference(n)), Ok(n), "{n:x}");
        }
    }

    #[test]
    fn what_can_unblock_a_decision() {
        let d = |action, reason: ReasonCode, url: &str, user: Option<&str>| Decision {
            client: "10.0.0.1".parse().expect("ip"),
            user: user.map(str::to_string),
            group: "ks3".into(),
            method: "GET".into(),
            url: url.into(),
            sni: None,
            categories: vec![],
            action,
            reason,
            grant: None,
            status: 403,
            terms: vec![],
            enforced: Vec::new(),
            safe_search: None,
            device: None,
            original_destination: None,
        };
        use crate::decision_log::ReasonCode;
        use crate::decision_log::StoredAction::{Allow, Block};
        let grant = |site: &str, user: Option<&str>| Unblock::Grant {
            site: site.into(),
            user: user.map(str::to_string),
            group: "ks3".into(),
        };
        for (decision, want) in [
            (
                d(
                    Block,
                    ReasonCode::Category,
                    "http://www.bet.test:8080/odds?x=1",
                    None,
                ),
                grant("www.bet.test", None),
            ),
            (
                d(
                    Block,
                    ReasonCode::BlockSites,
                    "http://Bet.Test/",
                    Some("amy"),
                ),
                grant("bet.test", Some("amy")),
            ),
            (
                d(Block, ReasonCode::Mode, "bet.test:443", None),
                grant("bet.test", None),
            ),
            (
                d(Block, ReasonCode::Illegal, "http://csam.test/", None),
                Unblock::Illegal,
            ),
            (
                d(Block, ReasonCode::IpLiteral, "http://10.9.9.9/", None),
                Unblock::ByAddress,
            ),
            (
                d(Block, ReasonCode::Ech, "bet.test:443", None),
                Unblock::NotTheSite,
            ),
            (
                d(Block, ReasonCode::NoSni, "bet.test:443", None),
                Unblock::NotTheSite,
            ),
            (
                d(Allow, ReasonCode::Category, "http://bet.test/", None),
                Unblock::Nothing,
            ),
        ] {
            assert_eq!(unblock(&decision), want, "{decision:?}");
        }
    }

    #[tokio::test]
    async fn only_a_recorded_allow_makes_a_permit() {
        use crate::core::category::CategorySet;
        use crate::core::group::{GroupId, Mode};
        use crate::core::verdict::Reason;
        use crate::decision_log::Body as Entry;
        let dir = tempfile::tempdir().expect("temp dir");
        let log = DecisionLog {
            handle: crate::decision_log::writer::open(crate::decision_log::writer::LogSettings {
                dir: dir.path().to_path_buf(),
                node: "test".into(),
                fsync_interval: std::time::Duration::from_millis(100),
                segment_bytes: 64 << 20,
                queue: 1024,
                retention_days: 0,
            })
            .expect("the log opens"),
        };
        let verdict = |action| Verdict {
            action,
            reason: Reason::Mode(Mode::Blocklist),
            categories: CategorySet::default(),
            group: GroupId::new(0),
            grant: Some(GrantRef {
                id: "g1".into(),
                ticket: "HD-1".into(),
            }),
        };
        let asked = Asked {
            client: "10.0.0.1".parse().expect("ip"),
            user: None,
            group: "ks3",
            method: "POST",
            url: "http://a.test/",
            sni: None,
            device: None,
            original_destination: None,
        };
        let record = |action| {
            Decision::new(
                &asked,
                action,
                ReasonCode::Mode,
                vec![],
                Some("HD-1".into()),
                0,
                vec![],
            )
        };
        // A block, in the verdict or in its record, makes no permit and records nothing.
        for (v, r) in [
            (Action::Block, StoredAction::Allow),
            (Action::Allow, StoredAction::Block),
            (Action::Block, StoredAction::Block),
        ] {
            let got = log.allow(&verdict(v), record(r), "test").await;
            assert!(
                matches!(got, Err(NoPermit::Blocked)),
                "{v:?} {r:?}: {got:?}"
            );
        }
        let permit = log
            .allow(&verdict(Action::Allow), record(StoredAction::Allow), "test")
            .await
            .expect("a permit");
        let reference = permit.reference().expect("a reference");
        assert_eq!(permit.reason(), ReasonCode::Mode);
        assert_eq!(permit.grant().map(|g| &*g.ticket), Some("HD-1"));
        // The log cannot be written: no permit, unless the caller's group fails open.
        log.handle.close().await;
        match log
            .allow(&verdict(Action::Allow), record(StoredAction::Allow), "test")
            .await
        {
            Err(NoPermit::Unlogged(unlogged)) => {
                let permit = unlogged.allow_unrecorded();
                assert_eq!(permit.reference(), None);
                assert_eq!(permit.grant().map(|g| &*g.ticket), Some("HD-1"));
            }
            other => panic!("{other:?}"),
        }
        let decisions: Vec<u64> = crate::decision_log::reader::entries(dir.path())
            .expect("the log reads")
            .filter(|(_, e)| matches!(e.body, Entry::Decision(_)))
            .map(|(_, e)| e.seq)
            .collect();
        assert_eq!(decisions, [reference]);
    }

    #[test]
    fn references_are_grouped() {
        assert_eq!(format_reference(0x1234_5678_9ABC), "1234-5678-9ABC");
        assert_eq!(format_reference(0xABCDE), "A-BCDE");
        assert_eq!(format_reference(0), "0");
    }
}
