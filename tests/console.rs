//! The web console in a real browser: headless Chromium driven over WebDriver (Debian's
//! chromium-driver) against the real binary, with curl as the pupil behind the proxy and
//! as the forger of a POST. Account hashes are made by `gatehouse console passwd`.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::browser::{not_blank, Chromedriver};
use common::servers::{curl, Gatehouse, Origin};
use fantoccini::{Client, Locator};

/// `gatehouse console passwd NAME --role ROLE`, the password on stdin: the entry it prints.
fn account(name: &str, role: &str, password: &str) -> String {
    let mut child = common::gatehouse()
        .args(["console", "passwd", name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gatehouse console passwd runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("password written");
    let out = child.wait_with_output().expect("it finishes");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        text.contains("$argon2id$") && !text.contains(password),
        "{text}"
    );
    text
}

fn policy(accounts: &str) -> String {
    format!(
        r#"[school]
name = "Console Academy"
[lists]
dir = "lists"
[categories.gambling]
severity = "inappropriate"
[categories.self-harm]
severity = "safeguarding"
[identity]
default_group = "ks4"
[groups.ks4]
mode = "blocklist"
block = ["gambling", "self-harm"]
[log]
dir = "log"
[admin]
listen = "127.0.0.1:0"
[server]
listen = "127.0.0.1:0"
allow_internal_destinations = ["127.0.0.1/32"]
[server.resolve]
"bet.test" = "127.0.0.1"
"selfharm.test" = "127.0.0.1"
[alerts]
outbox = "outbox"
gather_secs = 0
retry_initial_secs = 1
retry_max_secs = 2
# Nobody listens here: the attempts fail and are logged, which is an alert to acknowledge.
[alerts.webhook]
url = "http://127.0.0.1:9/gatehouse"
secret_file = "webhook.key"
[console]
lockout_failures = 3
lockout_minutes = 10
{accounts}"#
    )
}

/// The reference of a blocked request through the proxy.
fn blocked_reference(g: &Gatehouse, url: &str) -> String {
    let r = curl(&["-x", &g.url(), url]);
    assert_eq!(r.status, 403, "{url} should be blocked: {r:?}");
    r.headers
        .lines()
        .find_map(|l| l.strip_prefix("x-gatehouse-reference: "))
        .expect("reference header")
        .trim()
        .to_string()
}

async fn shot(c: &Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, &png).expect("screenshot saved");
    if let Err(e) = not_blank(&png) {
        panic!("screenshot {} is blank: {e}", path.display());
    }
}

async fn sign_in(c: &Client, base: &str, name: &str, password: &str) {
    c.goto(&format!("{base}/console/")).await.expect("goto");
    c.find(Locator::Css("#name"))
        .await
        .expect("name field")
        .send_keys(name)
        .await
        .expect("typed");
    c.find(Locator::Css("#password"))
        .await
        .expect("password field")
        .send_keys(password)
        .await
        .expect("typed");
    c.find(Locator::Css("main button[type=submit]"))
        .await
        .expect("sign-in button")
        .click()
        .await
        .expect("clicked");
    // Signed in, or the form again with why not.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !source(c).await.contains("Signed in as") && !source(c).await.contains("role=\"alert\"") {
        assert!(Instant::now() < deadline, "no answer to the sign-in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn source(c: &Client) -> String {
    c.source().await.expect("page source")
}

/// The page once it shows `needle`: a click that submits a form returns before the
/// browser has loaded the answer, so the page is read until it has (10 s at most; then
/// whatever it shows, for the assertion's message).
async fn page_with(c: &Client, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = source(c).await;
        if page.contains(needle) || Instant::now() > deadline {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_out(c: &Client) {
    c.find(Locator::Css("header form button"))
        .await
        .expect("sign-out button")
        .click()
        .await
        .expect("clicked");
    let page = page_with(c, "current-password").await;
    assert!(
        page.contains("current-password"),
        "signed out to the sign-in page"
    );
}

/// The session cookie the browser holds, for curl to forge with.
async fn session_cookie(c: &Client) -> String {
    c.get_all_cookies()
        .await
        .expect("cookies")
        .iter()
        .find(|k| k.name() == "gatehouse_console")
        .map(|k| format!("gatehouse_console={}", k.value()))
        .expect("a session cookie")
}

#[test]
fn technician_dsl_and_viewer_in_a_real_browser() {
    let accounts = [
        account("tech.jones", "technician", "tech-password-1"),
        account("dsl.patel", "dsl", "dsl-password-1"),
        account("viewer.lee", "viewer", "viewer-password-1"),
        account("lead.khan", "it-lead", "lead-password-1"),
        account("mr.brown", "teacher", "teacher-password-1"),
    ]
    .join("\n");
    let text = policy(&accounts);
    let origin = Origin::http();
    let g = Gatehouse::start(&[
        ("policy.toml", text.as_str()),
        ("webhook.key", "test-webhook-secret"),
        ("lists/gambling/domains", "bet.test\n"),
        ("lists/self-harm/domains", "selfharm.test\n"),
    ]);
    let driver = Chromedriver::start();
    // The origin and curl have runtimes and blocking calls of their own: the browser's
    // client runs on a runtime of its own, on this thread.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(walk(&g, &origin, &driver));
}

/// The whole flow, in one browser.
async fn walk(g: &Gatehouse, origin: &Origin, driver: &Chromedriver) {
    let base = format!("http://127.0.0.1:{}", g.admin_port);
    let shots = tempfile::tempdir().expect("screenshot dir");
    let c = driver.session().await;

    // A pupil is blocked through the proxy.
    let site = format!("http://bet.test:{}/", origin.port);
    let reference = blocked_reference(g, &site);

    // The console asks for a sign-in first; a wrong password is refused.
    sign_in(&c, &base, "tech.jones", "not-the-password").await;
    let page = page_with(&c, "The account name or password is wrong").await;
    assert!(
        page.contains("The account name or password is wrong"),
        "{page}"
    );
    shot(&c, shots.path(), "sign-in").await;

    // The technician signs in, looks up the reference and grants from the prefilled form.
    sign_in(&c, &base, "tech.jones", "tech-password-1").await;
    assert!(page_with(&c, "Signed in as")
        .await
        .contains("Signed in as <strong>tech.jones</strong>"));
    shot(&c, shots.path(), "home").await;
    c.goto(&format!("{base}/console/lookup"))
        .await
        .expect("goto");
    c.find(Locator::Css("#reference"))
        .await
        .expect("reference field")
        .send_keys(&reference)
        .await
        .expect("typed");
    c.find(Locator::Css("main form[action='/console/lookup'] button"))
        .await
        .expect("look-up button")
        .click()
        .await
        .expect("clicked");
    let page = page_with(&c, &format!("Decision {reference}")).await;
    assert!(page.contains(&format!("Decision {reference}")), "{page}");
    assert!(
        page.contains("bet.test") && page.contains("gambling"),
        "{page}"
    );
    let prefilled = c
        .find(Locator::Css("#site"))
        .await
        .expect("grant form")
        .prop("value")
        .await
        .expect("value");
    assert_eq!(prefilled.as_deref(), Some("bet.test"));
    shot(&c, shots.path(), "lookup").await;
    c.find(Locator::Css("#ticket"))
        .await
        .expect("ticket")
        .send_keys("HD-4411")
        .await
        .expect("typed");
    c.find(Locator::Css("#reason"))
        .await
        .expect("reason")
        .send_keys("statistics lesson on odds")
        .await
        .expect("typed");
    c.find(Locator::Css("#duration"))
        .await
        .expect("duration")
        .select_by_value("hour")
        .await
        .expect("chosen");
    c.find(Locator::Css("form[action='/console/grants'] button"))
        .await
        .expect("grant button")
        .click()
        .await
        .expect("clicked");
    let page = page_with(&c, "issued; it is in force now").await;
    assert!(page.contains("issued; it is in force now"), "{page}");
    assert!(page.contains("HD-4411") && page.contains("left"), "{page}");
    shot(&c, shots.path(), "grants").await;

    // The grant form on its own page, prefilled from the reference.
    c.goto(&format!("{base}/console/grants/new?reference={reference}"))
        .await
        .expect("goto");
    let page = page_with(&c, "Grant access").await;
    assert!(page.contains("value=\"bet.test\""), "{page}");
    shot(&c, shots.path(), "grant-form").await;
    c.goto(&format!("{base}/console/grants"))
        .await
        .expect("goto");
    page_with(&c, "HD-4411").await;

    // The site opens through the proxy.
    let opened = curl(&["-x", &g.url(), &site]);
    assert_eq!(opened.status, 200, "{opened:?}");

    // Revoke it from the grants page: blocked again.
    c.find(Locator::Css("input[id^='why-']"))
        .await
        .expect("revoke reason")
        .send_keys("lesson over")
        .await
        .expect("typed");
    c.find(Locator::Css("td form button"))
        .await
        .expect("revoke button")
        .click()
        .await
        .expect("clicked");
    let page = page_with(&c, "revoked by tech.jones: lesson over").await;
    assert!(page.contains("revoked."), "{page}");
    assert!(
        page.contains("revoked by tech.jones: lesson over"),
        "{page}"
    );
    assert_eq!(curl(&["-x", &g.url(), &site]).status, 403);

    // The status page, for a technician too.
    c.goto(&format!("{base}/console/status"))
        .await
        .expect("goto");
    let page = source(&c).await;
    assert!(page.contains(env!("CARGO_PKG_VERSION")) && page.contains("gambling"));
    assert!(
        page.contains("/metrics") && page.contains("writable"),
        "{page}"
    );
    shot(&c, shots.path(), "status").await;

    // A forged POST: the session cookie without the form's CSRF token changes nothing.
    let cookie = session_cookie(&c).await;
    let forged = curl(&[
        "-H",
        &format!("Cookie: {cookie}"),
        "--data",
        "ticket=HD-1&reason=forged&site=bet.test&scope=group:ks4&duration=week",
        &format!("{base}/console/grants"),
    ]);
    assert_eq!(forged.status, 403, "{forged:?}");
    let wrong = curl(&[
        "-H",
        &format!("Cookie: {cookie}"),
        "--data",
        "csrf=00ff&ticket=HD-1&reason=forged&site=bet.test&scope=group:ks4&duration=week",
        &format!("{base}/console/grants"),
    ]);
    assert_eq!(wrong.status, 403, "{wrong:?}");
    assert_eq!(curl(&["-x", &g.url(), &site]).status, 403);
    // The technician may not see the DSL's pages.
    let dsl_page = curl(&[
        "-H",
        &format!("Cookie: {cookie}"),
        &format!("{base}/console/alerts"),
    ]);
    assert_eq!(dsl_page.status, 403);
    sign_out(&c).await;
    let after = curl(&[
        "-H",
        &format!("Cookie: {cookie}"),
        &format!("{base}/console/grants"),
    ]);
    assert_eq!(
        after.status, 303,
        "a closed session is not honoured: {after:?}"
    );

    // A pupil's attempt on a safeguarding category raises an alert (its deliveries
    // fail: nobody listens); the DSL acknowledges it.
    let concern = blocked_reference(g, &format!("http://selfharm.test:{}/", origin.port));
    sign_in(&c, &base, "dsl.patel", "dsl-password-1").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        c.goto(&format!("{base}/console/alerts"))
            .await
            .expect("goto");
        if source(&c).await.contains(&concern) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no alert about {concern} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    shot(&c, shots.path(), "alerts").await;
    c.find(Locator::Css(&format!("#note-{concern}")))
        .await
        .expect("note field")
        .send_keys("spoke to the pupil")
        .await
        .expect("typed");
    c.find(Locator::XPath(&format!(
        "//button[normalize-space()='Acknowledge {concern}']"
    )))
    .await
    .expect("acknowledge button")
    .click()
    .await
    .expect("clicked");
    let page = page_with(&c, &format!("Alerts about {concern} acknowledged")).await;
    assert!(
        page.contains(&format!("Alerts about {concern} acknowledged")),
        "{page}"
    );
    assert!(page.contains("dsl.patel: spoke to the pupil"), "{page}");
    // The drill-down: the hour around the event, for that person.
    c.find(Locator::Css("td a[href^='/console/alerts/person']"))
        .await
        .expect("person link")
        .click()
        .await
        .expect("clicked");
    let page = page_with(&c, "the hour around the event").await;
    assert!(
        page.contains("the hour around the event") && page.contains("selfharm.test"),
        "{page}"
    );
    shot(&c, shots.path(), "person").await;
    // The weekly report, in the browser and as downloads.
    c.goto(&format!("{base}/console/report"))
        .await
        .expect("goto");
    assert!(source(&c).await.contains("format=csv"));
    shot(&c, shots.path(), "report").await;
    let cookie = session_cookie(&c).await;
    let week = chrono::Utc::now().format("%G-W%V").to_string();
    for format in ["html", "csv", "json", "md"] {
        let r = curl(&[
            "-H",
            &format!("Cookie: {cookie}"),
            &format!("{base}/console/report/download?week={week}&format={format}"),
        ]);
        assert_eq!(r.status, 200, "{format}: {r:?}");
        assert!(r
            .headers
            .to_lowercase()
            .contains("content-disposition: attachment"));
        assert!(!r.body.is_empty());
    }
    sign_out(&c).await;

    // A viewer reads grants but gets 403 on the grant form.
    sign_in(&c, &base, "viewer.lee", "viewer-password-1").await;
    c.goto(&format!("{base}/console/grants/new?reference={reference}"))
        .await
        .expect("goto");
    let page = page_with(&c, "not for the viewer role").await;
    assert!(
        page.contains("<h1>Forbidden</h1>") && page.contains("not for the viewer role"),
        "{page}"
    );
    assert!(
        c.find(Locator::Css("#ticket")).await.is_err(),
        "no grant form for a viewer"
    );
    shot(&c, shots.path(), "forbidden").await;
    let cookie = session_cookie(&c).await;
    let r = curl(&[
        "-H",
        &format!("Cookie: {cookie}"),
        &format!("{base}/console/grants/new"),
    ]);
    assert_eq!(r.status, 403);
    sign_out(&c).await;

    // A teacher sees their lesson overrides, and not the pupils' decisions.
    sign_in(&c, &base, "mr.brown", "teacher-password-1").await;
    c.goto(&format!("{base}/console/lessons"))
        .await
        .expect("goto");
    let page = page_with(&c, "You have made no lesson overrides").await;
    assert!(page.contains("You have made no lesson overrides"), "{page}");
    shot(&c, shots.path(), "lessons").await;
    c.goto(&format!("{base}/console/lookup"))
        .await
        .expect("goto");
    assert!(page_with(&c, "not for the teacher role")
        .await
        .contains("not for the teacher role"));
    sign_out(&c).await;

    // The IT Lead's status page.
    sign_in(&c, &base, "lead.khan", "lead-password-1").await;
    c.goto(&format!("{base}/console/status"))
        .await
        .expect("goto");
    assert!(page_with(&c, "Recent reloads")
        .await
        .contains("loaded at start"));
    sign_out(&c).await;
    c.close().await.expect("browser closed");
    // Every page's screenshot is there.
    for name in [
        "sign-in",
        "home",
        "lookup",
        "grant-form",
        "grants",
        "status",
        "alerts",
        "person",
        "report",
        "forbidden",
        "lessons",
    ] {
        assert!(
            shots.path().join(format!("{name}.png")).exists(),
            "{name}.png"
        );
    }

    // Every sign-in and action is in the decision log.
    let log = common::gatehouse()
        .args(["log", "tail", "-n", "100000", "--config"])
        .arg(g.dir.path().join("policy.toml"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for needle in [
        "console sign-in failed by tech.jones",
        "console sign-in by tech.jones (technician)",
        "console grant by tech.jones",
        "console revoke by tech.jones",
        "console refused by tech.jones (technician)",
        "console sign-out by tech.jones",
        "console ack by dsl.patel (dsl)",
        "console refused by viewer.lee (viewer)",
        "alert ACKNOWLEDGED",
    ] {
        assert!(log.contains(needle), "{needle:?} not in the log:\n{log}");
    }
}

/// Signs in with curl, as a browser would: the form (for its CSRF token and cookie),
/// then the POST; cookies kept in `jar`.
fn curl_sign_in(base: &str, jar: &str, name: &str, password: &str) -> common::servers::CurlResult {
    let form = curl(&["-c", jar, "-b", jar, &format!("{base}/console/sign-in")]);
    let token = form
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf token")
        .to_string();
    curl(&[
        "-c",
        jar,
        "-b",
        jar,
        "--data",
        &format!("csrf={token}&name={name}&password={password}"),
        &format!("{base}/console/sign-in"),
    ])
}

#[test]
fn repeated_failures_lock_the_account_and_the_address() {
    let text = policy(&account("tech.jones", "technician", "tech-password-1"));
    let g = Gatehouse::start(&[
        ("policy.toml", text.as_str()),
        ("webhook.key", "test-webhook-secret"),
    ]);
    let base = format!("http://127.0.0.1:{}", g.admin_port);
    let jar = tempfile::NamedTempFile::new().expect("cookie jar");
    let jar = jar.path().to_str().expect("utf-8 path");
    let attempt = |password: &str| curl_sign_in(&base, jar, "tech.jones", password);
    // The sign-in form's own token is checked too.
    let no_token = curl(&[
        "--data",
        "name=tech.jones&password=tech-password-1",
        &format!("{base}/console/sign-in"),
    ]);
    assert_eq!(no_token.status, 403);
    for _ in 0..3 {
        assert_eq!(attempt("wrong").status, 401);
    }
    // Locked: even the right password is refused for the window.
    let locked = attempt("tech-password-1");
    assert_eq!(locked.status, 429, "{locked:?}");
    assert!(locked.body.contains("Too many failed sign-ins"));
    assert!(g.wait_for_log("admin", Duration::from_secs(1)));
    let log = common::gatehouse()
        .args(["log", "tail", "-n", "100000", "--config"])
        .arg(g.dir.path().join("policy.toml"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        log.contains("console sign-in locked by tech.jones"),
        "{log}"
    );
    assert_eq!(
        log.matches("console sign-in failed by tech.jones").count(),
        3,
        "{log}"
    );
}

#[test]
fn over_tls_the_admin_listener_is_https_and_the_cookies_are_secure() {
    let ca = common::servers::TestCa::new();
    let (cert, key) = ca.leaf_pem(&["localhost"]);
    let text = policy(&account("tech.jones", "technician", "tech-password-1")).replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        "[admin]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"admin.crt\"\ntls_key = \"admin.key\"\n",
    );
    let g = Gatehouse::start(&[
        ("policy.toml", text.as_str()),
        ("webhook.key", "test-webhook-secret"),
        ("admin.crt", cert.as_str()),
        ("admin.key", key.as_str()),
        ("ca.pem", ca.pem.as_str()),
    ]);
    let ca_file = g.dir.path().join("ca.pem");
    let ca_file = ca_file.to_str().expect("utf-8 path");
    let resolve = format!("localhost:{}:127.0.0.1", g.admin_port);
    let https = format!("https://localhost:{}", g.admin_port);
    let health = curl(&[
        "--cacert",
        ca_file,
        "--resolve",
        &resolve,
        &format!("{https}/healthz"),
    ]);
    assert_eq!(health.status, 200, "{health:?}");
    let sign_in = curl(&[
        "--cacert",
        ca_file,
        "--resolve",
        &resolve,
        &format!("{https}/console/sign-in"),
    ]);
    assert_eq!(sign_in.status, 200);
    let cookie = sign_in
        .headers
        .lines()
        .find(|l| l.to_lowercase().starts_with("set-cookie:"))
        .expect("a cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/console"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    // Plain HTTP is not served on it.
    let plain = curl(&[&format!("http://127.0.0.1:{}/healthz", g.admin_port)]);
    assert_ne!(plain.status, 200, "{plain:?}");
}

#[test]
fn a_bad_console_section_is_refused_with_its_lines() {
    let text = policy(
        "[[console.accounts]]\nname = \"x\"\nrole = \"headteacher\"\nhash = \"not-a-hash\"\n\
         [[console.accounts]]\nname = \"y\"\nrole = \"viewer\"\nhash = \"not-a-hash\"\n\
         [[console.directory]]\ngroup = \"cn=dsl,dc=school\"\nrole = \"dsl\"\n",
    );
    let dir = common::tree(&[("policy.toml", text.as_str())]);
    let out = common::gatehouse()
        .args(["check", "--config"])
        .arg(dir.path().join("policy.toml"))
        .output()
        .expect("check runs");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("\"headteacher\""), "{text}");
    assert!(text.contains("argon2 PHC"), "{text}");
    assert!(text.contains("needs [identity.directory]"), "{text}");
}

#[test]
fn directory_accounts_sign_in_with_the_role_of_their_group() {
    let slapd = common::slapd::Slapd::start();
    let directory = format!(
        r#"[identity.directory]
url = "{url}"
starttls = true
ca_file = "{ca}"
bind_dn = "{dn}"
bind_password_file = "service.password"
base_dn = "dc=school,dc=test"
user_filter = "(&(objectClass=inetOrgPerson)(uid={{user}}))"
timeout_secs = 2
connect_timeout_secs = 2
[[identity.directory.groups]]
directory = "KS4 Pupils"
group = "ks4"
"#,
        url = slapd.url(),
        ca = slapd.ca_file.display(),
        dn = common::slapd::SERVICE_DN,
    );
    let text = policy(
        "[[console.directory]]\ngroup = \"cn=Staff,ou=groups,dc=school,dc=test\"\nrole = \"technician\"\n",
    )
    .replace("[groups.ks4]\n", &format!("{directory}[groups.ks4]\n"));
    let g = Gatehouse::start(&[
        ("policy.toml", text.as_str()),
        ("webhook.key", "test-webhook-secret"),
        (
            "service.password",
            &format!("{}\n", common::slapd::SERVICE_PASSWORD),
        ),
    ]);
    let base = format!("http://127.0.0.1:{}", g.admin_port);
    let jar = tempfile::NamedTempFile::new().expect("cookie jar");
    let jar = jar.path().to_str().expect("utf-8 path");
    // tom is in Staff: a technician.
    let ok = curl_sign_in(&base, jar, "tom", "tom-password");
    assert_eq!(ok.status, 303, "{ok:?}");
    let home = curl(&["-b", jar, &format!("{base}/console/")]);
    assert!(
        home.body.contains("role <strong>technician</strong>"),
        "{home:?}"
    );
    assert_eq!(
        curl(&["-b", jar, &format!("{base}/console/grants/new")]).status,
        200
    );
    // A wrong directory password, and a pupil in no console group, are refused.
    let jar2 = tempfile::NamedTempFile::new().expect("cookie jar");
    let jar2 = jar2.path().to_str().expect("utf-8 path");
    assert_eq!(curl_sign_in(&base, jar2, "tom", "wrong").status, 401);
    assert_eq!(curl_sign_in(&base, jar2, "bob", "bob-password").status, 401);
    let log = common::gatehouse()
        .args(["log", "tail", "-n", "100000", "--config"])
        .arg(g.dir.path().join("policy.toml"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(log.contains("console sign-in by tom (technician)"), "{log}");
    assert!(log.contains("console sign-in failed by bob"), "{log}");
    assert!(
        log.contains("directory account in no console group"),
        "{log}"
    );
}
