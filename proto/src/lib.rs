//! The warmpool.v1 wire types and tonic service stubs, generated at build time
//! from `proto/warmpool/v1/warmpool.proto`.
#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    tonic::include_proto!("warmpool.v1");

    /// Encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("warmpool_descriptor");
}

/// Checks shared by warmpoold and warmpoolctl (this is the one crate both
/// depend on) on the files that hold their secrets.
pub mod secret_file {
    use std::path::Path;

    /// Why `path`, a file holding a secret (a cloud password, a private
    /// key, a bearer token), deserves a warning: every user of the host may
    /// read it. Read by the owner's group is not worth one: Kubernetes
    /// mounts a Secret 0440 under the pod's fsGroup on purpose. `None` also
    /// when the mode cannot be read (the read that follows says why).
    pub fn world_readable(path: &Path) -> Option<String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Followed through symbolic links: Kubernetes' mounted keys are
            // links to the file whose mode counts.
            let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
            (mode & 0o004 != 0).then(|| {
                format!(
                    "{} holds a secret and every user of this host may read it \
                     (mode {mode:04o}): chmod o-r it",
                    path.display()
                )
            })
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            None
        }
    }

    #[cfg(all(test, unix))]
    mod tests {
        use std::os::unix::fs::PermissionsExt;

        #[test]
        fn only_a_file_others_may_read_is_named() {
            let dir = std::env::temp_dir().join(format!("secret-file-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join("token");
            std::fs::write(&file, "s3cret").unwrap();
            for (mode, warned) in [
                (0o644, true),
                (0o604, true),
                (0o640, false),
                (0o440, false),
                (0o600, false),
            ] {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
                let warning = super::world_readable(&file);
                assert_eq!(warning.is_some(), warned, "mode {mode:o}: {warning:?}");
                if let Some(warning) = warning {
                    assert!(warning.contains(&file.display().to_string()), "{warning}");
                    assert!(warning.contains(&format!("(mode {mode:04o})")), "{warning}");
                }
            }
            assert_eq!(super::world_readable(&dir.join("missing")), None);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
