//! Real processes and servers for the proxy tests: the gatehouse binary on an ephemeral
//! port, plain and TLS origin servers (hyper, tokio-rustls with a CA minted by rcgen),
//! and curl. Everything listens on loopback and reports the port it got.

#![allow(dead_code, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::gatehouse;

/// A running `gatehouse run`, killed when dropped.
pub struct Gatehouse {
    child: Child,
    /// The proxy's port.
    pub port: u16,
    /// The admin listener's port.
    pub admin_port: u16,
    /// The directory holding its policy and files (and its decision log).
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Gatehouse {
    /// Writes `files` (the policy as `policy.toml`, users, lists) and starts the proxy.
    pub fn start(files: &[(&str, &str)]) -> Gatehouse {
        Gatehouse::start_in(super::tree(files))
    }

    /// As [`Gatehouse::start`], serving requests on `threads` threads (`--threads`; 1 is
    /// the single-threaded scheduler a one-CPU machine gets, 0 one thread per CPU).
    pub fn start_threads(files: &[(&str, &str)], threads: usize) -> Gatehouse {
        Gatehouse::launch(super::tree(files), threads)
    }

    /// Starts the proxy on the policy already in `dir` (for restarts).
    pub fn start_in(dir: tempfile::TempDir) -> Gatehouse {
        Gatehouse::launch(dir, 0)
    }

    fn launch(dir: tempfile::TempDir, threads: usize) -> Gatehouse {
        let mut child = gatehouse()
            .args(["run", "--threads", &threads.to_string(), "--config"])
            .arg(dir.path().join("policy.toml"))
            .env("RUST_LOG", "info,gatehouse=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gatehouse starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (admin_tx, admin_rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("admin=").nth(1) {
                        let addr = rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        let _ = admin_tx.send(addr);
                    }
                    if line.contains("gatehouse proxy listening") {
                        if let Some(rest) = line.split("listen=").nth(1) {
                            let addr = rest
                                .split_whitespace()
                                .next()
                                .unwrap_or_default()
                                .to_string();
                            let _ = tx.send(addr);
                        }
                    }
                    log.lock().expect("log lock").push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "gatehouse did not start: {:?}",
                    log.lock().expect("log lock")
                );
            }
        };
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("listening port");
        let admin_port = admin_rx
            .recv_timeout(Duration::from_secs(1))
            .ok()
            .and_then(|a| a.rsplit(':').next().and_then(|p| p.parse().ok()))
            .expect("admin port");
        Gatehouse {
            child,
            port,
            admin_port,
            dir,
            log,
        }
    }

    /// The enrolment listener's port, from the log line that announces it.
    pub fn enrol_port(&self) -> u16 {
        assert!(
            self.wait_for_log("enrolment listener", Duration::from_secs(5)),
            "{}",
            self.log()
        );
        self.log()
            .lines()
            .find(|l| l.contains("enrolment listener"))
            .and_then(|l| l.split("enrol=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .expect("enrol=ADDR in the log")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no flush, no seal. Returns the directory for a restart.
    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.take_dir()
    }

    /// SIGTERM, and waits for the exit. Returns the directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.signal("TERM");
        assert_eq!(
            self.wait_exit(Duration::from_secs(15)),
            Some(0),
            "clean exit"
        );
        self.take_dir()
    }

    fn take_dir(&mut self) -> tempfile::TempDir {
        let empty = tempfile::tempdir().expect("placeholder dir");
        std::mem::replace(&mut self.dir, empty)
    }

    /// `http://127.0.0.1:PORT`, for curl's `-x`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything the proxy has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends a signal (`"HUP"`, `"TERM"`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What curl saw.
#[derive(Debug)]
pub struct CurlResult {
    /// curl's exit code.
    pub exit: i32,
    /// HTTP status (0 if none).
    pub status: u16,
    /// Body.
    pub body: String,
    /// Response headers.
    pub headers: String,
}

/// Runs curl with `args`; returns its exit code, the status and the body.
pub fn curl(args: &[&str]) -> CurlResult {
    let header_file = tempfile::NamedTempFile::new().expect("temp file");
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20", "-D"])
        .arg(header_file.path())
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs (install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    CurlResult {
        exit: out.status.code().unwrap_or(-1),
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
        headers: std::fs::read_to_string(header_file.path()).unwrap_or_default(),
    }
}

/// An origin server on loopback, stopped when dropped.
pub struct Origin {
    /// Its port.
    pub port: u16,
    _runtime: tokio::runtime::Runtime,
}

async fn origin_service(
    req: Request<Incoming>,
    label: &'static str,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    if path == "/who" {
        // Which origin answered, and the Host it was asked for.
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-");
        return Ok(Response::new(Full::new(Bytes::from(format!(
            "{label} for {host}"
        )))));
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(Response::new(Full::new(Bytes::from("slow response"))));
    }
    if path == "/ws" && req.headers().contains_key(hyper::header::UPGRADE) {
        // A minimal upgrade: after 101 the connection echoes what it receives.
        let upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut().insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static("websocket"),
        );
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("upgrade"),
        );
        return Ok(resp);
    }
    if path == "/hang" {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if path == "/big" {
        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; 1 << 20]))));
    }
    // `/echo`, and `/search` (a search engine's results page) as the engine got it.
    if path == "/echo" || path == "/search" {
        let mut text = format!("{} {}\n", req.method(), req.uri());
        for (name, value) in req.headers() {
            text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
        }
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        text.push_str(&format!("body: {}\n", String::from_utf8_lossy(&body)));
        return Ok(Response::new(Full::new(Bytes::from(text))));
    }
    Ok(Response::new(Full::new(Bytes::from(format!(
        "hello from {label}"
    )))))
}

impl Origin {
    /// A plain HTTP origin.
    pub fn http() -> Origin {
        Origin::start(None)
    }

    /// A TLS origin with a certificate for `names`, issued by `ca`.
    pub fn https(ca: &TestCa, names: &[&str]) -> Origin {
        Origin::start(Some(ca.server_config(names)))
    }

    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Origin {
        Origin::start_at(tls, SocketAddr::from(([127, 0, 0, 1], 0)), "origin")
            .expect("origin binds")
    }

    /// Origins on one port at several loopback addresses, each answering with its own
    /// label (`hello from LABEL`; `/who` says `LABEL for HOST`): `[server.resolve]` maps
    /// names to addresses, not ports, so two names that must reach two different
    /// servers on the port a request names need two addresses. TLS with a certificate
    /// for `names` when `ca` is given, else plain HTTP. Returns the port and the origins.
    pub fn labelled(
        ca: Option<&TestCa>,
        names: &[&str],
        addresses: &[([u8; 4], &'static str)],
    ) -> (u16, Vec<Origin>) {
        let tls = ca.map(|ca| ca.server_config(names));
        'attempt: for _ in 0..20 {
            let mut origins: Vec<Origin> = Vec::new();
            for (ip, label) in addresses {
                let port = origins.first().map_or(0, |o| o.port);
                match Origin::start_at(tls.clone(), SocketAddr::from((*ip, port)), label) {
                    Ok(o) => origins.push(o),
                    // The port is taken at this address: start again on another.
                    Err(_) => continue 'attempt,
                }
            }
            let port = origins.first().map_or(0, |o| o.port);
            return (port, origins);
        }
        panic!("no port free on every address {addresses:?}");
    }

    fn start_at(
        tls: Option<Arc<rustls::ServerConfig>>,
        addr: SocketAddr,
        label: &'static str,
    ) -> std::io::Result<Origin> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
        let port = listener.local_addr().expect("addr").port();
        runtime.spawn(async move {
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| origin_service(req, label));
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(tls), svc)
                                    .with_upgrades()
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        }
                    }
                });
            }
        });
        Ok(Origin {
            port,
            _runtime: runtime,
        })
    }
}

/// A test certificate authority.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    /// The CA certificate in PEM, for curl's `--cacert`.
    pub pem: String,
}

impl TestCa {
    /// Mints a CA.
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Gatehouse Test CA");
        let cert = params.self_signed(&key).expect("CA cert");
        let pem = cert.pem();
        TestCa { cert, key, pem }
    }

    /// The CA's private key in PEM (for a school CA that Gatehouse signs with).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for `names` signed by this CA, and its key, both in PEM (for
    /// servers the tests run as processes: the SMTP sink, slapd).
    pub fn leaf_pem(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf cert");
        (cert.pem(), key.serialize_pem())
    }

    /// A server config with a certificate for `names`.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf cert");
        let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)
        .expect("server config");
        Arc::new(config)
    }
}

/// Sends raw bytes to `addr` and returns what comes back before the connection closes
/// or `wait` passes.
pub fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    stream.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
