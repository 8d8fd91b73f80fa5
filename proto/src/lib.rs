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
    /// read it, its mode letting others read it and every directory above
    /// it letting them search it. Read by the owner's group is not worth
    /// one: Kubernetes mounts a Secret 0440 under the pod's fsGroup on
    /// purpose; nor a file others may read in a directory they cannot
    /// search (a token in a 0700 or 0750 home). `None` also when the mode
    /// cannot be read (the read that follows says why).
    pub fn world_readable(path: &Path) -> Option<String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode_of = |path: &Path| Some(std::fs::metadata(path).ok()?.permissions().mode());
            // Followed through symbolic links: Kubernetes' mounted keys are
            // links to the file whose mode counts, and the directories
            // above that file are the ones others must search to read it.
            let mode = mode_of(path)? & 0o7777;
            if mode & 0o004 == 0 {
                return None;
            }
            let real = std::fs::canonicalize(path).ok()?;
            for directory in real.ancestors().skip(1) {
                if mode_of(directory)? & 0o001 == 0 {
                    return None;
                }
            }
            Some(format!(
                "{} holds a secret and every user of this host may read it \
                 (mode {mode:04o}): chmod o-r it",
                path.display()
            ))
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
            // Others may reach it (/tmp is 1777), whatever the umask.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
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

        /// A file others may read in a directory they cannot search (a
        /// 0700 home, a 0750 one) is out of their reach: not named. Every
        /// directory above it counts, and the file a link leads to.
        #[test]
        fn a_file_in_a_directory_others_cannot_search_is_not_named() {
            let mode = |path: &std::path::Path, mode: u32| {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
            };
            let top = std::env::temp_dir().join(format!("secret-dir-{}", std::process::id()));
            let inner = top.join("inner");
            std::fs::create_dir_all(&inner).unwrap();
            let file = inner.join("token");
            std::fs::write(&file, "s3cret").unwrap();
            mode(&file, 0o644);
            mode(&inner, 0o755);
            let link = std::env::temp_dir().join(format!("secret-link-{}", std::process::id()));
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&file, &link).unwrap();
            for (top_mode, warned) in [(0o755, true), (0o711, true), (0o750, false), (0o700, false)]
            {
                mode(&top, top_mode);
                for path in [&file, &link] {
                    let warning = super::world_readable(path);
                    assert_eq!(
                        warning.is_some(),
                        warned,
                        "{top_mode:o} {path:?}: {warning:?}"
                    );
                }
            }
            mode(&top, 0o755);
            mode(&inner, 0o700);
            assert_eq!(super::world_readable(&file), None);
            mode(&inner, 0o755);
            std::fs::remove_file(&link).unwrap();
            std::fs::remove_dir_all(&top).unwrap();
        }
    }
}
