//! A reload swaps policy and lists together: readers racing a swap see the old snapshot
//! or the new one, whole, never a mixture.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests are shell: they read files and clocks

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::tree;
use gatehouse::core::host::Target;
use gatehouse::lists::CacheMode;
use gatehouse::snapshot::{self, Live};

fn policy(school: &str) -> String {
    format!(
        "[school]\nname = \"{school}\"\n[lists]\ndir = \"lists-{school}\"\n[categories.games]\nseverity = \"productivity\"\n[identity]\ndefault_group = \"a\"\n[groups.a]\nmode = \"blocklist\"\nblock = [\"games\"]\n"
    )
}

#[test]
fn readers_never_see_half_a_reload() {
    let old_policy = policy("old");
    let new_policy = policy("new");
    let dir = tree(&[
        ("old.toml", &old_policy),
        ("new.toml", &new_policy),
        ("lists-old/games/domains", "old-game.example\n"),
        ("lists-new/games/domains", "new-game.example\n"),
    ]);
    let load = |name: &str| snapshot::load(&dir.path().join(name), CacheMode::Off).expect("loads");
    let live = Arc::new(Live::new(load("old.toml")));
    let stop = Arc::new(AtomicBool::new(false));
    let old_target = Target::parse("http://old-game.example/").expect("URL");
    let new_target = Target::parse("http://new-game.example/").expect("URL");
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (live, stop) = (live.clone(), stop.clone());
            let (old_target, new_target) = (old_target.clone(), new_target.clone());
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let snap = live.get();
                    let old_listed = !snap.classify(&old_target).categories.is_empty();
                    let new_listed = !snap.classify(&new_target).categories.is_empty();
                    // The school name comes from the policy, the listing from the lists:
                    // they must always belong to the same snapshot.
                    match snap.policy.school.as_str() {
                        "old" => assert!(old_listed && !new_listed),
                        "new" => assert!(new_listed && !old_listed),
                        other => panic!("unexpected snapshot {other}"),
                    }
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    for i in 0..200 {
        live.replace(load(if i % 2 == 0 { "new.toml" } else { "old.toml" }));
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("reader did not panic") > 0);
    }
}
