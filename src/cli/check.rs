//! `gatehouse check` and `gatehouse lists compile`: both load the policy and its lists
//! the way start-up does and report what the list build skipped; `check` then prints a
//! summary of the policy and the school CA, `lists compile` rebuilds the compiled cache.

use std::process::ExitCode;

use anyhow::{bail, Result};

use gatehouse::lists::CacheMode;
use gatehouse::snapshot::Snapshot;

use super::common::{load, ConfigArg};

/// What the list build skipped or could not do: the lists still load, so these are
/// warnings, but a technician should see every one.
pub fn print_list_warnings(snap: &Snapshot) {
    for dir in &snap.report.missing_dirs {
        eprintln!(
            "warning: {}: no list directory; the category matches nothing",
            dir.display()
        );
    }
    for w in &snap.report.warnings {
        if w.line == 0 {
            eprintln!("warning: {}: {}", w.file.display(), w.message);
        } else {
            eprintln!(
                "warning: {}:{}: skipped {}",
                w.file.display(),
                w.line,
                w.message
            );
        }
    }
    let unshown = (snap.report.skipped as usize).saturating_sub(snap.report.warnings.len());
    if unshown > 0 {
        eprintln!("warning: … and {unshown} more list lines skipped");
    }
    if let Some(e) = &snap.report.cache_error {
        eprintln!("warning: compiled lists not cached: {e}");
    }
}

/// How illegal lists with URL-level entries apply to HTTPS, whose paths the proxy
/// cannot see without inspection: which hosts are refused whole, and which entries can
/// only ever match plain HTTP.
fn print_illegal_over_https(snap: &Snapshot) {
    let p = &snap.policy;
    let illegal = p.illegal();
    let mut hosts: Vec<&str> = snap
        .lists
        .urls
        .hosts()
        .filter(|(_, bits)| bits & illegal.bits() != 0)
        .map(|(host, _)| host)
        .collect();
    let (mut hashes, mut expressions) = (0, 0);
    for id in illegal.iter() {
        let c = &snap.report.counts[id.index()];
        hashes += c.hashes;
        expressions += c.expressions;
    }
    if hosts.is_empty() && hashes == 0 && expressions == 0 {
        return;
    }
    hosts.sort_unstable();
    let shown: Vec<&str> = hosts.iter().take(5).copied().collect();
    let more = if hosts.len() > shown.len() {
        ", …"
    } else {
        ""
    };
    if snap.inspection.is_some() {
        println!(
            "illegal content over HTTPS (the school CA is there: TLS inspection is available):"
        );
        if !hosts.is_empty() {
            println!(
                "  {} host(s) with URL-level entries are inspected for every group, whatever its \
inspect_tls, so that only the listed pages are refused ({}{more}); devices must trust the school CA",
                hosts.len(),
                shown.join(", "),
            );
        }
        if hashes + expressions > 0 {
            println!(
                "  {hashes} hashed URL(s) and {expressions} expression(s) name no host a tunnel \
can be matched on: they match plain HTTP and the requests of inspected tunnels"
            );
        }
        return;
    }
    println!("illegal content over HTTPS (TLS inspection is not configured):");
    if !hosts.is_empty() {
        println!(
            "  {} host(s) with URL-level entries are refused whole over HTTPS, for every group: \
the path of an HTTPS request cannot be seen ({}{more})",
            hosts.len(),
            shown.join(", "),
        );
        println!(
            "  over plain HTTP only the listed pages are refused; with a school CA \
(`gatehouse ca init`) these hosts are inspected instead, and only the listed pages refused"
        );
    }
    if hashes + expressions > 0 {
        println!(
            "  {hashes} hashed URL(s) and {expressions} expression(s) name no host a tunnel \
can be matched on: they match plain HTTP only"
        );
    }
}

/// `gatehouse check`: loads everything the proxy would load and prints what it found.
pub fn check(args: &ConfigArg) -> Result<ExitCode> {
    // As `run` does, before any thread: GSSAPI finds the keytab through KRB5_KTNAME.
    if let Some(keytab) = gatehouse::kerberos::keytab_of(&args.config) {
        std::env::set_var("KRB5_KTNAME", format!("FILE:{}", keytab.display()));
    }
    let snap = load(&args.config, CacheMode::Use)?;
    print_list_warnings(&snap);
    let p = &snap.policy;
    println!("policy {}: OK", p.path.display());
    println!("school: {} (time zone {})", p.school, p.timezone.name());
    println!(
        "lists: {} ({} in {} ms)",
        p.lists_dir.display(),
        if snap.report.from_cache {
            "compiled cache"
        } else {
            "compiled from text"
        },
        snap.report.elapsed.as_millis()
    );
    println!("categories: {}", p.categories().count());
    println!(
        "  {:<20} {:<14} {:>9} {:>6} {:>6} {:>6}",
        "name", "severity", "domains", "urls", "exprs", "terms"
    );
    for (id, def) in p.categories() {
        let c = &snap.report.counts[id.index()];
        println!(
            "  {:<20} {:<14} {:>9} {:>6} {:>6} {:>6}",
            def.category.name,
            def.category.severity.as_str(),
            c.domains,
            c.urls + c.hashes,
            c.expressions,
            c.terms
        );
    }
    print_illegal_over_https(&snap);
    println!("schedules:");
    for s in p.schedules() {
        let windows: Vec<String> = s.windows.iter().map(|w| w.to_string()).collect();
        println!("  {:<12} {} ({})", s.name, windows.join(", "), s.tz.name());
    }
    println!("groups:");
    for (_, g) in p.groups() {
        let mut parts = vec![format!("{} mode", g.mode)];
        let blocked = p.category_names(g.block);
        if !blocked.is_empty() {
            parts.push(format!("blocks {}", blocked.join(" ")));
        }
        for (c, s) in &g.allow_during {
            parts.push(format!(
                "{} only during {}",
                p.category(*c).name,
                p.schedule(*s).name
            ));
        }
        let allowed = p.category_names(g.allow);
        if !allowed.is_empty() {
            parts.push(format!("allows {}", allowed.join(" ")));
        }
        if !g.allow_sites.is_empty() || !g.block_sites.is_empty() {
            parts.push(format!(
                "{} allowed / {} blocked sites",
                g.allow_sites.entries().len(),
                g.block_sites.entries().len()
            ));
        }
        if g.block_ip_literals {
            parts.push("IP-address hosts blocked".to_string());
        }
        let level = |l: Option<gatehouse::core::safe_search::Level>| match l {
            Some(l) => l.as_str(),
            None => "off",
        };
        parts.push(format!(
            "safe search {}, YouTube {}",
            if g.safe_search.search.is_some() {
                "on"
            } else {
                "off"
            },
            level(g.safe_search.youtube)
        ));
        println!("  {:<12} {}", g.name, parts.join("; "));
    }
    println!("safe-search engines (dialled instead, without interception):");
    for e in p.safe_search.engines() {
        let hosts: Vec<String> = e.hosts.iter().map(|h| h.to_string()).collect();
        let moderate = match &e.moderate {
            Some(m) => format!(", moderate → {m}"),
            None => String::new(),
        };
        println!(
            "  {:<12} {} ({}) → {}{moderate}",
            e.name,
            hosts.join(" "),
            e.setting.as_str(),
            e.strict
        );
    }
    let id = &p.identity;
    println!(
        "identity: default group {}; {} subnets; {} users",
        p.group(id.default_group).name,
        id.subnets().len(),
        id.users().count()
    );
    for s in id.subnets() {
        println!(
            "  {:<20} → {}{}{}",
            s.net.to_string(),
            p.group(s.group).name,
            if s.auth == gatehouse::core::identity::AuthRequirement::Required {
                " (authentication required)"
            } else {
                ""
            },
            if s.description.is_empty() {
                String::new()
            } else {
                format!("  # {}", s.description)
            }
        );
    }
    print_ca(&snap);
    print_pac(&snap);
    print_alerts(&snap);
    print_teachers(&snap);
    super::lists::print_feeds(&snap);
    print_transparent(&snap);
    check_grants_store(&snap)?;
    super::identity::check_kerberos(&snap)?;
    super::identity::check_directory(&snap)?;
    Ok(ExitCode::SUCCESS)
}

/// With grants in etcd: reads them once and validates them against this policy, as
/// the file's are when the policy loads. An unreachable store or an invalid grant is
/// an error (the grants could not be checked, or a node would refuse them).
fn check_grants_store(snap: &Snapshot) -> Result<()> {
    use gatehouse::etcd_grants::{fetch, FetchError};
    let gatehouse::settings::GrantsStore::Etcd(etcd) = &snap.settings.grants_store else {
        return Ok(());
    };
    match fetch(etcd, &snap.policy, &snap.lists, chrono::Utc::now()) {
        Ok(set) => {
            println!(
                "grants: etcd at {} under {}: {} in the store, {} archived",
                etcd.endpoints.join(", "),
                etcd.prefix,
                set.grants.len(),
                set.archived.len()
            );
            Ok(())
        }
        Err(FetchError::Invalid(errors)) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            bail!(
                "{} error{} in the grants in etcd; the nodes keep the grants they have",
                errors.0.len(),
                if errors.0.len() == 1 { "" } else { "s" }
            )
        }
        Err(e) => bail!("grants: {e}"),
    }
}

/// Days before the school CA's expiry from which `check` warns: time to make a new one
/// and enrol every device with it.
const CA_EXPIRY_WARNING_DAYS: i64 = 90;

/// The school CA: where it is, its fingerprint and expiry, and whether its key is kept
/// private. Problems are warnings; a CA that the enrolment listener needs and cannot
/// have already failed the load.
fn print_ca(snap: &Snapshot) {
    use gatehouse::ca::{self, CaCert, CaError};
    let inspection = &snap.settings.inspection;
    let loaded = match &snap.ca {
        Some(ca) => Ok(CaCert::clone(ca)),
        None => CaCert::load(&inspection.ca_cert),
    };
    match loaded {
        Ok(cert) => {
            let now = chrono::Utc::now();
            let days = cert.days_left(now);
            let until = cert.not_after.format("%Y-%m-%d");
            println!("school CA: {} ({})", cert.path.display(), cert.subject);
            println!("  SHA-256 {}", cert.sha256);
            println!("  expires {until} ({days} days)");
            if cert.expired(now) {
                eprintln!(
                    "warning: the school CA expired on {until}: make a new one with `gatehouse ca init --force` and enrol every device with it"
                );
            } else if days < CA_EXPIRY_WARNING_DAYS {
                eprintln!(
                    "warning: the school CA expires on {until}, in {days} days: make a new one with `gatehouse ca init --force` and enrol every device with it before then"
                );
            }
            match ca::mode_of(&inspection.ca_key) {
                Ok(None) => eprintln!(
                    "warning: {}: the school CA's key is missing",
                    inspection.ca_key.display()
                ),
                Ok(Some(mode)) if mode & 0o077 != 0 => eprintln!(
                    "warning: {}: the school CA's key can be read by others (mode {mode:04o}): chmod 600 it",
                    inspection.ca_key.display()
                ),
                Ok(Some(_)) => {}
                Err(e) => eprintln!("warning: {e}"),
            }
        }
        Err(CaError::Missing { path }) => println!(
            "school CA: none ({} does not exist; `gatehouse ca init` creates it)",
            path.display()
        ),
        Err(e) => eprintln!("warning: school CA: {e}"),
    }
    match inspection.enrol_listen {
        Some(addr) => println!(
            "  enrolment: {}/ca.crt (listening on {addr})",
            ca::download_base(addr)
        ),
        None => println!("  enrolment listener: off ([inspection] enrol_listen)"),
    }
    let p = &snap.policy;
    let inspected: Vec<&str> = p
        .groups()
        .filter(|(_, g)| g.inspect_tls)
        .map(|(_, g)| g.name.as_str())
        .collect();
    match (&snap.inspection, inspected.is_empty()) {
        (None, _) => println!("  TLS inspection: unavailable (no school CA and key)"),
        (Some(_), true) => println!("  TLS inspection: available; no group has inspect_tls"),
        (Some(_), false) => println!(
            "  TLS inspection: groups {} ({} categories and {} sites never inspected)",
            inspected.join(", "),
            p.inspection.never_categories.iter().count(),
            p.inspection.never_sites.entries().len()
        ),
    }
}

/// Where browsers get the proxy auto-configuration script, and what it sends where.
fn print_pac(snap: &Snapshot) {
    let Some(pac) = &snap.settings.pac else {
        println!("proxy auto-configuration: off ([pac])");
        return;
    };
    let proxy = gatehouse::ca::download_base(snap.settings.server.listen);
    println!("proxy auto-configuration: {proxy}/proxy.pac");
    if let Some(addr) = snap.settings.inspection.enrol_listen {
        let base = gatehouse::ca::download_base(addr);
        let wpad = if addr.port() == 80 {
            "; WPAD's http://wpad.<domain>/wpad.dat reaches it when wpad.<domain> names this server"
        } else {
            "; WPAD needs it on port 80 (set [inspection] enrol_listen to port 80)"
        };
        println!("  also {base}/proxy.pac and {base}/wpad.dat{wpad}");
    }
    println!("  proxied: {}", pac.pac.route());
    let mut direct = vec!["localhost and 127.0.0.0/8".to_string()];
    if pac.pac.direct_plain_hostnames {
        direct.push("plain host names".into());
    }
    direct.extend(
        pac.pac
            .direct_domains
            .iter()
            .map(|d| format!("{d} and under")),
    );
    direct.extend(pac.pac.direct_networks.iter().map(|n| n.to_string()));
    println!("  direct: {}", direct.join(", "));
    if pac.pac.fallback_direct {
        println!(
            "warning: [pac] fallback_direct: when every proxy is down, browsers go to the internet unfiltered"
        );
    }
}

/// Where alerts go, and which categories send them.
fn print_alerts(snap: &gatehouse::snapshot::Snapshot) {
    use gatehouse::alerts::settings::{DigestPeriod, SmtpTls};
    use gatehouse::core::category::AlertMode;
    let a = &snap.settings.alerts;
    let mut channels = Vec::new();
    if let Some(e) = &a.email {
        let to: Vec<String> = e.to.iter().map(|m| m.email.to_string()).collect();
        let tls = match e.tls {
            SmtpTls::StartTls => "STARTTLS",
            SmtpTls::Tls => "TLS",
            SmtpTls::None => "NO ENCRYPTION",
        };
        channels.push(format!(
            "email to {} via {}:{} ({tls})",
            to.join(", "),
            e.server,
            e.port
        ));
    }
    if let Some(w) = &a.webhook {
        channels.push(format!("webhook {} (signed)", w.url));
    }
    if channels.is_empty() {
        println!("alerts: no channel configured: nothing is sent (the weekly report still shows every attempt)");
    } else {
        println!(
            "alerts: {}; digest {}; outbox {}",
            channels.join("; "),
            match a.digest {
                DigestPeriod::Hourly => "hourly",
                DigestPeriod::Daily => "daily",
            },
            a.outbox.display()
        );
    }
    let p = &snap.policy;
    for (label, pick) in [
        ("immediate", AlertMode::Immediate),
        ("digest", AlertMode::Digest),
    ] {
        let names: Vec<&str> = p
            .categories()
            .filter(|(_, d)| d.category.alert == pick || d.category.term_alert == pick)
            .map(|(_, d)| d.category.name.as_str())
            .collect();
        if !names.is_empty() {
            println!("  {label:<10} {}", names.join(" "));
        }
    }
    let on_allow: Vec<&str> = p
        .categories()
        .filter(|(_, d)| d.category.alert_on_allow)
        .map(|(_, d)| d.category.name.as_str())
        .collect();
    if !on_allow.is_empty() {
        println!("  on allowed visits too: {}", on_allow.join(" "));
    }
}

/// Teachers' lesson controls: the lesson schedule, the longest override, the rooms,
/// the teachers' tokens and what they may act for, and the locked categories.
fn print_teachers(snap: &gatehouse::snapshot::Snapshot) {
    let p = &snap.policy;
    let t = &p.teachers;
    let teachers: Vec<String> = snap
        .settings
        .admin
        .tokens
        .iter()
        .filter(|tok| tok.role == gatehouse::settings::Role::Teacher)
        .map(|tok| {
            let mut what = tok.teacher.classrooms.clone();
            what.extend(tok.teacher.groups.iter().cloned());
            format!("{} ({})", tok.name, what.join(", "))
        })
        .collect();
    println!(
        "teachers: lessons {}; overrides at most {} minutes; {} classroom{}; {} teacher token{}{}",
        t.lessons
            .map(|s| format!("schedule {:?}", p.schedule(s).name))
            .unwrap_or_else(|| "none (overrides last the minutes asked for)".into()),
        t.max_duration.num_minutes(),
        t.classrooms.len(),
        if t.classrooms.len() == 1 { "" } else { "s" },
        teachers.len(),
        if teachers.len() == 1 { "" } else { "s" },
        if teachers.is_empty() {
            String::new()
        } else {
            format!(": {}", teachers.join("; "))
        }
    );
    for (pattern, scope) in &t.directory {
        let mut what = scope.classrooms.clone();
        what.extend(scope.groups.iter().cloned());
        println!(
            "  directory  members of {} act for {}",
            match pattern {
                gatehouse::core::directory::GroupPattern::Dn(dn) => dn.clone(),
                gatehouse::core::directory::GroupPattern::Cn(cn) =>
                    format!("any group named {cn:?}"),
            },
            what.join(", ")
        );
    }
    let locked: Vec<&str> = p
        .categories()
        .filter(|(_, d)| d.category.locked)
        .map(|(_, d)| d.category.name.as_str())
        .collect();
    if !locked.is_empty() {
        println!("  locked     {}", locked.join(" "));
    }
}

/// `gatehouse lists compile`: rebuilds the compiled-list cache from the text lists.
pub fn compile(args: &ConfigArg) -> Result<ExitCode> {
    let snap = load(&args.config, CacheMode::Rebuild)?;
    print_list_warnings(&snap);
    if snap.report.cache_error.is_some() {
        bail!("the compiled lists could not be written");
    }
    println!(
        "compiled {} domain entries into {} in {} ms",
        snap.lists.domains.len(),
        snap.policy.lists_cache.display(),
        snap.report.elapsed.as_millis()
    );
    Ok(ExitCode::SUCCESS)
}

/// Transparent mode's listeners, and how its devices are identified.
fn print_transparent(snap: &Snapshot) {
    let t = &snap.settings.transparent;
    let listeners: Vec<String> = [("http", t.http_listen), ("https", t.https_listen)]
        .into_iter()
        .filter_map(|(kind, addr)| addr.map(|a| format!("{kind} {a}")))
        .collect();
    if listeners.is_empty() {
        println!("transparent mode: off ([transparent])");
        return;
    }
    println!(
        "transparent mode: {} (redirect TCP 80 and 443 to them: deploy/nftables/gatehouse-transparent.nft)",
        listeners.join(", ")
    );
    println!(
        "  identity by source subnet only; subnets with auth = \"required\" get the default group {}",
        snap.policy.group(snap.policy.identity.default_group).name
    );
}
