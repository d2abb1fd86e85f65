//! An MIT Kerberos KDC (Debian's krb5-kdc) for the tests: its own realm, database,
//! krb5.conf and kdc.conf in a temp dir, listening on a free loopback port; principals
//! added with kadmin.local, the proxy's key written to a keytab, and tickets got with
//! kinit into ccaches of their own.

#![allow(dead_code)] // each test binary uses its own part of the helpers

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test realm.
pub const REALM: &str = "SCHOOL.TEST";
/// The proxy's name as clients dial it, and its service principal.
pub const PROXY_HOST: &str = "proxy.school.test";

/// A running KDC, killed when dropped.
pub struct Kdc {
    child: Option<Child>,
    /// Its port (UDP and TCP) on 127.0.0.1.
    pub port: u16,
    /// The krb5.conf clients use (`KRB5_CONFIG`).
    pub krb5_conf: PathBuf,
    /// The keytab holding `HTTP/proxy.school.test`'s key.
    pub keytab: PathBuf,
    dir: tempfile::TempDir,
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is needed (apt-get install krb5-kdc krb5-admin-server krb5-user)");
}

impl Kdc {
    /// Creates the realm and starts the KDC.
    pub fn start() -> Kdc {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let port = loop {
            let tcp = TcpListener::bind("127.0.0.1:0").expect("free port");
            let port = tcp.local_addr().expect("addr").port();
            if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
                break port;
            }
        };
        let krb5_conf = d.join("krb5.conf");
        std::fs::write(
            &krb5_conf,
            format!(
                "[libdefaults]
 default_realm = {REALM}
 dns_lookup_realm = false
 dns_lookup_kdc = false
 dns_canonicalize_hostname = false
 rdns = false
 udp_preference_limit = 1
[realms]
 {REALM} = {{
  kdc = 127.0.0.1:{port}
 }}
[domain_realm]
 .school.test = {REALM}
 school.test = {REALM}
"
            ),
        )
        .expect("write krb5.conf");
        std::fs::write(
            d.join("kdc.conf"),
            format!(
                "[kdcdefaults]
 kdc_listen = 127.0.0.1:{port}
 kdc_tcp_listen = 127.0.0.1:{port}
[realms]
 {REALM} = {{
  database_name = {d}/principal
  key_stash_file = {d}/stash
  acl_file = {d}/kadm5.acl
  kdc_listen = 127.0.0.1:{port}
  kdc_tcp_listen = 127.0.0.1:{port}
 }}
[logging]
 kdc = FILE:{d}/kdc.log
",
                d = d.display()
            ),
        )
        .expect("write kdc.conf");
        std::fs::write(d.join("kadm5.acl"), "").expect("write acl");
        let mut kdc = Kdc {
            child: None,
            port,
            krb5_conf,
            keytab: d.join("http.keytab"),
            dir,
        };
        kdc.admin(&[
            tool("kdb5_util").to_str().expect("path"),
            "create",
            "-s",
            "-r",
            REALM,
            "-P",
            "master-secret",
        ]);
        kdc.kadmin(&format!("addprinc -randkey HTTP/{PROXY_HOST}"));
        kdc.kadmin(&format!(
            "ktadd -k {} HTTP/{PROXY_HOST}",
            kdc.keytab.display()
        ));
        let mut command = Command::new(tool("krb5kdc"));
        let child = kdc
            .env(&mut command)
            .args(["-n", "-r", REALM])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("krb5kdc starts");
        kdc.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "krb5kdc did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        kdc
    }

    fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("KRB5_CONFIG", &self.krb5_conf)
            .env("KRB5_KDC_PROFILE", self.dir.path().join("kdc.conf"))
    }

    fn admin(&self, argv: &[&str]) {
        let out = self
            .env(&mut Command::new(argv[0]))
            .args(&argv[1..])
            .output()
            .expect("kerberos admin tool runs");
        assert!(
            out.status.success(),
            "{argv:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs one kadmin.local query.
    pub fn kadmin(&self, query: &str) {
        self.admin(&[
            tool("kadmin.local").to_str().expect("path"),
            "-r",
            REALM,
            "-q",
            query,
        ]);
    }

    /// Adds a user principal with a password.
    pub fn add_user(&self, name: &str, password: &str) {
        self.kadmin(&format!("addprinc -pw {password} {name}"));
    }

    /// A ccache holding `name`'s ticket-granting ticket (kinit with the password).
    pub fn kinit(&self, name: &str, password: &str) -> PathBuf {
        let ccache = self.dir.path().join(format!("{name}.ccache"));
        let mut child = self
            .env(&mut Command::new(tool("kinit")))
            .env("KRB5CCNAME", format!("FILE:{}", ccache.display()))
            .arg(format!("{name}@{REALM}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kinit runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("password to kinit");
        let out = child.wait_with_output().expect("kinit ends");
        assert!(
            out.status.success(),
            "kinit {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ccache
    }

    /// A ccache path with nothing in it: a client without a ticket.
    pub fn empty_ccache(&self) -> PathBuf {
        self.dir.path().join("nobody.ccache")
    }
}

impl Drop for Kdc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
