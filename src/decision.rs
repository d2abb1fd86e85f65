//! Decision records and the hand-off to the decision log.
//!
//! Every verdict the proxy makes becomes a [`Decision`] record, handed to
//! [`DecisionLog::record`] *before* the response or tunnel it describes goes ahead. The
//! call returns once the decision log's writer has the record with the operating system,
//! with its sequence number: the reference on the block page.

pub use crate::decision_log::writer::LogError;
use crate::decision_log::writer::LogHandle;
use crate::decision_log::{Body, Decision};

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
            "{explanation}"
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
        self.handle.append_later(Body::Completion {
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
