//! The `cloudsim` binary itself, as README's walk-through runs it.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `cloudsim --clouds-yaml path` until it has written the file (it
/// prints its comments after), then stops it.
fn write_clouds_yaml(path: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloudsim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--mysql-port",
            "0",
            "--clouds-yaml",
        ])
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.starts_with("# cloudsim serving at"), "{first:?}");
}

/// The permission bits, in octal as `ls` and chmod speak them.
fn mode(path: &Path) -> String {
    format!(
        "{:o}",
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    )
}

/// The clouds.yaml holds the password: only its owner may read it, so
/// warmpoold, reading it next, has no cause to warn it is readable by all.
/// One already there (an earlier run's, or made readable by all) is
/// narrowed too.
#[test]
fn the_clouds_yaml_is_written_readable_by_its_owner_only() {
    let dir = std::env::temp_dir().join(format!("cloudsim-binary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fresh = dir.join("fresh.yaml");
    let _ = std::fs::remove_file(&fresh);
    write_clouds_yaml(&fresh);
    assert_eq!(mode(&fresh), "600", "{}", fresh.display());
    assert!(std::fs::read_to_string(&fresh)
        .unwrap()
        .contains("password"));

    let old = dir.join("old.yaml");
    std::fs::write(
        &old,
        "an earlier run's, much longer than the new one ".repeat(100),
    )
    .unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_clouds_yaml(&old);
    assert_eq!(mode(&old), "600", "{}", old.display());
    let text = std::fs::read_to_string(&old).unwrap();
    assert!(!text.contains("earlier run"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
