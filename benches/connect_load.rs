//! CONNECT load: what a TLS tunnel through a proxy costs, against the same TLS origin
//! reached directly.
//!
//! `cargo bench --bench connect_load -- [SECONDS] [WORKERS] [BULK_MIB] direct
//! NAME=HOST:PORT …`, with `ORIGIN_PORT` to fix the origin's port (`benches/connect.sh`
//! runs it beside Gatehouse and Squid, pinned the way the shared harness pins its rows). The tool starts its own TLS origin on
//! loopback (a certificate for `origin.test` from a throwaway CA, made here with rcgen)
//! and, for `direct` and each proxy in turn, measures:
//!
//! * **tunnels per second**: `WORKERS` clients each loop for `SECONDS` over a new TCP
//!   connection, `CONNECT 127.0.0.1:PORT` (skipped for `direct`), a full TLS handshake
//!   (no resumption) naming `origin.test`, one small request and its answer, and close;
//! * **bulk MB/s through one tunnel**: one tunnel (or one direct connection) downloading
//!   `BULK_MIB` MiB, timed from the request to the last byte;
//!
//! and prints one `RESULT` line for each, then each proxy's share of the direct figure.
//! A tunnel that is spliced (not inspected) passes the TLS bytes unchanged, so its bulk
//! rate should be close to direct TLS: the proxy copies bytes and decides once.
//!
//! A target written `inspect:NAME=HOST:PORT` is a proxy that inspects (Gatehouse with
//! `inspect_tls`, Squid with `ssl_bump`); the client trusts its CA (`PROXY_CAS`, PEM
//! files separated by `:`), and the tool measures:
//!
//! * **new inspected connections per second**: as tunnels per second (a new connection,
//!   a full handshake with the proxy's minted certificate, one request, close);
//! * **requests per second on kept-alive inspected connections**: `WORKERS` clients
//!   each keep one inspected connection and send `GET /small` on it again and again;
//!
//! printed as one `INSPECT` line each. With `PROXY_PIDS` (`NAME=PID,…`), each phase
//! also reports the proxy's CPU time per connection and per request (user + system,
//! from `/proc/PID/stat`): on this 2-core machine the load tool (client and origin TLS
//! on one core) saturates before a fast proxy does, and CPU per request is then the
//! comparison that holds. The tool's own ceiling is the `direct` keep-alive figure
//! (`KEEPALIVE direct`: the same requests with no proxy). `ORIGIN_CERT`, `ORIGIN_KEY` and `ORIGIN_CA`
//! (PEM files) make the origin use a given certificate, so that the proxies can be told
//! to trust its CA before the tool starts; without them it makes its own.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a benchmark reads the clock

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const SMALL: &[u8] = b"hello from the origin\n";

/// The origin's CA, certificate and key: from `ORIGIN_CA`, `ORIGIN_CERT` and
/// `ORIGIN_KEY` when set, else a throwaway CA and a certificate for `origin.test`.
fn certificates() -> (
    CertificateDer<'static>,
    CertificateDer<'static>,
    PrivateKeyDer<'static>,
) {
    use rustls::pki_types::pem::PemObject;
    if let (Ok(ca), Ok(cert), Ok(key)) = (
        std::env::var("ORIGIN_CA"),
        std::env::var("ORIGIN_CERT"),
        std::env::var("ORIGIN_KEY"),
    ) {
        return (
            CertificateDer::from_pem_file(&ca).expect("ORIGIN_CA"),
            CertificateDer::from_pem_file(&cert).expect("ORIGIN_CERT"),
            PrivateKeyDer::from_pem_file(&key).expect("ORIGIN_KEY"),
        );
    }
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "connect_load bench CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["origin.test".to_string()]).expect("params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
    (
        ca.der().clone(),
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// The origin: `GET /small` answers a few bytes and closes; `GET /big/N` streams N MiB.
async fn origin(listener: TcpListener, acceptor: TlsAcceptor) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut pending = Vec::new();
            let mut buf = [0u8; 4096];
            // Requests one after another on the connection until one says
            // `Connection: close` (or asks for /big).
            loop {
                let end = loop {
                    if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                };
                let head: Vec<u8> = pending.drain(..end).collect();
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let close = text.contains("\r\nconnection: close") || path.starts_with("/big/");
                if !close {
                    let hdr = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", SMALL.len());
                    if tls.write_all(hdr.as_bytes()).await.is_err()
                        || tls.write_all(SMALL).await.is_err()
                    {
                        return;
                    }
                    continue;
                }
                respond(&mut tls, &path).await;
                return;
            }
        });
    }
}

/// The last answer on an origin connection: `/big/N` streams N MiB, anything else a
/// few bytes; then the connection closes.
async fn respond<S: tokio::io::AsyncWrite + Unpin>(tls: &mut S, path: &str) {
    if let Some(mib) = path.strip_prefix("/big/") {
        let mib: usize = mib.parse().unwrap_or(1);
        let chunk = vec![b'x'; 1 << 20];
        let hdr = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            mib << 20
        );
        if tls.write_all(hdr.as_bytes()).await.is_err() {
            return;
        }
        for _ in 0..mib {
            if tls.write_all(&chunk).await.is_err() {
                return;
            }
        }
    } else {
        let hdr = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            SMALL.len()
        );
        let _ = tls.write_all(hdr.as_bytes()).await;
        let _ = tls.write_all(SMALL).await;
    }
    let _ = tls.shutdown().await;
}

/// CPU time (user + system, all threads) of process `pid` so far, in microseconds.
fn cpu_us(pid: Option<u32>) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ: 100 on Linux for every architecture this runs on.
    let per_second = 100u64;
    Some(ticks * 1_000_000 / per_second)
}

/// Whether CONNECT names `origin.test` rather than the origin's address (set while an
/// inspecting proxy is measured).
static CONNECT_BY_NAME: AtomicBool = AtomicBool::new(false);

/// Opens a TCP connection to `via` (a proxy) and asks it for a tunnel to `origin`, or
/// connects to `origin` directly.
async fn open(via: Option<SocketAddr>, origin: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(proxy) = via else {
        let s = TcpStream::connect(origin).await?;
        s.set_nodelay(true)?;
        return Ok(s);
    };
    let mut s = TcpStream::connect(proxy).await?;
    s.set_nodelay(true)?;
    // Inspecting proxies are asked for the name (which they resolve to the origin, by
    // `[server.resolve]` or Squid's `hosts_file`): both check the origin's certificate
    // against it. Spliced tunnels go to the address, as before.
    let req = if CONNECT_BY_NAME.load(Ordering::Relaxed) {
        let port = origin.port();
        format!("CONNECT origin.test:{port} HTTP/1.1\r\nHost: origin.test:{port}\r\n\r\n")
    } else {
        format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n")
    };
    s.write_all(req.as_bytes()).await?;
    // Read the answer's head byte by byte: nothing after it may be taken from the TLS
    // stream that follows.
    let mut head = Vec::with_capacity(128);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 || head.len() > 8192 {
            return Err(std::io::Error::other("the proxy closed the tunnel"));
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        return Err(std::io::Error::other(format!(
            "the proxy refused the tunnel: {}",
            String::from_utf8_lossy(&head).lines().next().unwrap_or("")
        )));
    }
    Ok(s)
}

/// One exchange over a new tunnel: handshake, request, whole answer. Bytes of body read.
async fn exchange(
    via: Option<SocketAddr>,
    origin: SocketAddr,
    connector: &TlsConnector,
    path: &str,
) -> std::io::Result<u64> {
    let tcp = open(via, origin).await?;
    let name = ServerName::try_from("origin.test").map_err(std::io::Error::other)?;
    let mut tls = connector.connect(name, tcp).await?;
    // The port in Host: a proxy that reads the request (an inspecting one) must not
    // take it for 443.
    let port = origin.port();
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: origin.test:{port}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        match tls.read(&mut buf).await {
            Ok(0) => break,
            // Only the origin's own answer counts: a proxy's error page is a failure.
            Ok(n) if total == 0 && !buf[..n].starts_with(b"HTTP/1.1 200") => {
                return Err(std::io::Error::other(format!(
                    "not 200: {}",
                    String::from_utf8_lossy(&buf[..n.min(40)])
                )));
            }
            Ok(n) => total += n as u64,
            // A peer that closes without close_notify after the whole body is fine here.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Tunnels per second with `workers` clients for `secs`; (rate, errors).
async fn tunnels_per_second(
    via: Option<SocketAddr>,
    origin: SocketAddr,
    connector: TlsConnector,
    workers: usize,
    secs: u64,
) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (done, errors, stop, connector) = (
            done.clone(),
            errors.clone(),
            stop.clone(),
            connector.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match exchange(via, origin, &connector, "/small").await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    (
        done.load(Ordering::Relaxed) as f64 / elapsed,
        errors.load(Ordering::Relaxed),
    )
}

/// Reads one response (head, then a `Content-Length` body) from `tls`; false when the
/// connection ended or the answer was not `200`.
async fn read_response<S: tokio::io::AsyncBufRead + Unpin>(tls: &mut S) -> std::io::Result<bool> {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    let mut length = 0usize;
    let mut ok = false;
    let mut first = true;
    loop {
        line.clear();
        if tls.read_line(&mut line).await? == 0 {
            return Ok(false);
        }
        if first {
            ok = line.starts_with("HTTP/1.1 200");
            first = false;
        } else if line == "\r\n" {
            break;
        } else if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body).await?;
    Ok(ok)
}

/// Requests per second on kept-alive inspected connections: `workers` clients each
/// keep one tunnel and send `GET /small` on it again and again for `secs`; (rate,
/// errors). A client whose connection fails opens another.
async fn keepalive_requests_per_second(
    via: Option<SocketAddr>,
    origin: SocketAddr,
    connector: TlsConnector,
    workers: usize,
    secs: u64,
) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (done, errors, stop, connector) = (
            done.clone(),
            errors.clone(),
            stop.clone(),
            connector.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let req = format!(
                "GET /small HTTP/1.1\r\nHost: origin.test:{}\r\n\r\n",
                origin.port()
            );
            let req = req.as_bytes();
            while !stop.load(Ordering::Relaxed) {
                let Ok(tcp) = open(via, origin).await else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let Ok(name) = ServerName::try_from("origin.test") else {
                    return;
                };
                let Ok(tls) = connector.connect(name, tcp).await else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let mut tls = tokio::io::BufReader::new(tls);
                while !stop.load(Ordering::Relaxed) {
                    if tls.get_mut().write_all(req).await.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    match read_response(&mut tls).await {
                        Ok(true) => done.fetch_add(1, Ordering::Relaxed),
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    };
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    (
        done.load(Ordering::Relaxed) as f64 / elapsed,
        errors.load(Ordering::Relaxed),
    )
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let number =
        |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (secs, workers, bulk_mib) = (number(0, 5), number(1, 32) as usize, number(2, 256));
    // (name, proxy address, inspects)
    let mut targets: Vec<(String, Option<SocketAddr>, bool)> = args
        .iter()
        .skip(3)
        .filter_map(|a| {
            let (inspect, a) = match a.strip_prefix("inspect:") {
                Some(rest) => (true, rest),
                None => (false, a.as_str()),
            };
            match a.split_once('=') {
                Some((name, addr)) => addr
                    .parse()
                    .ok()
                    .map(|addr| (name.to_string(), Some(addr), inspect)),
                None => (a == "direct").then(|| ("direct".to_string(), None, false)),
            }
        })
        .collect();
    if targets.is_empty() {
        targets.push(("direct".to_string(), None, false));
    }
    // NAME=PID,… : the proxies' processes, for their CPU time.
    let pids: std::collections::HashMap<String, u32> = std::env::var("PROXY_PIDS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let (ca, cert, key) = certificates();
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server config");
        // ORIGIN_PORT fixes the port, for proxies that only tunnel to listed ports.
        let port: u16 = std::env::var("ORIGIN_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let origin_addr = listener.local_addr().expect("address");
        tokio::spawn(origin(listener, TlsAcceptor::from(Arc::new(server))));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("root");
        // The inspecting proxies' CAs, as a school device trusts its proxy's.
        for file in std::env::var("PROXY_CAS").unwrap_or_default().split(':') {
            if file.is_empty() {
                continue;
            }
            use rustls::pki_types::pem::PemObject;
            roots
                .add(CertificateDer::from_pem_file(file).expect("PROXY_CAS file"))
                .expect("proxy CA");
        }
        let mut client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every tunnel pays a full handshake, as a new client would.
        client.resumption = rustls::client::Resumption::disabled();
        let connector = TlsConnector::from(Arc::new(client));
        println!("origin {origin_addr}; {secs} s per run, {workers} clients, {bulk_mib} MiB bulk");
        let mut direct = (0.0, 0.0);
        for (name, via, inspect) in targets {
            CONNECT_BY_NAME.store(inspect, Ordering::Relaxed);
            if inspect && via.is_some() {
                let pid = pids.get(&name).copied();
                let cpu0 = cpu_us(pid);
                let (conns, conn_errors) =
                    tunnels_per_second(via, origin_addr, connector.clone(), workers, secs).await;
                let cpu1 = cpu_us(pid);
                let (rps, rps_errors) = keepalive_requests_per_second(
                    via,
                    origin_addr,
                    connector.clone(),
                    workers,
                    secs,
                )
                .await;
                let cpu2 = cpu_us(pid);
                // Proxy CPU per unit of work, in microseconds (0 when unknown).
                let per = |from: Option<u64>, to: Option<u64>, units: f64| match (from, to) {
                    (Some(a), Some(b)) if units > 0.0 => (b - a) as f64 / units,
                    _ => 0.0,
                };
                let s = secs as f64;
                let cpu_conn = per(cpu0, cpu1, conns * s);
                let cpu_req = per(cpu1, cpu2, rps * s);
                println!(
                    "INSPECT {name} new_conns_per_s={conns:.0} errors={conn_errors} keepalive_rps={rps:.0} errors={rps_errors} cpu_us_per_conn={cpu_conn:.0} cpu_us_per_req={cpu_req:.1}"
                );
                continue;
            }
            if via.is_none() {
                let (rps, errors) =
                    keepalive_requests_per_second(None, origin_addr, connector.clone(), workers, secs)
                        .await;
                println!("KEEPALIVE direct rps={rps:.0} errors={errors}");
            }
            let pid = pids.get(&name).copied();
            let cpu0 = cpu_us(pid);
            let me0 = cpu_us(Some(std::process::id()));
            let (rate, errors) =
                tunnels_per_second(via, origin_addr, connector.clone(), workers, secs).await;
            let cpu1 = cpu_us(pid);
            let me1 = cpu_us(Some(std::process::id()));
            let t = Instant::now();
            let bulk = exchange(via, origin_addr, &connector, &format!("/big/{bulk_mib}")).await;
            let mbps = match bulk {
                Ok(bytes) if bytes >= bulk_mib << 20 => {
                    bytes as f64 / t.elapsed().as_secs_f64() / 1e6
                }
                _ => 0.0,
            };
            let cpu2 = cpu_us(pid);
            // The proxy's CPU per tunnel and per MiB of bulk (0 when unknown).
            let (cpu_tunnel, cpu_mib) = match (cpu0, cpu1, cpu2) {
                (Some(a), Some(b), Some(c)) if rate > 0.0 => (
                    (b - a) as f64 / (rate * secs as f64),
                    (c - b) as f64 / bulk_mib as f64,
                ),
                _ => (0.0, 0.0),
            };
            // The load tool's own CPU (client and origin) per tunnel.
            let own = match (me0, me1) {
                (Some(a), Some(b)) if rate > 0.0 => (b - a) as f64 / (rate * secs as f64),
                _ => 0.0,
            };
            println!(
                "RESULT {name} tunnels_per_s={rate:.0} errors={errors} bulk_MBps={mbps:.0} cpu_us_per_tunnel={cpu_tunnel:.0} cpu_us_per_MiB={cpu_mib:.0} load_tool_cpu_us_per_tunnel={own:.0}"
            );
            if via.is_none() {
                direct = (rate, mbps);
            } else if direct.0 > 0.0 {
                println!(
                    "  {name}: tunnels {:.2} of direct, bulk {:.2} of direct",
                    rate / direct.0,
                    mbps / direct.1
                );
            }
        }
    });
}
