//! What the reference-data tests of this crate share: where `../shared/data` is, and reading
//! its files.

use std::path::{Path, PathBuf};

/// The ten POPE caption files (`pope/captions/<name>.jsonl`): five models, two prompts.
#[allow(dead_code)] // not every suite reads the caption files
pub const POPE_CAPTION_FILES: [&str; 10] = [
    "instructblip.instruction1",
    "instructblip.instruction2",
    "llava.instruction1",
    "llava.instruction2",
    "minigpt-4.instruction1",
    "minigpt-4.instruction2",
    "mmgpt.instruction1",
    "mmgpt.instruction2",
    "mplug.instruction1",
    "mplug.instruction2",
];

/// The reference data folder: `$DFTG_DATA` (what `scripts/test.sh` sets), else
/// `$DFTG_SHARED_DATA`, else `<crate>/../../../shared/data`, when every path of `needed`
/// exists in it. Missing data fails the test under `CI=true` and skips it with a visible
/// message elsewhere.
pub fn shared_data(needed: &[&str]) -> Option<PathBuf> {
    let dir = match std::env::var_os("DFTG_DATA").or_else(|| std::env::var_os("DFTG_SHARED_DATA")) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    };
    if needed.iter().all(|p| dir.join(p).exists()) {
        return Some(dir);
    }
    let message = format!("reference data ({}) not found at {} (set DFTG_DATA)", needed.join(", "), dir.display());
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}");
    }
    eprintln!("skipping: {message}");
    None
}

/// A file's text; a test cannot go on without it.
pub fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
