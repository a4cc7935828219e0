//! Every committed seed (`fuzz/seeds/<target>/`) and every input a fuzzer
//! once failed on (`fuzz/regressions/<target>/`, kept forever) replayed
//! through the function its cargo-fuzz target calls, without a sanitizer:
//! a regression, or a target that no longer compiles, fails `cargo test`.
//! Also checks that fuzz/ and this list name the same targets.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use scalpel_fuzzing::TARGETS;
use scalpel_testkit::no_panic;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted (none if it does not exist).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.expect("a readable directory entry").path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_seed_and_regression_replays_cleanly() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for &(target, run) in TARGETS {
        for path in inputs("seeds", target).into_iter().chain(inputs("regressions", target)) {
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if let Err(panic) = no_panic(|| run(&data)) {
                failures.push(format!("{target}: {}: {panic}", path.display()));
            }
            replayed += 1;
        }
    }
    assert!(failures.is_empty(), "{} of {replayed} inputs fail:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_target_has_seeds() {
    let empty: Vec<&str> = TARGETS.iter().map(|t| t.0).filter(|t| inputs("seeds", t).is_empty()).collect();
    assert!(empty.is_empty(), "targets without seeds in fuzz/seeds/: {empty:?}");
}

/// The `name`s of the `[[bin]]` tables of fuzz/Cargo.toml.
fn cargo_fuzz_targets() -> BTreeSet<String> {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut names = BTreeSet::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let (true, Some(value)) = (in_bin, line.strip_prefix("name").map(str::trim_start)) {
            let name = value.strip_prefix('=').map(str::trim).and_then(|v| v.strip_prefix('"')?.strip_suffix('"'));
            names.insert(name.unwrap_or_else(|| panic!("fuzz/Cargo.toml: cannot read '{line}'")).to_owned());
        }
    }
    names
}

#[test]
fn fuzz_targets_and_replayed_targets_are_the_same() {
    let replayed: BTreeSet<String> = TARGETS.iter().map(|t| t.0.to_owned()).collect();
    assert_eq!(cargo_fuzz_targets(), replayed, "fuzz/Cargo.toml's [[bin]]s (left) and scalpel_fuzzing::TARGETS (right) differ");
    // Each cargo-fuzz target runs the function the replay runs.
    for target in &replayed {
        let path = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(source.contains(&format!("scalpel_fuzzing::{target}(")), "{} does not call scalpel_fuzzing::{target}", path.display());
    }
}
