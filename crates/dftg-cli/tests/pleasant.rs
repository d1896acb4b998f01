//! A new user's first runs through the real binary: output into a pipe that closes early,
//! logs redirected to a file, a simulator profile given as a file, and refusals that leave
//! nothing behind.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn dftg() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dftg"));
    // a developer's shell must not change what the test sees
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("DFTG_") {
            cmd.env_remove(&k);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn run(args: &[&str]) -> Output {
    dftg().args(args).output().expect("run dftg")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// A small synthetic corpus in `dir/corpus`.
fn corpus(dir: &Path, images: u32) -> std::path::PathBuf {
    let c = dir.join("corpus");
    let out = run(&["corpus", "synth", "--images", &images.to_string(), "--out", s(&c)]);
    assert!(out.status.success(), "corpus synth: {}", text(&out.stderr));
    c
}

#[test]
fn a_closed_stdout_pipe_ends_quietly_with_success() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = corpus(dir.path(), 12);
    let out = dir.path().join("out");
    let mut child = dftg()
        .args(["run", "--corpus", s(&c), "--out", s(&out), "--shard-size", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dftg run");
    // the reader goes away before the first line (`| head -0`)
    drop(child.stdout.take());
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit {status} on a closed pipe; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "a panic on a closed pipe:\n{stderr}");
    assert!(!stderr.contains("Broken pipe"), "the closed pipe reported as an error:\n{stderr}");
}

#[test]
fn redirected_logs_carry_no_colour_codes_and_say_how_far_the_stages_got() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = corpus(dir.path(), 12);
    let out = run(&["run", "--corpus", s(&c), "--out", s(&dir.path().join("out")), "--shard-size", "4"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "dftg run: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape codes in a redirected stderr:\n{stderr}");
    assert!(stderr.lines().any(|l| l.contains("diagnose") && l.contains("12/12")), "no progress line for diagnose:\n{stderr}");
    // logs at info level, redirected: still plain text
    let out = dftg()
        .env("DFTG_LOG", "info")
        .args(["run", "--corpus", s(&c), "--out", s(&dir.path().join("out2")), "--shard-size", "4"])
        .output()
        .expect("run dftg");
    assert!(out.status.success(), "dftg run: {}", text(&out.stderr));
    assert!(!text(&out.stderr).contains('\u{1b}'), "escape codes in redirected logs:\n{}", text(&out.stderr));
}

#[test]
fn a_simulator_profile_file_is_a_model_like_a_bundled_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = corpus(dir.path(), 8);
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/sim/mild.toml");
    let model = format!("sim:{}", s(&profile));
    let out = run(&["run", "--corpus", s(&c), "--out", s(&dir.path().join("out")), "--model", &model]);
    assert!(out.status.success(), "dftg run --model {model}: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("job-sim-mild-"), "{}", text(&out.stdout));
}

#[test]
fn a_refused_run_leaves_no_folder_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = corpus(dir.path(), 4);
    let out_dir = dir.path().join("out");
    let out = run(&["run", "--corpus", s(&c), "--out", s(&out_dir), "--model", "sim:no-such-profile"]);
    assert!(!out.status.success(), "an unknown profile was accepted");
    assert!(text(&out.stderr).contains("no-such-profile"), "{}", text(&out.stderr));
    assert!(!out_dir.exists(), "a refused run left {}", out_dir.display());
    // an existing output folder stays
    std::fs::create_dir(&out_dir).expect("mkdir");
    let out = run(&["run", "--corpus", s(&c), "--out", s(&out_dir), "--model", "sim:no-such-profile"]);
    assert!(!out.status.success());
    assert!(out_dir.is_dir() && std::fs::read_dir(&out_dir).expect("read out").next().is_none(), "no job folder inside");
}

#[test]
fn annotations_without_images_fail_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = corpus(dir.path(), 8);
    std::fs::remove_dir_all(c.join("images")).expect("remove images");
    let out = run(&["run", "--corpus", s(&c), "--out", s(&dir.path().join("out")), "--shard-size", "4"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "a corpus without images succeeded:\n{}", text(&out.stdout));
    assert!(stderr.contains("missing_image"), "the reason is not named:\n{stderr}");
}
