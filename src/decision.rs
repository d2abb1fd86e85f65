//! Decision records and the hand-off to the decision log.
//!
//! Every verdict the proxy makes becomes a [`DecisionRecord`], handed to
//! [`DecisionLog::record`] *before* the response or tunnel it describes goes ahead. The
//! call returns once the decision log's writer has the record with the operating system,
//! with its sequence number: the reference on the block page.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

/// What the proxy did with a request.
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    /// When the decision was made.
    pub time: DateTime<Utc>,
    /// Client address.
    pub client: IpAddr,
    /// Authenticated user, if any.
    pub user: Option<String>,
    /// Group decided for.
    pub group: String,
    /// HTTP method (`CONNECT` for tunnels).
    pub method: String,
    /// URL for plain HTTP, `host:port` for tunnels.
    pub url: String,
    /// SNI of a tunnel's ClientHello, when read.
    pub sni: Option<String>,
    /// Categories matched, most severe first.
    pub categories: Vec<String>,
    /// `allow` or `block`.
    pub action: &'static str,
    /// Short reason code (`category`, `illegal`, `ip_literal`, `no_sni`, …).
    pub reason: &'static str,
    /// One line a technician can read.
    pub explanation: String,
    /// Ticket of the grant that allowed it.
    pub grant_ticket: Option<String>,
    /// Status sent to the client (`0` until known, for forwarded requests).
    pub status: u16,
    /// Search terms of concern found in the query.
    pub search_terms: Vec<String>,
}

pub use crate::decision_log::writer::LogError;
use crate::decision_log::writer::LogHandle;
use crate::decision_log::{Body, Decision, StoredAction};

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
    pub async fn record(&self, record: &DecisionRecord) -> Result<u64, LogError> {
        let decision = Decision {
            client: record.client,
            user: record.user.clone(),
            group: record.group.clone(),
            method: record.method.clone(),
            url: record.url.clone(),
            sni: record.sni.clone(),
            categories: record.categories.clone(),
            action: if record.action == "allow" {
                StoredAction::Allow
            } else {
                StoredAction::Block
            },
            reason: record.reason.to_string(),
            grant: record.grant_ticket.clone(),
            status: record.status,
            terms: record.search_terms.clone(),
        };
        let result = self.handle.append(Body::Decision(decision)).await;
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
            action = record.action,
            reason = record.reason,
            grant = record.grant_ticket.as_deref().unwrap_or("-"),
            status = record.status,
            "{}",
            record.explanation
        );
        result
    }

    /// Records how a request ended (not waited for).
    pub fn completed(
        &self,
        reference: u64,
        status: u16,
        bytes_up: u64,
        bytes_down: u64,
        duration: std::time::Duration,
    ) {
        self.handle.append_nowait(Body::Completion {
            of: reference,
            status,
            bytes_up,
            bytes_down,
            duration_us: duration.as_micros() as u64,
        });
    }
}

/// A reference as shown to people: upper-case hex in groups of four.
pub fn format_reference(reference: u64) -> String {
    let hex = format!("{reference:X}");
    let mut out = String::with_capacity(hex.len() + hex.len() / 4);
    for (i, c) in hex.chars().enumerate() {
        if i > 0 && (hex.len() - i) % 4 == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_grouped() {
        assert_eq!(format_reference(0x1234_5678_9ABC), "1234-5678-9ABC");
        assert_eq!(format_reference(0xABCDE), "A-BCDE");
        assert_eq!(format_reference(0), "0");
    }
}
