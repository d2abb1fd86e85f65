//! Limits that hold under abuse, with the real binary: WebSocket upgrades become a
//! tunnel only after the upstream's 101, one client address cannot take every
//! connection, and a stalled request body is cut off.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::servers::{Gatehouse, Origin};

fn start() -> Gatehouse {
    let policy = r#"[school]
name = "Limits School"
[lists]
dir = "lists"
[categories.gambling]
severity = "inappropriate"
[identity]
default_group = "staff"
[groups.staff]
mode = "blocklist"
block = ["gambling"]
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
[server]
listen = "127.0.0.1:0"
allow_internal_destinations = ["127.0.0.1/32"]
max_connections_per_client = 3
body_idle_timeout_secs = 1
[server.resolve]
"origin.test" = "127.0.0.1"
"bet.test" = "127.0.0.1"
"#;
    Gatehouse::start(&[
        ("policy.toml", policy),
        ("lists/gambling/domains", "bet.test\n"),
    ])
}

fn connect(g: &Gatehouse) -> TcpStream {
    let s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], g.port))).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn websocket_becomes_a_tunnel_after_101_and_is_filtered_first() {
    let origin = Origin::http();
    let g = start();
    let mut s = connect(&g);
    let host = format!("origin.test:{}", origin.port);
    write!(s, "GET http://{host}/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").expect("write");
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    s.write_all(b"hello through the tunnel").expect("write");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).expect("echo");
    assert_eq!(&buf[..n], b"hello through the tunnel");

    // A blocked host is refused before any upgrade.
    let mut s = connect(&g);
    let host = format!("bet.test:{}", origin.port);
    write!(s, "GET http://{host}/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").expect("write");
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

#[test]
fn one_client_cannot_take_every_connection() {
    let g = start();
    let held: Vec<TcpStream> = (0..3).map(|_| connect(&g)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let mut extra = connect(&g);
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(
        answer.contains("too many connections from this address"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once, not queued"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    // Slots come back when connections close.
    let mut s = connect(&g);
    write!(s, "GET http://bet.test/ HTTP/1.1\r\nHost: bet.test\r\n\r\n").expect("write");
    assert!(read_head(&mut s).starts_with("HTTP/1.1 403"));
}

#[test]
fn a_stalled_request_body_is_cut_off() {
    let origin = Origin::http();
    let g = start();
    let mut s = connect(&g);
    let host = format!("origin.test:{}", origin.port);
    write!(
        s,
        "POST http://{host}/echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100\r\n\r\nonly ten b"
    )
    .expect("write");
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after body_idle_timeout_secs: {:?}",
        started.elapsed()
    );
}
