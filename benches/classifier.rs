//! Classifier benchmark: build, load, memory and lookup time of the compiled domain lists.
//!
//! `cargo bench --bench classifier` (or `-- 1000000 5000000` to choose list sizes).
//! Lists are synthetic and deterministic, shaped like the shared anchor harness's
//! (`../shared/bench/gen_lists.py`: syllable names with a number, ten TLDs, a fifth of
//! them with a `www.`/`cdn.`/`m.`/`img.` label), generated here, never committed.
//!
//! For each size it reports:
//! * build: text file → compiled index through the real loader (`snapshot::load` with
//!   `CacheMode::Rebuild`, which also writes the cache);
//! * load: compiled cache → ready (`CacheMode::Use`);
//! * memory: bytes of the compiled index per domain, and the process's resident-memory
//!   growth when the compiled lists are loaded;
//! * classify: median time per classification of a 4-label host (half listed, half not)
//!   through `CompiledLists::classify` on a parsed target, cycling over 2 000 hosts (a
//!   realistic working set) and over 20 000 hosts (cold: most lookups miss the caches).

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a benchmark reads the clock

use std::fs;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use gatehouse::core::host::Target;
use gatehouse::lists::CacheMode;
use gatehouse::snapshot;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TLDS: &[&str] = &[
    "com", "net", "org", "co.uk", "info", "io", "xyz", "ru", "de", "top",
];
const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "zu", "re", "ta", "po", "ne", "vi", "sa", "do", "qu", "ber", "lin", "tor",
    "mar",
];

fn name(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..2 + rng.below(4) {
        s.push_str(SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize]);
    }
    s.push_str(&rng.below(10_000).to_string());
    s.push('.');
    s.push_str(TLDS[rng.below(TLDS.len() as u64) as usize]);
    s
}

fn generate(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let base = name(&mut rng);
        let d = if rng.below(5) == 0 {
            format!(
                "{}.{base}",
                ["www", "cdn", "m", "img"][rng.below(4) as usize]
            )
        } else {
            base
        };
        if seen.insert(d.clone()) {
            out.push(d);
        }
    }
    out
}

fn rss_bytes() -> u64 {
    fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run(n: usize, dir: &Path) {
    let domains = generate(n, 20261122);
    let list_dir = dir.join(format!("lists-{n}"));
    fs::create_dir_all(&list_dir).expect("bench dir");
    {
        let mut f = std::io::BufWriter::new(
            fs::File::create(list_dir.join("domains")).expect("create list"),
        );
        for d in &domains {
            writeln!(f, "{d}").expect("write list");
        }
    }
    let policy = dir.join(format!("policy-{n}.toml"));
    fs::write(
        &policy,
        format!(
            r#"[school]
name = "bench"
[lists]
dir = "{dir}"
cache = "{dir}/compiled-{n}.idx"
[categories.blocked]
severity = "inappropriate"
list = "{list}"
[identity]
default_group = "pupils"
[groups.pupils]
mode = "blocklist"
block = ["blocked"]
"#,
            dir = dir.display(),
            list = list_dir.display()
        ),
    )
    .expect("write policy");

    let t = Instant::now();
    let built = snapshot::load(&policy, CacheMode::Rebuild).expect("build");
    let build_s = t.elapsed().as_secs_f64();
    assert!(!built.report.from_cache && built.report.cache_error.is_none());
    let index_bytes = built.lists.domains.heap_bytes();
    drop(built);

    let rss_before = rss_bytes();
    let t = Instant::now();
    let snap = snapshot::load(&policy, CacheMode::Use).expect("load");
    let load_s = t.elapsed().as_secs_f64();
    assert!(snap.report.from_cache, "second load uses the cache");
    let rss_growth = rss_bytes().saturating_sub(rss_before);

    // 4-label hosts: a label in front of listed names (which have 3 or 4 labels), and
    // unlisted names of the same shape.
    let mut rng = Rng(7);
    let mut targets = Vec::with_capacity(20_000);
    for i in 0..20_000 {
        let host = if i % 2 == 0 {
            let d = &domains[rng.below(n as u64) as usize];
            let labels = d.split('.').count();
            if labels >= 4 {
                d.clone()
            } else {
                format!("a.{d}")
            }
        } else {
            format!("www.{}", name(&mut Rng(rng.next())))
        };
        let target = Target::parse(&format!("http://{host}/index.html")).expect("bench target");
        targets.push(target);
    }
    let listed = targets
        .iter()
        .step_by(2)
        .filter(|t| !snap.lists.classify(t).categories.is_empty())
        .count();
    assert_eq!(listed, targets.len() / 2, "every listed host classifies");

    let mut batches = Vec::new();
    for round in 0..200 {
        let t = Instant::now();
        for target in targets.iter().skip(round % 2).step_by(10) {
            black_box(snap.lists.classify(black_box(target)));
        }
        batches.push(t.elapsed().as_nanos() as f64 / (targets.len() / 10) as f64);
    }
    let classify_ns = median(&mut batches);

    // Cold: every one of the 20 000 hosts once per round, so most lookups miss the
    // CPU caches (a school's real traffic is far more concentrated than this).
    let mut batches = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        for target in &targets {
            black_box(snap.lists.classify(black_box(target)));
        }
        batches.push(t.elapsed().as_nanos() as f64 / targets.len() as f64);
    }
    let lookup_ns = median(&mut batches);

    let mut batches = Vec::new();
    let urls: Vec<String> = targets
        .iter()
        .take(2000)
        .map(|t| format!("http://{}/index.html", t.host))
        .collect();
    for _ in 0..50 {
        let t = Instant::now();
        for u in &urls {
            black_box(Target::parse(black_box(u)).ok());
        }
        batches.push(t.elapsed().as_nanos() as f64 / urls.len() as f64);
    }
    let parse_ns = median(&mut batches);

    println!(
        "{n:>9} domains | build {build_s:6.2} s | load {load_s:6.3} s | index {:5.2} B/domain | RSS +{:5.2} B/domain | classify: 2k hosts {classify_ns:4.0} ns, 20k hosts (cold) {lookup_ns:4.0} ns | URL parse {parse_ns:5.0} ns",
        index_bytes as f64 / n as f64,
        rss_growth as f64 / n as f64,
    );
    drop(snap);
    let _ = fs::remove_dir_all(&list_dir);
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000_000, 5_000_000]
    } else {
        sizes
    };
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("bench dir");
    println!("classifier benchmark (medians; targets: 4-label hosts, half listed)");
    for n in sizes {
        run(n, &dir);
    }
    let _ = fs::remove_dir_all(&dir);
}
