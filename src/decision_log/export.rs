//! Export of the decision log for other tools: JSON lines, CSV, and Squid's native
//! `access.log` format (so SARG- and lightsquid-style tools keep working).
//!
//! A forwarded request's status, bytes and duration arrive in a later completion entry,
//! so a decision waits for its completion before it is written — as Squid writes a line
//! when a request ends. Refusals are complete at once.

use std::collections::HashMap;
use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Body, Decision, Entry, StoredAction};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header row.
    Csv,
    /// Squid native access.log.
    Squid,
}

/// A decision with its completion, ready to write.
struct Row<'a> {
    node: &'a str,
    seq: u64,
    time_us: i64,
    d: &'a Decision,
    status: u16,
    bytes_up: u64,
    bytes_down: u64,
    duration_us: u64,
}

impl Row<'_> {
    /// The row as one JSON object (a line of `--format jsonl`).
    fn json(&self) -> serde_json::Value {
        let d = self.d;
        serde_json::json!({
            "time": iso(self.time_us),
            "node": self.node,
            "seq": self.seq,
            "client": d.client.to_string(),
            "user": d.user,
            "group": d.group,
            "method": d.method,
            "url": d.url,
            "sni": d.sni,
            "categories": d.categories,
            "action": d.action.as_str(),
            "reason": d.reason,
            "grant": d.grant,
            "status": self.status,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "duration_ms": self.duration_us as f64 / 1000.0,
            "search_terms": d.terms,
        })
    }
}

/// A decision as the JSON-lines export writes it, with how it ended when `completion`
/// (its completion entry's body) is given: for the admin API's decision lookups.
pub fn decision_json(
    node: &str,
    seq: u64,
    time_us: i64,
    d: &Decision,
    completion: Option<&Body>,
) -> serde_json::Value {
    let (status, bytes_up, bytes_down, duration_us) = match completion {
        Some(Body::Completion {
            status,
            bytes_up,
            bytes_down,
            duration_us,
            ..
        }) => (*status, *bytes_up, *bytes_down, *duration_us),
        _ => (d.status, 0, 0, 0),
    };
    Row {
        node,
        seq,
        time_us,
        d,
        status,
        bytes_up,
        bytes_down,
        duration_us,
    }
    .json()
}

/// Streams entries out in one format.
pub struct Exporter {
    format: Format,
    pending: HashMap<(String, u64), (i64, Decision)>,
}

/// Decisions waiting longer than this for their completion are written without it
/// (a long download must not hold memory forever).
const MAX_PENDING: usize = 100_000;

fn iso(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl Exporter {
    /// An exporter for `format`.
    pub fn new(format: Format) -> Exporter {
        Exporter {
            format,
            pending: HashMap::new(),
        }
    }

    /// Writes the header row, if the format has one.
    pub fn header(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.format == Format::Csv {
            writeln!(
                out,
                "time,node,seq,client,user,group,method,url,sni,categories,action,reason,grant,status,bytes_up,bytes_down,duration_ms,search_terms"
            )?;
        }
        Ok(())
    }

    /// Takes one entry; writes whatever it completes.
    pub fn entry(&mut self, node: &str, entry: &Entry, out: &mut dyn Write) -> io::Result<()> {
        match &entry.body {
            Body::Decision(d) if d.action == StoredAction::Block || d.status != 0 => self.write(
                &Row {
                    node,
                    seq: entry.seq,
                    time_us: entry.time_us,
                    d,
                    status: d.status,
                    bytes_up: 0,
                    bytes_down: 0,
                    duration_us: 0,
                },
                out,
            ),
            Body::Decision(d) => {
                if self.pending.len() >= MAX_PENDING {
                    self.flush_pending(out)?;
                }
                self.pending
                    .insert((node.to_string(), entry.seq), (entry.time_us, d.clone()));
                Ok(())
            }
            Body::Completion {
                of,
                status,
                bytes_up,
                bytes_down,
                duration_us,
            } => match self.pending.remove(&(node.to_string(), *of)) {
                Some((time_us, d)) => self.write(
                    &Row {
                        node,
                        seq: *of,
                        time_us,
                        d: &d,
                        status: *status,
                        bytes_up: *bytes_up,
                        bytes_down: *bytes_down,
                        duration_us: *duration_us,
                    },
                    out,
                ),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Writes decisions still waiting for a completion (the request never finished, or
    /// the process stopped first).
    pub fn flush_pending(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let mut rest: Vec<_> = self.pending.drain().collect();
        rest.sort_by_key(|((_, seq), _)| *seq);
        for ((node, seq), (time_us, d)) in rest {
            self.write(
                &Row {
                    node: &node,
                    seq,
                    time_us,
                    d: &d,
                    status: 0,
                    bytes_up: 0,
                    bytes_down: 0,
                    duration_us: 0,
                },
                out,
            )?;
        }
        Ok(())
    }

    fn write(&self, r: &Row<'_>, out: &mut dyn Write) -> io::Result<()> {
        let d = r.d;
        match self.format {
            Format::Jsonl => writeln!(out, "{}", r.json()),
            Format::Csv => {
                let fields = [
                    iso(r.time_us),
                    r.node.to_string(),
                    r.seq.to_string(),
                    d.client.to_string(),
                    d.user.clone().unwrap_or_default(),
                    d.group.clone(),
                    d.method.clone(),
                    d.url.clone(),
                    d.sni.clone().unwrap_or_default(),
                    d.categories.join(";"),
                    d.action.as_str().to_string(),
                    d.reason.to_string(),
                    d.grant.clone().unwrap_or_default(),
                    r.status.to_string(),
                    r.bytes_up.to_string(),
                    r.bytes_down.to_string(),
                    format!("{:.3}", r.duration_us as f64 / 1000.0),
                    d.terms.join(";"),
                ];
                let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                writeln!(out, "{}", line.join(","))
            }
            Format::Squid => {
                // time.ms elapsed-ms client code/status bytes method url user hierarchy type
                let code = match (d.action, d.method.as_str()) {
                    (StoredAction::Block, _) => "TCP_DENIED",
                    (_, "CONNECT") => "TCP_TUNNEL",
                    _ => "TCP_MISS",
                };
                let status = if r.status == 0 && d.action == StoredAction::Block {
                    403
                } else {
                    r.status
                };
                let user = d.user.as_deref().unwrap_or("-");
                let hierarchy = if d.action == StoredAction::Block {
                    "HIER_NONE/-"
                } else {
                    "HIER_DIRECT/-"
                };
                writeln!(
                    out,
                    "{}.{:03} {:>6} {} {code}/{status:03} {} {} {} {} {hierarchy} -",
                    r.time_us.div_euclid(1_000_000),
                    r.time_us.rem_euclid(1_000_000) / 1000,
                    r.duration_us / 1000,
                    d.client,
                    r.bytes_down,
                    d.method,
                    d.url.replace(' ', "%20"),
                    user.replace(' ', "%20"),
                )
            }
        }
    }
}

/// One line for `gatehouse log tail`: decisions and notable events, not completions
/// or seals.
pub fn human_line(entry: &Entry) -> Option<String> {
    let time = iso(entry.time_us);
    match &entry.body {
        Body::Decision(d) => Some(format!(
            "{time}  #{}  ref {}  {}  {}  {}  {}  {} {}{}  [{}]  {}{}",
            entry.seq,
            crate::decision::format_reference(entry.seq),
            d.client,
            d.user.as_deref().unwrap_or("-"),
            d.group,
            d.action.as_str().to_uppercase(),
            d.method,
            d.url,
            d.sni
                .as_deref()
                .map(|s| format!(" (SNI {s})"))
                .unwrap_or_default(),
            d.categories.join(","),
            d.reason,
            d.grant
                .as_deref()
                .map(|g| format!("  ticket {g}"))
                .unwrap_or_default(),
        )),
        Body::Reload { what, ok, detail } => Some(format!(
            "{time}  #{}  reload {what}: {}  {detail}",
            entry.seq,
            if *ok { "ok" } else { "REFUSED" }
        )),
        Body::Grant {
            action,
            id,
            ticket,
            by,
            detail,
        } => Some(format!(
            "{time}  #{}  grant {action} {id} ticket {ticket} by {by}: {detail}",
            entry.seq
        )),
        Body::Retention { deleted } => Some(format!(
            "{time}  #{}  retention deleted {}",
            entry.seq,
            deleted.join(", ")
        )),
        Body::Start { version } => Some(format!(
            "{time}  #{}  started (gatehouse {version})",
            entry.seq
        )),
        Body::Completion { .. } | Body::Seal { .. } => None,
    }
}
