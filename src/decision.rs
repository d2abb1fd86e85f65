//! Decision records and the hand-off to the decision log.
//!
//! Every verdict the proxy makes becomes a [`DecisionRecord`], handed to
//! [`DecisionLog::record`] *before* the response or tunnel it describes goes ahead. The
//! call is `async` and returns the record's reference (the number on the block page) so
//! that the append-only store can plug in behind it — a writer task with a bounded queue
//! that acknowledges once the record is with the operating system — without any change
//! to the request path. Until that store exists, the record is one structured line in
//! the tracing log (target `gatehouse::decision`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Why a record could not be logged.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log cannot take records now.
    #[error("the decision log is not accepting records: {0}")]
    Unavailable(String),
}

/// The decision log as the request path sees it.
#[derive(Debug)]
pub struct DecisionLog {
    next: AtomicU64,
}

impl DecisionLog {
    /// A log whose references start at `base` (the start time in milliseconds, so
    /// references do not repeat across restarts of one node).
    pub fn new(base: u64) -> DecisionLog {
        DecisionLog {
            next: AtomicU64::new(base << 12),
        }
    }

    /// Records a decision; returns its reference once the record is accepted.
    pub async fn record(&self, record: &DecisionRecord) -> Result<u64, LogError> {
        let reference = self.next.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            target: "gatehouse::decision",
            reference = %format_reference(reference),
            time = %record.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
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
            search_terms = %record.search_terms.join(","),
            "{}",
            record.explanation
        );
        Ok(reference)
    }

    /// Records how a forwarded request ended.
    pub fn completed(
        &self,
        reference: u64,
        status: u16,
        bytes_up: u64,
        bytes_down: u64,
        duration: std::time::Duration,
    ) {
        tracing::debug!(
            target: "gatehouse::decision",
            reference = %format_reference(reference),
            status,
            bytes_up,
            bytes_down,
            duration_ms = duration.as_millis() as u64,
            "completed"
        );
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
