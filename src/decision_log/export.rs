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
            "device": d.device,
            "original_destination": d.original_destination,
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
            "safe_search": d.safe_search.as_ref().map(|r| serde_json::json!({
                "engine": r.engine,
                "level": r.level.as_str(),
                "dialled": r.dialled,
            })),
            "enforced": d.enforced,
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
    /// A CSV row, quoted by the `csv` crate (RFC 4180: URLs and names may hold commas,
    /// quotes and line breaks), on its way to the output handed in with it; kept between
    /// rows for its capacity.
    row: Vec<u8>,
}

/// Decisions waiting longer than this for their completion are written without it
/// (a long download must not hold memory forever).
const MAX_PENDING: usize = 100_000;

/// A log time (µs since the epoch) as RFC 3339 UTC with milliseconds.
pub fn iso(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The CSV export's columns, in order.
/// New columns go at the end, so a sheet or script that reads columns by position
/// reads an older export and a newer one alike.
const CSV_HEADER: [&str; 22] = [
    "time",
    "node",
    "seq",
    "client",
    "user",
    "group",
    "method",
    "url",
    "sni",
    "categories",
    "action",
    "reason",
    "grant",
    "status",
    "bytes_up",
    "bytes_down",
    "duration_ms",
    "search_terms",
    "safe_search",
    "enforced",
    "device",
    "original_destination",
];

impl Exporter {
    /// An exporter for `format`.
    pub fn new(format: Format) -> Exporter {
        Exporter {
            format,
            pending: HashMap::new(),
            row: Vec::new(),
        }
    }

    /// Writes the header row, if the format has one.
    pub fn header(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.format == Format::Csv {
            writeln!(out, "{}", CSV_HEADER.join(","))?;
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

    fn write(&mut self, r: &Row<'_>, out: &mut dyn Write) -> io::Result<()> {
        let d = r.d;
        match self.format {
            Format::Jsonl => writeln!(out, "{}", r.json()),
            Format::Csv => {
                let fields: [String; CSV_HEADER.len()] = [
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
                    d.safe_search
                        .as_ref()
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                    d.enforced.join(";"),
                    d.device.clone().unwrap_or_default(),
                    d.original_destination.clone().unwrap_or_default(),
                ];
                // Each row goes through a writer of its own into `row`, not straight into
                // `out`: a csv::Writer flushes its output when it is done, and that flush
                // per row would defeat the caller's buffering.
                let mut row = csv::WriterBuilder::new()
                    .buffer_capacity(1024)
                    .from_writer(std::mem::take(&mut self.row));
                row.write_record(&fields)?;
                self.row = row.into_inner().map_err(|e| e.into_error())?;
                let written = out.write_all(&self.row);
                self.row.clear();
                written
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
                // Squid names the server it contacted after the hierarchy code: here,
                // the safe-search address when one was dialled instead.
                let hierarchy = match (&d.action, &d.safe_search) {
                    (StoredAction::Block, _) => "HIER_NONE/-".to_string(),
                    (_, Some(r)) => format!("HIER_DIRECT/{}", r.dialled),
                    (_, None) => "HIER_DIRECT/-".to_string(),
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
            "{time}  #{}  ref {}  {}  {}  {}  {}  {} {}{}  [{}]  {}{}{}{}{}",
            entry.seq,
            crate::decision::format_reference(entry.seq),
            match &d.device {
                Some(device) => format!("{} ({device})", d.client),
                None => d.client.to_string(),
            },
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
            d.safe_search
                .as_ref()
                .map(|r| format!("  safe search {r}"))
                .unwrap_or_default(),
            if d.enforced.is_empty() {
                String::new()
            } else {
                format!("  enforced {}", d.enforced.join("; "))
            },
            d.original_destination
                .as_deref()
                .map(|o| format!("  transparent, to {o}"))
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
        Body::Alert {
            id,
            channel,
            sent,
            attempt,
            subject,
            of,
            detail,
        } => Some(format!(
            "{time}  #{}  alert {id} {channel} {} (attempt {attempt}){}: {subject}  {detail}",
            entry.seq,
            if *sent { "SENT" } else { "FAILED" },
            if *of == 0 {
                String::new()
            } else {
                format!(" about ref {}", crate::decision::format_reference(*of))
            },
        )),
        Body::AlertAck { of, by, note } => Some(format!(
            "{time}  #{}  alert ACKNOWLEDGED about ref {} by {by}{}",
            entry.seq,
            crate::decision::format_reference(*of),
            if note.is_empty() {
                String::new()
            } else {
                format!(": {note}")
            },
        )),
        Body::Console {
            who,
            role,
            action,
            detail,
        } => Some(format!(
            "{time}  #{}  console {action} by {who} ({role})  {detail}",
            entry.seq
        )),
        Body::Completion { .. } | Body::Seal { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_read_back_field_for_field() {
        let decision = Decision {
            client: std::net::IpAddr::from([10, 0, 0, 7]),
            user: Some("o\"brien, pat".into()),
            group: "ks4".into(),
            method: "GET".into(),
            url: "http://a.example/search?q=a,b&r=\"c\"\r\nd".into(),
            sni: None,
            categories: vec!["games".into(), "social".into()],
            action: StoredAction::Block,
            reason: crate::decision_log::ReasonCode::Category,
            grant: None,
            status: 403,
            terms: vec![],
            enforced: Vec::new(),
            safe_search: None,
            device: Some("LIB-PC-04, \"north\"".into()),
            original_destination: Some("[2001:db8::7]:80".into()),
        };
        let mut exporter = Exporter::new(Format::Csv);
        let mut out = Vec::new();
        exporter.header(&mut out).expect("header");
        for seq in [1, 2] {
            let entry = Entry {
                seq,
                time_us: 1_700_000_000_000_000,
                body: Body::Decision(decision.clone()),
            };
            exporter.entry("node-a", &entry, &mut out).expect("row");
        }
        let mut reader = csv::Reader::from_reader(out.as_slice());
        let header: Vec<String> = reader
            .headers()
            .expect("header")
            .iter()
            .map(str::to_string)
            .collect();
        assert_eq!(header, CSV_HEADER);
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
        assert_eq!(rows.len(), 2);
        for (row, seq) in rows.iter().zip(["1", "2"]) {
            let field = |name: &str| {
                let i = CSV_HEADER.iter().position(|h| *h == name).expect("column");
                row.get(i).expect("field").to_string()
            };
            assert_eq!(field("seq"), seq);
            assert_eq!(field("user"), "o\"brien, pat");
            assert_eq!(field("device"), "LIB-PC-04, \"north\"");
            assert_eq!(field("original_destination"), "[2001:db8::7]:80");
            assert_eq!(field("url"), decision.url);
            assert_eq!(field("categories"), "games;social");
            assert_eq!(field("status"), "403");
            assert_eq!(field("duration_ms"), "0.000");
        }
    }
}
