//! A throwaway certificate authority for the TLS tests: a CA, a server
//! certificate for 127.0.0.1 and localhost, and client certificates, as PEM
//! files in a directory the test owns.

// Shared by the server's tests and warmpoolctl's; each uses its own part.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

pub struct Pki {
    ca_key: rcgen::KeyPair,
    ca: rcgen::Certificate,
    dir: PathBuf,
}

/// A certificate and its key, written out.
pub struct Issued {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Issued {
    /// A config's `[tls]` section serving this certificate (after the
    /// rest of the config: it opens a table).
    pub fn tls_section(&self) -> String {
        format!(
            "\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            self.cert_file, self.key_file
        )
    }
}

impl Pki {
    /// A new CA named `name`; its certificate is written to `dir/<name>.crt`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), ca.pem()).unwrap();
        Pki {
            ca_key,
            ca,
            dir: dir.to_owned(),
        }
    }

    pub fn ca_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        self.ca.pem().into_bytes()
    }

    /// A certificate for `names` (IP addresses and DNS names), signed by
    /// this CA, written to `dir/<file>.crt` and `dir/<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        self.issue_with(file, rcgen::CertificateParams::new(names).unwrap())
    }

    /// [`Pki::issue`] of a certificate valid from `not_before` to
    /// `not_after` (`(year, month, day)`, UTC midnight): an expired one, or
    /// one not valid yet.
    pub fn issue_valid(
        &self,
        file: &str,
        names: &[&str],
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
    ) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        self.issue_with(file, params)
    }

    fn issue_with(&self, file: &str, params: rcgen::CertificateParams) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let issued = Issued {
            cert_file: self.dir.join(format!("{file}.crt")),
            key_file: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert_file, cert.pem()).unwrap();
        std::fs::write(&issued.key_file, key.serialize_pem()).unwrap();
        // Readable by its owner alone, as a key should be: one others may
        // read is warned of.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&issued.key_file, std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        issued
    }
}
