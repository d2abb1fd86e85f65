//! `gatehouse check`, `classify` and `lists compile` as real processes on the shipped
//! example policy and on broken ones.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use common::{example_policy, gatehouse, tree};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = gatehouse().args(args).output().expect("gatehouse runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_summarises_the_example_policy() {
    let policy = example_policy();
    let (code, out, err) = run(&["check", "--config", policy.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("policy ") && out.contains(": OK"), "{out}");
    assert!(out.contains("categories: 24"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("child-abuse") && l.contains("illegal")),
        "{out}"
    );
    assert!(
        out.contains("sixth-form") && out.contains("games only during breaks"),
        "{out}"
    );
    // Safe search per group, and the engine table it dials.
    for needed in [
        "safe search on, YouTube strict",
        "safe search on, YouTube moderate",
        "safe search off, YouTube off",
        "www.google.* (safe_search) → forcesafesearch.google.com",
        "(youtube_restrict) → restrict.youtube.com, moderate → restrictmoderate.youtube.com",
    ] {
        assert!(out.contains(needed), "{needed:?} in {out}");
    }
    assert!(
        out.contains("10.10.0.0/16") && out.contains("→ staff"),
        "{out}"
    );
}

#[test]
fn check_says_how_illegal_url_entries_apply_over_https() {
    let dir = tree(&[
        (
            "p.toml",
            "[school]\nname = \"x\"\n[lists]\ndir = \"lists\"\n[categories.csam]\nseverity = \"illegal\"\n[identity]\ndefault_group = \"a\"\n[groups.a]\nmode = \"blocklist\"\n",
        ),
        ("lists/csam/urls", "mixed.example/listed/\nother.example/x\n"),
        ("lists/csam/expressions", "^forbidden\\.example/\n"),
    ]);
    let path = dir.path().join("p.toml");
    let (code, out, err) = run(&["check", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("2 host(s) with URL-level entries are refused whole over HTTPS")
            && out.contains("mixed.example, other.example"),
        "{out}"
    );
    assert!(
        out.contains("0 hashed URL(s) and 1 expression(s)") && out.contains("plain HTTP only"),
        "{out}"
    );
}

#[test]
fn check_fails_with_file_and_line() {
    let dir = tree(&[(
        "bad.toml",
        "[school]\nname = \"x\"\n[identity]\ndefault_group = \"nobody\"\n[groups.a]\nmode = \"blocklist\"\nblock = [\"nothing\"]\n",
    )]);
    let path = dir.path().join("bad.toml");
    let (code, out, err) = run(&["check", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("bad.toml:4: unknown group \"nobody\""),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:7: unknown category \"nothing\""),
        "{err}"
    );
    assert!(
        err.contains("2 errors in the policy; nothing was loaded"),
        "{err}"
    );

    let (code, _, err) = run(&["check", "--config", "/nonexistent/gatehouse.toml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("/nonexistent/gatehouse.toml: cannot read"),
        "{err}"
    );
}

#[test]
fn classify_prints_one_line_per_url() {
    let policy = example_policy();
    let config = policy.to_str().expect("utf-8 path");
    let (code, out, err) = run(&[
        "classify",
        "--config",
        config,
        "--group",
        "ks2",
        "--at",
        "2026-01-13 11:00",
        "https://www.pokerstars.com/",
        "http://www.wikipedia.org/",
        "WWW.TOPMARKS.CO.UK/maths",
        "http://2130706433/",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("BLOCK  https://www.pokerstars.com/  [gambling]  category gambling (inappropriate) is blocked for group ks2"), "{out}");
    assert!(
        lines[1].starts_with("ALLOW  http://www.wikipedia.org/  [-]"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("ALLOW  WWW.TOPMARKS.CO.UK/maths  [educational-games]"),
        "{out}"
    );
    assert!(
        lines[3].starts_with("BLOCK  http://2130706433/  [-]  group ks2 blocks IP-address hosts"),
        "{out}"
    );
    // Where a search engine would be dialled instead, for a pupil; not for staff.
    for (group, want) in [
        (
            "ks2",
            Some("       safe search: dialled forcesafesearch.google.com instead (google, strict)"),
        ),
        ("staff", None),
    ] {
        let (code, out, err) = run(&[
            "classify",
            "--config",
            config,
            "--group",
            group,
            "https://www.google.co.uk/",
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.lines().nth(1), want, "{group}: {out}");
    }
}

#[test]
fn classify_json_by_client_and_user_and_time() {
    let policy = example_policy();
    let config = policy.to_str().expect("utf-8 path");
    // A sixth-form device (10.32.0.0/16): Instagram in a summer lunch break and after it.
    for (at, action, reason) in [
        ("2026-06-16T11:30:00Z", "allow", "allow_during"),
        ("2026-06-16 14:00", "block", "category"),
    ] {
        let (code, out, err) = run(&[
            "classify",
            "--config",
            config,
            "--client",
            "10.32.7.9",
            "--at",
            at,
            "--json",
            "https://www.instagram.com/",
        ]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
        assert_eq!(v["group"], "sixth-form");
        assert_eq!(v["action"], action, "{v}");
        assert_eq!(v["reason"], reason, "{v}");
        assert_eq!(v["categories"], serde_json::json!(["social-media"]));
    }
    let (code, out, _) = run(&[
        "classify",
        "--config",
        config,
        "--user",
        "j.smith",
        "--json",
        "https://www.amazon.co.uk/",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(
        (
            v["group"].as_str(),
            v["user"].as_str(),
            v["action"].as_str()
        ),
        (Some("staff"), Some("j.smith"), Some("allow"))
    );

    // A search of concern is reported with its terms.
    let (_, out, _) = run(&[
        "classify",
        "--config",
        config,
        "--group",
        "ks4",
        "--json",
        "https://www.google.com/search?q=thinspiration+tips",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["action"], "block");
    assert_eq!(v["search"], "thinspiration tips");
    assert_eq!(v["search_terms"][0]["category"], "self-harm", "{v}");
}

#[test]
fn classify_refuses_bad_input_clearly() {
    let policy = example_policy();
    let config = policy.to_str().expect("utf-8 path");
    let (code, out, err) = run(&[
        "classify",
        "--config",
        config,
        "--group",
        "ks2",
        "http://exa mple.com/",
        "http://ok.example/",
    ]);
    assert_eq!(code, 2, "a bad URL among good ones exits 2: {out} {err}");
    assert!(err.contains("http://exa mple.com/: invalid host"), "{err}");
    assert_eq!(out.lines().count(), 1, "the good URL is still classified");

    let (code, _, err) = run(&[
        "classify",
        "--config",
        config,
        "--group",
        "year9",
        "http://x.example/",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no group \"year9\" (groups: eyfs, ks1, ks2"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "classify",
        "--config",
        config,
        "--group",
        "ks2",
        "--at",
        "teatime",
        "http://x.example/",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--at \"teatime\""), "{err}");
    let (code, _, _) = run(&["classify", "--config", config, "http://x.example/"]);
    assert_eq!(code, 1, "who is asking must be said");
}

#[test]
fn lists_compile_writes_the_cache_that_check_then_uses() {
    let dir = tree(&[
        ("p.toml", "[school]\nname = \"x\"\n[lists]\ndir = \"lists\"\ncache = \"cache/domains.idx\"\n[categories.games]\nseverity = \"productivity\"\n[identity]\ndefault_group = \"a\"\n[groups.a]\nmode = \"blocklist\"\nblock = [\"games\"]\n"),
        ("lists/games/domains", "games.example\nmore.example\n"),
    ]);
    let path = dir.path().join("p.toml");
    let config = path.to_str().expect("utf-8 path");
    let (code, out, err) = run(&["lists", "compile", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("compiled 2 domain entries"), "{out}");
    assert!(dir.path().join("cache/domains.idx").is_file());
    let (code, out, _) = run(&["check", "--config", config]);
    assert_eq!(code, 0);
    assert!(out.contains("compiled cache"), "{out}");
    // The same policy named by a relative path from another directory finds the cache.
    let out = gatehouse()
        .current_dir(dir.path().join("lists"))
        .args(["check", "--config", "../p.toml"])
        .output()
        .expect("gatehouse runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("compiled cache"), "{text}");
    // Editing a list makes the cache stale: the next load rebuilds from text.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(
        dir.path().join("lists/games/domains"),
        "games.example\nmore.example\nthird.example\n",
    )
    .expect("edit");
    let (_, out, _) = run(&["check", "--config", config]);
    assert!(out.contains("compiled from text"), "{out}");
    let (_, out, _) = run(&[
        "classify",
        "--config",
        config,
        "--group",
        "a",
        "http://www.third.example/",
    ]);
    assert!(out.starts_with("BLOCK"), "{out}");
}
