//! Replays every saved fuzz input through its target: the seeds in
//! `corpus/<target>/` and the crashes found so far in
//! `regressions/<target>/`, so that a fixed crash that comes back fails a
//! plain `cargo test`, without the fuzzer.

use std::path::Path;

#[test]
fn every_saved_input_passes_its_target() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut ran = 0;
    for (name, target) in ftpd_fuzz::TARGETS {
        for kind in ["corpus", "regressions"] {
            let dir = here.join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries {
                let path = entry.expect("reading a saved input's directory").path();
                let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                eprintln!("{name}: {}", path.display());
                target(&data);
                ran += 1;
            }
        }
    }
    assert!(ran > 0, "no saved inputs found under {}", here.display());
}

#[test]
fn every_target_has_seeds() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in ftpd_fuzz::TARGETS {
        let dir = here.join("corpus").join(name);
        let n = std::fs::read_dir(&dir).map_or(0, Iterator::count);
        assert!(n > 0, "{} has no seed inputs", dir.display());
    }
}
