//! `warmpoolctl completions <shell>`: the real binary prints a completion
//! script naming its subcommands and flags, without any server to talk to.

use std::process::Command;

fn completions(shell: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_warmpoolctl"))
        // Nothing listens here: completions must not try to connect.
        .args(["--endpoint", "http://127.0.0.1:1", "completions", shell])
        .output()
        .expect("warmpoolctl runs")
}

#[test]
fn every_supported_shell_gets_a_script_naming_the_commands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = completions(shell);
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8(out.stdout).expect("utf-8 script");
        for word in [
            "warmpoolctl",
            "allocate",
            "release",
            "watch",
            "pools",
            "endpoint",
        ] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
    }
}

#[test]
fn bash_script_registers_the_completion_function() {
    let out = completions("bash");
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(
        script.contains("complete -F _warmpoolctl"),
        "bash script does not register _warmpoolctl:\n{script}"
    );
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = completions("tcsh");
    assert_eq!(out.status.code(), Some(2), "clap's usage-error status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tcsh"), "{stderr}");
}

/// `warmpoolctl ... | head` that `head` left: writing fails with "Broken
/// pipe", the reader's doing (it took what it wanted), not a failure and
/// not a TLS mismatch with a daemon: the command ends quietly, done.
#[test]
fn a_closed_stdout_ends_quietly_without_a_tls_hint() {
    let (reader, writer) = std::io::pipe().unwrap();
    // Closed before the first write: that write fails, whatever the timing.
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_warmpoolctl"))
        .args(["--endpoint", "http://127.0.0.1:1", "completions", "bash"])
        .stdout(writer)
        .output()
        .expect("warmpoolctl runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.to_ascii_lowercase().contains("broken pipe"),
        "{stderr}"
    );
    assert!(!stderr.contains("hint:"), "{stderr}");
}
