//! A throw-away certificate authority for local clusters and tests (`switchboard dev --secure`):
//! a CA, and node certificates naming `node-<id>` and the hosts clients use. Production
//! clusters bring certificates from their own PKI (cert-manager, Vault, an internal CA).

use crate::{TlsFiles, node_name};
use std::path::Path;

/// A certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters.
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// A CA that signs node certificates.
pub struct Pki {
    cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<Self, PkiError> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for `names` (DNS names or IP addresses), valid until `not_after`
    /// (`(year, month, day)`; `None`: far in the future).
    pub fn issue(&self, names: &[String], not_after: Option<(i32, u8, u8)>) -> Result<Issued, PkiError> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(rcgen::DnType::CommonName, first.as_str());
        }
        if let Some((year, month, day)) = not_after {
            params.not_before = rcgen::date_time_ymd(year - 1, month, day);
            params.not_after = rcgen::date_time_ymd(year, month, day);
        }
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// The certificate of node `id`: it names `node-<id>` and `hosts`.
    pub fn node(&self, id: u64, hosts: &[&str]) -> Result<Issued, PkiError> {
        let mut names = vec![node_name(id)];
        names.extend(hosts.iter().map(|host| (*host).to_owned()));
        self.issue(&names, None)
    }

    /// Writes `ca.crt` and node `id`'s `node-<id>.crt` and `node-<id>.key` (mode 0600) into
    /// `dir`, and returns where they are.
    pub fn write_node(&self, dir: &Path, id: u64, hosts: &[&str]) -> Result<TlsFiles, PkiError> {
        let issued = self.node(id, hosts)?;
        let files = TlsFiles {
            cert_file: dir.join(format!("{}.crt", node_name(id))),
            key_file: dir.join(format!("{}.key", node_name(id))),
            ca_file: dir.join("ca.crt"),
        };
        write(&files.ca_file, self.ca_pem())?;
        write(&files.cert_file, &issued.cert_pem)?;
        write_secret(&files.key_file, &issued.key_pem)?;
        Ok(files)
    }
}

fn write(path: &Path, text: &str) -> Result<(), PkiError> {
    std::fs::write(path, text).map_err(|source| PkiError::Write { path: path.to_owned(), source })
}

/// Writes a private key readable by its owner only.
pub fn write_secret(path: &Path, text: &str) -> Result<(), PkiError> {
    write(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| PkiError::Write { path: path.to_owned(), source })?;
    }
    Ok(())
}
