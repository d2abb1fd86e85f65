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

/// A throwaway CA and a certificate for `origin.test` signed by it.
fn certificates() -> (
    CertificateDer<'static>,
    CertificateDer<'static>,
    PrivateKeyDer<'static>,
) {
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
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head);
            let path = text.split_whitespace().nth(1).unwrap_or("/");
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
        });
    }
}

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
    let req = format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
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
    let req = format!("GET {path} HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        match tls.read(&mut buf).await {
            Ok(0) => break,
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

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let number =
        |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (secs, workers, bulk_mib) = (number(0, 5), number(1, 32) as usize, number(2, 256));
    let mut targets: Vec<(String, Option<SocketAddr>)> = args
        .iter()
        .skip(3)
        .filter_map(|a| match a.split_once('=') {
            Some((name, addr)) => addr.parse().ok().map(|a| (name.to_string(), Some(a))),
            None => (a == "direct").then(|| ("direct".to_string(), None)),
        })
        .collect();
    if targets.is_empty() {
        targets.push(("direct".to_string(), None));
    }
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
        let mut client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every tunnel pays a full handshake, as a new client would.
        client.resumption = rustls::client::Resumption::disabled();
        let connector = TlsConnector::from(Arc::new(client));
        println!("origin {origin_addr}; {secs} s per run, {workers} clients, {bulk_mib} MiB bulk");
        let mut direct = (0.0, 0.0);
        for (name, via) in targets {
            let (rate, errors) =
                tunnels_per_second(via, origin_addr, connector.clone(), workers, secs).await;
            let t = Instant::now();
            let bulk = exchange(via, origin_addr, &connector, &format!("/big/{bulk_mib}")).await;
            let mbps = match bulk {
                Ok(bytes) if bytes >= bulk_mib << 20 => {
                    bytes as f64 / t.elapsed().as_secs_f64() / 1e6
                }
                _ => 0.0,
            };
            println!("RESULT {name} tunnels_per_s={rate:.0} errors={errors} bulk_MBps={mbps:.0}");
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
