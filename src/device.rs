//! Device names for the decision log: the policy's `[[identity.devices]]` map first,
//! else a reverse DNS (PTR) lookup of the client's address when `[identity.reverse_dns]`
//! is on.
//!
//! A lookup never holds a request up for long: a request waits at most
//! [`ReverseDnsSettings::wait`] for a name that is not yet known, and is recorded
//! without one if the answer is slower; the lookup goes on in its own task (bounded by
//! [`ReverseDnsSettings::timeout`]) and later requests from the address get its answer.
//! One lookup per address at a time, however many connections a browser opens. Answers,
//! and their absence, are remembered for the record's TTL (at least a minute), at most
//! [`ReverseDnsSettings::cache_ttl`], in a cache of at most
//! [`ReverseDnsSettings::cache_size`] addresses. A name from DNS goes through the same
//! check as the policy's ([`device_name`]): a PTR record is written by whoever runs the
//! reverse zone, so a name that could break a CSV row or a terminal is not recorded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hickory_resolver::config::{NameServerConfig, NameServerConfigGroup, ResolverOpts};
use hickory_resolver::name_server::{NameServerPool, TokioConnectionProvider};
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::proto::xfer::{DnsHandle, DnsRequestOptions, Protocol};
use tokio::sync::watch;

use crate::core::identity::{canonical_ip, device_name, Identity};
use crate::settings::ReverseDnsSettings;

/// How long a failed lookup (a timeout, a server that refused) is remembered, at most:
/// long enough that a browser's burst of requests does not ask again per request,
/// short enough that a DNS server back from a restart is soon used.
const FAILURE_TTL: Duration = Duration::from_secs(30);

/// The shortest time a name found is remembered (unless `cache_ttl` is shorter):
/// dnsmasq, common on school networks, serves its hosts file and DHCP leases with a
/// TTL of 0 by default, and taking that literally would put a DNS query on every
/// request's path.
const MIN_TTL: Duration = Duration::from_secs(60);

/// Device names by address: the policy's map, then reverse DNS, remembered.
#[derive(Default)]
pub struct DeviceNames {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The resolver and the settings it was built from: rebuilt when a reload changes
    /// them.
    resolver: Option<(ReverseDnsSettings, Option<Servers>)>,
    cache: HashMap<IpAddr, Cached>,
    /// Lookups under way: a request for the same address waits on the same one.
    pending: HashMap<IpAddr, watch::Receiver<bool>>,
}

struct Cached {
    name: Option<Arc<str>>,
    until: Instant,
}

impl DeviceNames {
    /// The name of the device at `client`: the policy's, else reverse DNS's when
    /// `reverse_dns` is set (waiting at most its `wait`), else none.
    pub async fn name(
        &self,
        identity: &Identity,
        reverse_dns: Option<&ReverseDnsSettings>,
        client: IpAddr,
    ) -> Option<Arc<str>> {
        let client = canonical_ip(client);
        if let Some(name) = identity.device_for(client) {
            return Some(Arc::from(name));
        }
        self.reverse(reverse_dns?, client).await
    }

    /// The PTR name of `client`, if known within `settings.wait`.
    pub async fn reverse(&self, settings: &ReverseDnsSettings, client: IpAddr) -> Option<Arc<str>> {
        let mut done = {
            let mut state = self.state.lock().ok()?;
            if let Some(hit) = state.cache.get(&client) {
                if hit.until > Instant::now() {
                    return hit.name.clone();
                }
            }
            match state.pending.get(&client) {
                Some(rx) => rx.clone(),
                None => {
                    let resolver = state.resolver(settings)?;
                    let (tx, rx) = watch::channel(false);
                    state.pending.insert(client, rx.clone());
                    tokio::spawn(lookup(
                        self.state.clone(),
                        resolver,
                        settings.clone(),
                        client,
                        tx,
                    ));
                    rx
                }
            }
        };
        if !settings.wait.is_zero() {
            let _ = tokio::time::timeout(settings.wait, done.wait_for(|finished| *finished)).await;
        }
        let state = self.state.lock().ok()?;
        state
            .cache
            .get(&client)
            .filter(|hit| hit.until > Instant::now())
            .and_then(|hit| hit.name.clone())
    }
}

impl State {
    /// The resolver for `settings`, built (again) if they changed; `None` if the
    /// system's resolver configuration cannot be read (said once per change).
    fn resolver(&mut self, settings: &ReverseDnsSettings) -> Option<Servers> {
        match &self.resolver {
            Some((built_for, resolver)) if built_for == settings => resolver.clone(),
            _ => {
                let resolver = build_resolver(settings)
                    .map_err(|e| {
                        tracing::warn!(target: "gatehouse::device", error = %e, "reverse DNS is off: the resolver cannot be set up");
                    })
                    .ok();
                self.resolver = Some((settings.clone(), resolver.clone()));
                self.cache.clear();
                resolver
            }
        }
    }

    fn remember(&mut self, client: IpAddr, name: Option<Arc<str>>, ttl: Duration, max: usize) {
        if self.cache.len() >= max {
            let now = Instant::now();
            self.cache.retain(|_, c| c.until > now);
            if self.cache.len() >= max {
                self.cache.clear();
            }
        }
        self.cache.insert(
            client,
            Cached {
                name,
                until: Instant::now() + ttl,
            },
        );
    }
}

/// The DNS servers asked: hickory's pool of name servers, without the stub resolver in
/// front of it. The stub answers every `127.0.0.0/8` PTR query itself with
/// `localhost` (RFC 6761) and keeps a second cache; here the server configured is
/// asked, and only [`DeviceNames`]'s cache is kept.
type Servers = NameServerPool<TokioConnectionProvider>;

fn build_resolver(
    settings: &ReverseDnsSettings,
) -> Result<Servers, hickory_resolver::ResolveError> {
    let (servers, mut options) = match settings.server {
        Some(server) => (
            NameServerConfigGroup::from(vec![
                NameServerConfig::new(server, Protocol::Udp),
                NameServerConfig::new(server, Protocol::Tcp),
            ]),
            ResolverOpts::default(),
        ),
        None => {
            let (config, options) = hickory_resolver::system_conf::read_system_conf()?;
            (
                NameServerConfigGroup::from(config.name_servers().to_vec()),
                options,
            )
        }
    };
    options.timeout = settings.timeout;
    options.attempts = 1;
    Ok(NameServerPool::from_config(
        servers,
        options,
        TokioConnectionProvider::default(),
    ))
}

/// The PTR names of `client` and the shortest TTL among them; `Ok(None)`: the server
/// says there is none.
async fn ask(
    servers: &Servers,
    client: IpAddr,
) -> Result<Option<(Vec<String>, Duration)>, hickory_resolver::proto::ProtoError> {
    let query = Query::query(Name::from(client), RecordType::PTR);
    let mut answers = servers.lookup(query, DnsRequestOptions::default());
    let response = match answers.next().await {
        Some(Ok(response)) => response,
        Some(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => return Ok(None),
        Some(Err(e)) => return Err(e),
        None => return Ok(None),
    };
    let mut names = Vec::new();
    let mut ttl = u32::MAX;
    for record in response.answers() {
        if let RData::PTR(ptr) = record.data() {
            names.push(ptr.0.to_utf8());
            ttl = ttl.min(record.ttl());
        }
    }
    if names.is_empty() {
        return Ok(None);
    }
    Ok(Some((names, Duration::from_secs(u64::from(ttl)))))
}

/// One PTR lookup: its answer into the cache, then the waiters told.
async fn lookup(
    state: Arc<Mutex<State>>,
    servers: Servers,
    settings: ReverseDnsSettings,
    client: IpAddr,
    done: watch::Sender<bool>,
) {
    let answer = tokio::time::timeout(settings.timeout, ask(&servers, client)).await;
    let (name, ttl) = match answer {
        Ok(Ok(Some((names, ttl)))) => {
            let name = names
                .iter()
                .find_map(|n| device_name(n).ok())
                .map(Arc::<str>::from);
            (name, ttl.max(MIN_TTL).min(settings.cache_ttl))
        }
        Ok(Ok(None)) => {
            tracing::debug!(target: "gatehouse::device", client = %client, "reverse DNS: no name");
            (None, settings.cache_ttl)
        }
        Ok(Err(e)) => {
            tracing::debug!(target: "gatehouse::device", client = %client, error = %e, "reverse DNS lookup failed");
            (None, settings.cache_ttl.min(FAILURE_TTL))
        }
        Err(_) => {
            tracing::debug!(target: "gatehouse::device", client = %client, "reverse DNS lookup timed out");
            (None, settings.cache_ttl.min(FAILURE_TTL))
        }
    };
    if let Ok(mut state) = state.lock() {
        state.remember(client, name, ttl, settings.cache_size);
        state.pending.remove(&client);
    }
    let _ = done.send(true);
}
