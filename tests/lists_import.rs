//! `gatehouse lists import` and `lists stats` as a technician runs them: a UT1-layout
//! tarball (made with the system's tar, with a linked category as UT1 has) and the same
//! tree as a directory, a hosts file, a plain list and e2guardian's banned site and URL
//! lists, each imported into a policy's lists and then classified by `gatehouse
//! classify`; bad lines counted per reason with file:line samples; a re-import that
//! drops an entry; a corrupt archive and an unknown category refused with nothing
//! written; the curated list untouched throughout.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::path::Path;
use std::process::Command;

use common::{gatehouse, tree};

const POLICY: &str = r#"[school]
name = "Test Academy"
[lists]
dir = "lists"
[categories.pornography]
severity = "safeguarding"
[categories.gambling]
severity = "inappropriate"
[categories.malware]
severity = "inappropriate"
[categories.circumvention]
severity = "inappropriate"
[categories.ads]
severity = "productivity"
[identity]
default_group = "pupils"
[groups.pupils]
mode = "blocklist"
block = ["pornography", "gambling", "malware", "circumvention", "ads"]
[log]
dir = "log"
"#;

fn run(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = gatehouse()
        .args(args)
        .arg("--config")
        .arg(dir.join("policy.toml"))
        .output()
        .expect("gatehouse runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The categories `gatehouse classify` gives `url` for the pupils.
fn categories(dir: &Path, url: &str) -> Vec<String> {
    let (ok, out, err) = run(dir, &["classify", "--group", "pupils", "--json", url]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    v["categories"]
        .as_array()
        .expect("categories")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect()
}

/// A UT1 tree under `root/blacklists`.
fn ut1_tree(root: &Path, with_bet2: bool) {
    let b = root.join("blacklists");
    let write = |rel: &str, text: &str| {
        let path = b.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(path, text).expect("write");
    };
    write(
        "adult/domains",
        "adult-one.test\nADULT-TWO.test.\nbad name.test\nadult-one.test\n-x-.test!\n",
    );
    write("adult/urls", "host.test/adult/page\n");
    let gambling = if with_bet2 {
        "bet-one.test\nbet-two.test\n"
    } else {
        "bet-one.test\n"
    };
    write("gambling/domains", gambling);
    write("phishing/domains", "phish.test\nshared-bad.test\n");
    write("malware/domains", "virus.test\nshared-bad.test\n");
    write("vpn/domains", "vpn.test\n");
    write("astrology/domains", "stars.test\nmoon.test\n");
    // UT1 links old names to new ones; the link is not read twice.
    std::os::unix::fs::symlink("adult", b.join("porn")).expect("link");
}

fn tar_gz(root: &Path, out: &Path) {
    let status = Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg("-czf")
        .arg(out)
        .arg("blacklists")
        .status()
        .expect("tar runs");
    assert!(status.success());
}

#[test]
fn every_format_imports_classifies_and_reports_its_skipped_lines() {
    let dir = tree(&[
        ("policy.toml", POLICY),
        ("lists/gambling/domains", "seed.test\n"),
    ]);
    let d = dir.path();
    let src = tempfile::tempdir().expect("temp");
    ut1_tree(src.path(), true);
    let archive = src.path().join("blacklists.tar.gz");
    tar_gz(src.path(), &archive);

    let (ok, out, err) = run(
        d,
        &[
            "lists",
            "import",
            "--format",
            "ut1",
            archive.to_str().expect("path"),
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("gambling: 2 domains, 0 URL prefixes"), "{out}");
    assert!(
        out.contains("pornography: 2 domains, 1 URL prefixes"),
        "{out}"
    );
    // phishing and malware both map to malware: the shared entry once.
    assert!(out.contains("malware: 3 domains"), "{out}");
    assert!(out.contains("duplicates: 2"), "{out}");
    assert!(out.contains("invalid names: 1"), "{out}");
    assert!(
        out.contains("blacklists/adult/domains:5: -x-.test!"),
        "{out}"
    );
    assert!(out.contains("unsupported syntax: 1"), "{out}");
    assert!(
        out.contains("blacklists/adult/domains:3: bad name.test"),
        "{out}"
    );
    assert!(
        out.contains("UT1 categories not imported (not in the map): astrology (2 lines)"),
        "{out}"
    );
    assert!(out.contains("compiled "), "{out}");
    assert!(d.join("lists/gambling/domains.ut1").is_file());
    assert_eq!(
        std::fs::read_to_string(d.join("lists/gambling/domains")).expect("seed"),
        "seed.test\n",
        "the curated list is untouched"
    );
    assert_eq!(categories(d, "http://www.adult-two.test/"), ["pornography"]);
    assert_eq!(
        categories(d, "http://host.test/adult/page/1"),
        ["pornography"]
    );
    assert!(categories(d, "http://host.test/other").is_empty());
    assert_eq!(categories(d, "http://seed.test/"), ["gambling"]);
    assert_eq!(categories(d, "http://bet-two.test/"), ["gambling"]);
    assert_eq!(categories(d, "http://vpn.test/"), ["circumvention"]);
    assert!(categories(d, "http://stars.test/").is_empty());

    // The same source again, as a directory, without bet-two: it is gone.
    let again = tempfile::tempdir().expect("temp");
    ut1_tree(again.path(), false);
    let (ok, out, err) = run(
        d,
        &[
            "lists",
            "import",
            "--format",
            "ut1",
            again.path().to_str().expect("path"),
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(categories(d, "http://bet-two.test/").is_empty());
    assert_eq!(categories(d, "http://bet-one.test/"), ["gambling"]);

    // A hosts file, with its boilerplate, under a name of its own.
    let hosts = src.path().join("hosts");
    std::fs::write(
        &hosts,
        "# ad servers\n127.0.0.1 localhost\n::1 ip6-localhost ip6-loopback\n0.0.0.0 ads.test tracker.test # two\n0.0.0.0 ads.test\n0.0.0.0 10.9.9.9\n",
    )
    .expect("hosts");
    let (ok, out, err) = run(
        d,
        &[
            "lists",
            "import",
            "--format",
            "hosts",
            "--category",
            "ads",
            "--name",
            "adblock",
            hosts.to_str().expect("path"),
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("ads: 2 domains"), "{out}");
    assert!(
        out.contains("hosts-file boilerplate (localhost and friends): 2"),
        "{out}"
    );
    assert!(out.contains("addresses where a name belongs: 1"), "{out}");
    assert!(out.contains("duplicates: 1"), "{out}");
    assert!(d.join("lists/ads/domains.adblock").is_file());
    assert_eq!(categories(d, "http://cdn.tracker.test/x.js"), ["ads"]);

    // A plain list and e2guardian's two lists.
    let plain = src.path().join("plain.txt");
    std::fs::write(&plain, "*.proxy-one.test\nhttps://proxy-two.test/browse\n").expect("plain");
    let (ok, out, err) = run(
        d,
        &[
            "lists",
            "import",
            "--format",
            "plain",
            "--category",
            "circumvention",
            plain.to_str().expect("path"),
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert_eq!(categories(d, "http://a.proxy-one.test/"), ["circumvention"]);
    assert_eq!(
        categories(d, "http://proxy-two.test/browse?u=x"),
        ["circumvention"]
    );
    let sites = src.path().join("bannedsitelist");
    std::fs::write(
        &sites,
        "#listcategory: \"Malware\"\n.Include</etc/e2guardian/lists/blacklists/malware/domains>\n*ip\nworm.test\n",
    )
    .expect("sites");
    let urls = src.path().join("bannedurllist");
    std::fs::write(&urls, "trojan.test/download/\n").expect("urls");
    for (file, name) in [(&sites, "e2g-sites"), (&urls, "e2g-urls")] {
        let (ok, out, err) = run(
            d,
            &[
                "lists",
                "import",
                "--format",
                "e2guardian",
                "--category",
                "malware",
                "--name",
                name,
                file.to_str().expect("path"),
            ],
        );
        assert!(ok, "{out}\n{err}");
        if name == "e2g-sites" {
            assert!(out.contains("unsupported syntax: 2"), "{out}");
        }
    }
    assert_eq!(categories(d, "http://worm.test/"), ["malware"]);
    assert_eq!(
        categories(d, "http://trojan.test/download/x.exe"),
        ["malware"]
    );
    assert_eq!(categories(d, "http://virus.test/"), ["malware"]);

    // Stats: counts, the files each category is read from, overlaps.
    std::fs::write(d.join("lists/ads/domains"), "bet-one.test\n").expect("overlap");
    let (ok, out, err) = run(d, &["lists", "stats"]);
    assert!(ok, "{out}\n{err}");
    let gambling = out
        .lines()
        .find(|l| l.starts_with("gambling "))
        .expect("gambling row");
    assert!(gambling.contains("domains domains.ut1"), "{out}");
    assert!(
        gambling.split_whitespace().nth(2) == Some("2"),
        "{gambling}"
    );
    assert!(out.contains("gambling + ads: 1"), "{out}");
}

#[test]
fn a_corrupt_archive_or_an_unknown_category_writes_nothing() {
    let dir = tree(&[
        ("policy.toml", POLICY),
        ("lists/gambling/domains", "seed.test\n"),
    ]);
    let d = dir.path();
    let src = tempfile::tempdir().expect("temp");
    ut1_tree(src.path(), true);
    let archive = src.path().join("blacklists.tar.gz");
    tar_gz(src.path(), &archive);
    let bytes = std::fs::read(&archive).expect("archive");
    let corrupt = src.path().join("corrupt.tar.gz");
    std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).expect("truncated");
    let (ok, out, err) = run(
        d,
        &[
            "lists",
            "import",
            "--format",
            "ut1",
            corrupt.to_str().expect("path"),
        ],
    );
    assert!(!ok, "{out}");
    assert!(err.contains("nothing was imported"), "{err}");
    assert!(!d.join("lists/gambling/domains.ut1").exists());

    // A map naming a category the policy lacks.
    let map = src.path().join("map.toml");
    std::fs::write(&map, "adult = \"porn\"\n").expect("map");
    let (ok, _, err) = run(
        d,
        &[
            "lists",
            "import",
            "--format",
            "ut1",
            "--map",
            map.to_str().expect("path"),
            archive.to_str().expect("path"),
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("names category \"porn\", which the policy does not define"),
        "{err}"
    );
    assert!(!d.join("lists/pornography/domains.ut1").exists());

    // A single list with no category, and a UT1 source given one.
    let hosts = src.path().join("hosts");
    std::fs::write(&hosts, "0.0.0.0 ads.test\n").expect("hosts");
    let (ok, _, err) = run(
        d,
        &[
            "lists",
            "import",
            "--format",
            "hosts",
            hosts.to_str().expect("path"),
        ],
    );
    assert!(!ok && err.contains("--category"), "{err}");
    let (ok, _, err) = run(
        d,
        &[
            "lists",
            "import",
            "--format",
            "ut1",
            "--category",
            "gambling",
            archive.to_str().expect("path"),
        ],
    );
    assert!(!ok && err.contains("--map, not --category"), "{err}");
}

#[test]
fn the_shipped_ut1_map_is_the_built_in_one() {
    let shipped =
        std::fs::read_to_string(common::root().join("blocklists/ut1-map.toml")).expect("map");
    assert_eq!(shipped, gatehouse::core::feed::DEFAULT_UT1_MAP);
}
