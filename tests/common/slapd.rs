//! A real OpenLDAP `slapd` (Debian's `slapd` package) for the directory tests: its own
//! configuration and database in a temporary directory, a small school tree loaded with
//! `slapadd`, StartTLS with a certificate from the test CA on one free loopback port and
//! LDAPS on another.
//! Killed when dropped. Never the package's own instance.

#![allow(dead_code, clippy::disallowed_methods)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::servers::TestCa;

/// The tree's suffix.
pub const SUFFIX: &str = "dc=school,dc=test";
/// The service account Gatehouse searches with, and its password.
pub const SERVICE_DN: &str = "cn=gatehouse,ou=service,dc=school,dc=test";
/// The service account's password.
pub const SERVICE_PASSWORD: &str = "service-secret";
/// The directory manager (for ldapmodify in tests).
pub const ROOT_DN: &str = "cn=admin,dc=school,dc=test";
const ROOT_PASSWORD: &str = "admin-secret";

/// The small school: people (pupils in year groups, a teacher who is also in a pupil
/// group, a governor in no group), and groups nested by key stage.
pub const SCHOOL_LDIF: &str = "\
dn: dc=school,dc=test
objectClass: dcObject
objectClass: organization
o: Test Academy
dc: school

dn: ou=service,dc=school,dc=test
objectClass: organizationalUnit
ou: service

dn: cn=gatehouse,ou=service,dc=school,dc=test
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: gatehouse
userPassword: service-secret

dn: ou=people,dc=school,dc=test
objectClass: organizationalUnit
ou: people

dn: uid=ann,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
uid: ann
cn: Ann Year7
sn: Year7
userPassword: ann-password

dn: uid=carl,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
uid: carl
cn: Carl Year7
sn: Year7
userPassword: carl-password

dn: uid=dan,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
uid: dan
cn: Dan Year7
sn: Year7
userPassword: dan-password

dn: uid=bob,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
uid: bob
cn: Bob Year10
sn: Year10
userPassword: bob-password

dn: uid=tom,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
uid: tom
cn: Tom Teacher
sn: Teacher
userPassword: tom-password

dn: uid=eve,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
uid: eve
cn: Eve Governor
sn: Governor
userPassword: eve-password

dn: ou=groups,dc=school,dc=test
objectClass: organizationalUnit
ou: groups

dn: cn=Year 7,ou=groups,dc=school,dc=test
objectClass: groupOfNames
cn: Year 7
member: uid=ann,ou=people,dc=school,dc=test
member: uid=carl,ou=people,dc=school,dc=test
member: uid=tom,ou=people,dc=school,dc=test

dn: cn=KS3 Pupils,ou=groups,dc=school,dc=test
objectClass: groupOfNames
cn: KS3 Pupils
member: cn=Year 7,ou=groups,dc=school,dc=test

dn: cn=Year 10,ou=groups,dc=school,dc=test
objectClass: groupOfNames
cn: Year 10
member: uid=bob,ou=people,dc=school,dc=test

dn: cn=KS4 Pupils,ou=groups,dc=school,dc=test
objectClass: groupOfNames
cn: KS4 Pupils
member: cn=Year 10,ou=groups,dc=school,dc=test

dn: cn=Staff,ou=groups,dc=school,dc=test
objectClass: groupOfNames
cn: Staff
member: uid=tom,ou=people,dc=school,dc=test
";

/// Where Debian puts slapd and its tools.
fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is needed (apt-get install slapd ldap-utils)");
}

/// A running slapd, killed when dropped.
pub struct Slapd {
    child: Option<Child>,
    /// Its `ldap://` port (StartTLS offered) on 127.0.0.1.
    pub port: u16,
    /// Its `ldaps://` port on 127.0.0.1.
    pub ldaps_port: u16,
    /// The test CA's certificate, for `ca_file`.
    pub ca_file: PathBuf,
    dir: tempfile::TempDir,
}

impl Slapd {
    /// Loads the school tree and starts slapd with StartTLS on a free port.
    pub fn start() -> Slapd {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("db")).expect("mkdir db");
        let ca = TestCa::new();
        let (cert, key) = ca.leaf_pem(&["127.0.0.1", "localhost"]);
        std::fs::write(d.join("ca.crt"), &ca.pem).expect("write CA");
        std::fs::write(d.join("server.crt"), cert).expect("write cert");
        std::fs::write(d.join("server.key"), key).expect("write key");
        let conf = format!(
            "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {d}/slapd.pid
TLSCACertificateFile {d}/ca.crt
TLSCertificateFile {d}/server.crt
TLSCertificateKeyFile {d}/server.key
database mdb
maxsize 10485760
suffix \"{SUFFIX}\"
rootdn \"{ROOT_DN}\"
rootpw {ROOT_PASSWORD}
directory {d}/db
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
",
            d = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).expect("write slapd.conf");
        std::fs::write(d.join("school.ldif"), SCHOOL_LDIF).expect("write ldif");
        let out = Command::new(tool("slapadd"))
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-l")
            .arg(d.join("school.ldif"))
            .output()
            .expect("slapadd runs");
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let free = || {
            let l = TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let (port, ldaps_port) = (free(), free());
        let mut slapd = Slapd {
            child: None,
            port,
            ldaps_port,
            ca_file: d.join("ca.crt"),
            dir,
        };
        slapd.run();
        slapd
    }

    fn run(&mut self) {
        let d = self.dir.path();
        // -d 0: stay in the foreground (so the test owns the process), log nothing.
        let child = Command::new(tool("slapd"))
            .args(["-d", "0", "-h"])
            .arg(format!(
                "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
                self.port, self.ldaps_port
            ))
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slapd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [self.port, self.ldaps_port] {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                assert!(Instant::now() < deadline, "slapd did not start listening");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Stops slapd (the directory goes down).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Applies an LDIF change as the directory manager (`ldapmodify`, on loopback).
    pub fn modify(&self, ldif: &str) {
        use std::io::Write;
        let mut child = Command::new(tool("ldapmodify"))
            .args(["-x", "-H", &self.url()])
            .args(["-D", ROOT_DN, "-w", ROOT_PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ldapmodify runs");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(ldif.as_bytes())
            .expect("write ldif");
        let out = child.wait_with_output().expect("ldapmodify");
        assert!(
            out.status.success(),
            "ldapmodify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
