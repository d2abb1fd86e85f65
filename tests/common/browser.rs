//! A real browser for the web console's tests: Debian's `chromium-driver`
//! (`/usr/bin/chromedriver`) driving headless Chromium over WebDriver, through the
//! `fantoccini` client; and a check that a screenshot is not blank.

#![allow(dead_code, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running chromedriver, killed when dropped.
pub struct Chromedriver {
    child: Child,
    /// Its WebDriver URL.
    pub url: String,
    profile: tempfile::TempDir,
}

impl Chromedriver {
    /// Starts chromedriver on a free loopback port and waits until it listens.
    pub fn start() -> Chromedriver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts (install Debian's chromium-driver)");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("started successfully") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            panic!("chromedriver did not start");
        }
        Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile: tempfile::tempdir().expect("profile dir"),
        }
    }

    /// A new headless Chromium session, with a profile of its own (no cookies).
    pub async fn session(&self) -> fantoccini::Client {
        let profile = tempfile::Builder::new()
            .prefix("chromium-")
            .tempdir_in(self.profile.path())
            .expect("profile");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,1024",
                    format!("--user-data-dir={}", profile.keep().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a WebDriver session")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a PNG screenshot shows something: it decodes, and at least 1% of its pixels
/// differ from the first one (a blank or single-colour page does not pass).
pub fn not_blank(png_bytes: &[u8]) -> Result<(), String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let bytes = &buf[..info.buffer_size()];
    let step = info.color_type.samples() * usize::from(info.bit_depth as u8).div_ceil(8);
    let pixels: Vec<&[u8]> = bytes.chunks(step).collect();
    let first = pixels.first().ok_or("no pixels")?;
    let differing = pixels.iter().filter(|p| p != &first).count();
    if info.width < 100 || info.height < 100 {
        return Err(format!("{}x{} is too small", info.width, info.height));
    }
    if differing * 100 < pixels.len() {
        return Err(format!(
            "only {differing} of {} pixels differ from the first: blank",
            pixels.len()
        ));
    }
    Ok(())
}
