//! A real etcd (Debian's `etcd-server`, `/usr/bin/etcd`) for the grants-store tests: a
//! one-member cluster on two free loopback ports (client and peer) with its data in a
//! temporary directory. It can be stopped and started again on the same ports and data,
//! to take the store away from the nodes and give it back. Killed when dropped. Never
//! the package's own instance.

#![allow(dead_code, clippy::disallowed_methods)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the test looks for etcd.
pub const ETCD: &str = "/usr/bin/etcd";

/// Whether etcd is installed; tests skip (saying so) when it is not.
pub fn available() -> bool {
    Path::new(ETCD).exists()
}

/// A running (or stopped) one-member etcd.
pub struct Etcd {
    child: Option<Child>,
    /// The client port on 127.0.0.1.
    pub port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    tls: bool,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("free port");
    l.local_addr().expect("addr").port()
}

impl Etcd {
    /// Starts etcd on free ports with an empty data directory, and waits until it
    /// answers `/health`.
    pub fn start() -> Etcd {
        let mut etcd = Etcd {
            child: None,
            port: free_port(),
            peer_port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            tls: false,
        };
        etcd.run();
        etcd
    }

    /// As [`Etcd::start`], serving clients over TLS with a certificate from a test CA
    /// and asking them for a client certificate from the same CA. The files are in
    /// [`Etcd::tls_dir`]: `ca.crt`, and `client.crt` / `client.key` for Gatehouse.
    pub fn start_tls() -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = super::servers::TestCa::new();
        let (cert, key) = ca.leaf_pem(&["127.0.0.1", "localhost"]);
        let (client_cert, client_key) = ca.leaf_pem(&["gatehouse"]);
        for (name, text) in [
            ("ca.crt", ca.pem.as_str()),
            ("server.crt", cert.as_str()),
            ("server.key", key.as_str()),
            ("client.crt", client_cert.as_str()),
            ("client.key", client_key.as_str()),
        ] {
            std::fs::write(dir.path().join(name), text).expect("write TLS file");
        }
        let mut etcd = Etcd {
            child: None,
            port: free_port(),
            peer_port: free_port(),
            dir,
            tls: true,
        };
        etcd.run();
        etcd
    }

    /// Where the TLS files of [`Etcd::start_tls`] are.
    pub fn tls_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `http://127.0.0.1:PORT`, for `[grants.etcd] endpoints`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts it again (same ports, same data) after [`Etcd::stop`].
    pub fn run(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let d = self.dir.path();
        let tls_args: Vec<String> = if self.tls {
            vec![
                format!("--cert-file={}", d.join("server.crt").display()),
                format!("--key-file={}", d.join("server.key").display()),
                format!("--trusted-ca-file={}", d.join("ca.crt").display()),
                "--client-cert-auth".into(),
            ]
        } else {
            Vec::new()
        };
        let child = Command::new(ETCD)
            .args(&tls_args)
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let health = format!("{client}/health");
        loop {
            let mut curl = Command::new("curl");
            curl.args(["-s", "--max-time", "1", &health]);
            if self.tls {
                curl.arg("--cacert")
                    .arg(d.join("ca.crt"))
                    .arg("--cert")
                    .arg(d.join("client.crt"))
                    .arg("--key")
                    .arg(d.join("client.key"));
            }
            let out = curl.output().expect("curl runs");
            if String::from_utf8_lossy(&out.stdout).contains("\"health\":\"true\"") {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills etcd (SIGKILL: the store goes away as a crashed or cut-off member would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Writes a key with `etcdctl` (a hand edit of the store, for the tests).
    pub fn put(&self, key: &str, value: &str) {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint(), "put", key, value])
            .output()
            .expect("etcdctl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The keys under `prefix` and their values, through `etcdctl` (a second client,
    /// to see what Gatehouse wrote).
    pub fn get_prefix(&self, prefix: &str) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint(), "get", "--prefix", prefix])
            .output()
            .expect("etcdctl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
