//! Directory sign-ins per second, uncached: what a burst of first sign-ins (the start of
//! the school day, a whole class logging on) asks of the directory.
//!
//! `cargo bench --bench directory_signin -- [SECONDS] [CONCURRENCY…]` (default 5 s at
//! 1, 4 and 16 at once). Starts a real OpenLDAP slapd on loopback (the tests' school
//! tree and helper, StartTLS with a throwaway CA) and, for each concurrency, runs that
//! many tasks each looping over [`gatehouse::directory::authenticate`] for `SECONDS`:
//! exactly what a sign-in that misses the cache does — a connection with StartTLS, the
//! service account's bind and search for the user, the bind as the user, and the group
//! walk (`memberOf`, then nested groups) — alternating between two pupils in nested
//! groups. Prints one `RESULT` line per concurrency: sign-ins per second and the p50 /
//! p99 latency of one sign-in.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a benchmark reads the clock

// The tests' helpers: slapd with the school tree (the module allows its own dead code).
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use gatehouse::settings::{DirectorySettings, DirectoryTls, NestedGroups};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut levels: Vec<usize> = args.filter_map(|s| s.parse().ok()).collect();
    if levels.is_empty() {
        levels = vec![1, 4, 16];
    }
    let slapd = common::slapd::Slapd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let password_file = dir.path().join("service.password");
    std::fs::write(&password_file, common::slapd::SERVICE_PASSWORD).expect("password file");
    let settings = DirectorySettings {
        url: slapd.url(),
        tls: DirectoryTls::StartTls,
        bind_dn: common::slapd::SERVICE_DN.to_string(),
        bind_password_file: password_file,
        base_dn: "dc=school,dc=test".to_string(),
        user_filter: "(&(objectClass=inetOrgPerson)(uid={user}))".to_string(),
        nested_groups: NestedGroups::Walk,
        ca_file: Some(slapd.ca_file.clone()),
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(5),
        cache_ttl: Duration::from_secs(300),
        cache_size: 10_000,
        sync_interval: Duration::from_secs(300),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let users = [("ann", "ann-password"), ("bob", "bob-password")];
    // One sign-in first: it must work, or the figures mean nothing.
    runtime
        .block_on(gatehouse::directory::authenticate(
            &settings,
            "ann",
            "ann-password",
        ))
        .expect("a sign-in against the bench's slapd");
    for &level in &levels {
        let until = Instant::now() + Duration::from_secs(seconds);
        let latencies = runtime.block_on(async {
            let tasks: Vec<_> = (0..level)
                .map(|i| {
                    let settings = settings.clone();
                    tokio::spawn(async move {
                        let mut took = Vec::new();
                        let mut n = i;
                        while Instant::now() < until {
                            let (user, password) = users[n % users.len()];
                            n += 1;
                            let started = Instant::now();
                            gatehouse::directory::authenticate(&settings, user, password)
                                .await
                                .expect("sign-in");
                            took.push(started.elapsed());
                        }
                        took
                    })
                })
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.expect("task"));
            }
            all
        });
        let mut sorted = latencies.clone();
        sorted.sort();
        let pct = |p: f64| {
            sorted
                .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        println!(
            "RESULT concurrency={level} signins_per_s={:.0} p50_ms={:.2} p99_ms={:.2} n={}",
            latencies.len() as f64 / seconds as f64,
            pct(0.50).as_secs_f64() * 1000.0,
            pct(0.99).as_secs_f64() * 1000.0,
            latencies.len()
        );
    }
}
