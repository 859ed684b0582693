//! The development certificate authority and role-bearing certificates.
//!
//! Every Meridian connection is mutual TLS: both sides present a certificate
//! signed by the cluster CA, and the certificate's [`Role`] decides what its
//! holder may do. This module makes those certificates (`meridian certs …`)
//! and reads roles back out of them; [`crate::transport`] enforces them.
//!
//! **Role encoding.** A certificate carries its role as exactly one SAN URI
//! `urn:meridian:role:<node|client|admin>` (see [`role`] for why a SAN). The
//! subject CN is the certificate's name; it is an identity for logs and
//! audits, never an authorisation input.
//!
//! **Architecture Invariant:** the CA private key is read only from the CA
//! directory, and only by [`issue`]; nothing here copies it elsewhere or
//! returns it.
//!
//! Files: `<ca_dir>/ca.pem`, `<ca_dir>/ca.key`, `<out_dir>/<name>.pem`,
//! `<out_dir>/<name>.key`. Keys are PKCS#8 ECDSA P-256, written with mode
//! 0600 through a temporary file and a rename.

mod files;
mod generate;
pub mod role;

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rcgen::{Issuer, KeyPair, PublicKeyData};

pub use files::{load_certs, load_key, MAX_CERTS_PER_FILE, MAX_PEM_FILE_BYTES};
pub use generate::{
    validate_name, CA_VALIDITY, CLOCK_SKEW_ALLOWANCE, LEAF_VALIDITY, MAX_EXTRA_SANS, MAX_NAME_LEN,
};
pub use role::{ParseRoleError, Role, ROLE_URI_PREFIX};

/// File name of the CA certificate inside the CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// Why a certificate could not be made, loaded or interpreted. Certificate
/// operations never leave a half-written file: either a file was fully
/// replaced or it was not touched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The certificate name breaks the naming rule in `reason`; nothing was
    /// written. Choose another name.
    #[error("invalid certificate name {name:?}: {reason}")]
    InvalidName {
        /// The name that was given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// An extra subject alternative name is neither an IP address nor a valid
    /// DNS name; nothing was written.
    #[error("invalid subject alternative name {san:?}: expected an IP address or a DNS name")]
    InvalidSan {
        /// The SAN that was given.
        san: String,
    },
    /// More extra SANs than [`MAX_EXTRA_SANS`]; nothing was written.
    #[error("too many extra subject alternative names: {count} (at most {max})")]
    TooManySans {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The file exists and overwriting was not requested; nothing was
    /// written. Move it away or ask for it to be replaced (`--force`).
    #[error("{} already exists; refusing to overwrite it (use --force to replace it)", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The output file would replace the CA's own certificate or key.
    #[error("{} is the CA's own file; choose another name or output directory", path.display())]
    WouldOverwriteCa {
        /// The CA file that would have been replaced.
        path: PathBuf,
    },
    /// A file system operation failed; the message names the file.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What we were doing, e.g. "read".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file is not the PEM we expected (bad syntax, too large, wrong
    /// kind of key). Check that the path points at the right file.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The PEM file holds no certificate.
    #[error("{} contains no certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The PEM file holds no private key.
    #[error("{} contains no private key", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The CA key does not belong to the CA certificate (or the certificate
    /// is not a CA); certificates signed with it would not verify, so none
    /// was issued.
    #[error("{} does not match the CA certificate {}: {reason}", key.display(), cert.display())]
    CaMismatch {
        /// The CA certificate file.
        cert: PathBuf,
        /// The CA key file.
        key: PathBuf,
        /// What does not match.
        reason: &'static str,
    },
    /// rcgen could not generate a key or sign a certificate; nothing was
    /// written. This points at a bug or an unusable system RNG.
    #[error("cannot {action}: {source}")]
    Generate {
        /// What we were doing.
        action: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// The bytes are not a well-formed X.509 certificate.
    #[error("malformed certificate: {reason}")]
    Malformed {
        /// What the parser objected to.
        reason: String,
    },
    /// The certificate has no Meridian role, so it grants nothing. It was
    /// not made by `meridian certs issue`.
    #[error("certificate carries no Meridian role (a SAN URI {ROLE_URI_PREFIX}<role>)")]
    NoRole,
    /// The certificate names several roles; it is refused rather than
    /// guessing which one counts.
    #[error("certificate carries {count} Meridian roles; exactly one is allowed")]
    MultipleRoles {
        /// How many role URIs it has.
        count: usize,
    },
    /// The certificate's role URI names a role this version does not know.
    #[error("certificate role {uri:?} is unknown to this version")]
    UnknownRole {
        /// The full role URI.
        uri: String,
    },
    /// The certificate subject has no common name, so it has no name.
    #[error("certificate subject has no common name")]
    NoCommonName,
    /// The system clock is unusable for validity dates; fix the clock.
    #[error("cannot date the certificate: {reason}")]
    Clock {
        /// What is wrong with the clock.
        reason: String,
    },
}

/// Where [`init_ca`] wrote the CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaPaths {
    /// The CA certificate (`ca.pem`); distribute it to every node and client.
    pub cert: PathBuf,
    /// The CA private key (`ca.key`, mode 0600); keep it in the CA directory.
    pub key: PathBuf,
}

impl CaPaths {
    /// The CA file paths inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        CaPaths {
            cert: dir.join(CA_CERT_FILE),
            key: dir.join(CA_KEY_FILE),
        }
    }
}

/// Where [`issue`] wrote a certificate and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedPaths {
    /// The certificate (`<name>.pem`).
    pub cert: PathBuf,
    /// Its private key (`<name>.key`, mode 0600).
    pub key: PathBuf,
}

/// Creates a development CA in `dir` (`ca.pem` and `ca.key`), valid for
/// [`CA_VALIDITY`]. Creates `dir` if needed.
///
/// Refuses with [`CertError::AlreadyExists`], before generating anything, if
/// either file exists and `force` is false: replacing a CA invalidates every
/// certificate it signed.
pub fn init_ca(dir: &Path, force: bool) -> Result<CaPaths, CertError> {
    let paths = CaPaths::in_dir(dir);
    if !force {
        files::ensure_absent(&[&paths.cert, &paths.key])?;
    }
    let key = generate_key()?;
    let cert = generate::ca_params(SystemTime::now(), &key)?
        .self_signed(&key)
        .map_err(|source| CertError::Generate {
            action: "self-sign the CA certificate",
            source,
        })?;
    files::create_dir(dir)?;
    // Key first: a crash in between leaves a key without a certificate,
    // which `issue` reports, rather than a certificate nobody can sign with.
    files::write_atomic(
        &paths.key,
        key.serialize_pem().as_bytes(),
        files::KEY_FILE_MODE,
    )?;
    files::write_atomic(&paths.cert, cert.pem().as_bytes(), files::CERT_FILE_MODE)?;
    tracing::info!(cert = %paths.cert.display(), "created development CA");
    Ok(paths)
}

/// Issues a certificate for `name` with `role`, signed by the CA in `ca_dir`,
/// and writes `<out_dir>/<name>.pem` and `<out_dir>/<name>.key`, replacing
/// existing files of that name (renewal). Valid for [`LEAF_VALIDITY`].
///
/// SANs: the role URI, `name` (when it is a DNS name), `localhost`,
/// `127.0.0.1`, `::1`, then `extra_sans` (IP addresses as IP SANs, anything
/// else as a DNS name). Nodes get serverAuth and clientAuth; clients and
/// admins get clientAuth only.
pub fn issue(
    ca_dir: &Path,
    role: Role,
    name: &str,
    out_dir: &Path,
    extra_sans: &[String],
) -> Result<IssuedPaths, CertError> {
    validate_name(name)?;
    let params = generate::leaf_params(role, name, extra_sans, SystemTime::now())?;
    let ca_paths = CaPaths::in_dir(ca_dir);
    let issuer = load_issuer(&ca_paths)?;
    let paths = IssuedPaths {
        cert: out_dir.join(format!("{name}.pem")),
        key: out_dir.join(format!("{name}.key")),
    };
    files::create_dir(out_dir)?;
    refuse_ca_overwrite(&ca_paths, &paths)?;
    let key = generate_key()?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| CertError::Generate {
            action: "sign the certificate",
            source,
        })?;
    // Paired check: what we will write must read back as the role asked for.
    debug_assert!(matches!(role_of(cert.der()), Ok(r) if r == role));
    files::write_atomic(
        &paths.key,
        key.serialize_pem().as_bytes(),
        files::KEY_FILE_MODE,
    )?;
    files::write_atomic(&paths.cert, cert.pem().as_bytes(), files::CERT_FILE_MODE)?;
    tracing::info!(%role, name, cert = %paths.cert.display(), "issued certificate");
    Ok(paths)
}

/// The role encoded in a DER certificate (its single
/// `urn:meridian:role:<role>` SAN URI).
///
/// Fails if the bytes are not one certificate, or it has no role, several
/// roles or an unknown one. Does not verify signatures: call it only on
/// certificates TLS has already verified, or on our own.
pub fn role_of(cert_der: &[u8]) -> Result<Role, CertError> {
    role::role_in(&role::parse_der(cert_der)?)
}

/// The subject common name of a DER certificate, which Meridian uses as the
/// certificate's name. Same caveats as [`role_of`].
pub fn common_name_of(cert_der: &[u8]) -> Result<String, CertError> {
    role::common_name_in(&role::parse_der(cert_der)?)
}

fn generate_key() -> Result<KeyPair, CertError> {
    KeyPair::generate().map_err(|source| CertError::Generate {
        action: "generate a key pair",
        source,
    })
}

/// Loads the CA certificate and key and checks that they belong together.
fn load_issuer(paths: &CaPaths) -> Result<Issuer<'static, KeyPair>, CertError> {
    // The CA file may be a bundle; the first certificate is the signing CA.
    let ca_der =
        load_certs(&paths.cert)?
            .into_iter()
            .next()
            .ok_or_else(|| CertError::NoCertificate {
                path: paths.cert.clone(),
            })?;
    let key_pem = files::read_text(&paths.key)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| CertError::Pem {
        path: paths.key.clone(),
        reason: format!("not a usable private key: {e}"),
    })?;
    let mismatch = |reason| CertError::CaMismatch {
        cert: paths.cert.clone(),
        key: paths.key.clone(),
        reason,
    };
    let parsed = role::parse_der(&ca_der)?;
    if !parsed.is_ca() {
        return Err(mismatch("the certificate is not a CA"));
    }
    if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(mismatch("the key is not the certificate's key"));
    }
    Issuer::from_ca_cert_der(&ca_der, key).map_err(|e| CertError::Pem {
        path: paths.cert.clone(),
        reason: format!("unusable CA certificate: {e}"),
    })
}

/// Refuses outputs that are the CA's own files (`issue --out <ca_dir> ca`).
fn refuse_ca_overwrite(ca: &CaPaths, out: &IssuedPaths) -> Result<(), CertError> {
    // Both directories exist by now, so canonical paths compare reliably even
    // through symlinks and `..`.
    let canonical = |p: &Path| -> Result<PathBuf, CertError> {
        let dir = p.parent().unwrap_or(Path::new("."));
        let dir = dir
            .canonicalize()
            .map_err(|e| files::io_error("resolve", dir, e))?;
        Ok(dir.join(p.file_name().unwrap_or_default()))
    };
    let ca_files = [canonical(&ca.cert)?, canonical(&ca.key)?];
    for path in [&out.cert, &out.key] {
        let path = canonical(path)?;
        if ca_files.contains(&path) {
            return Err(CertError::WouldOverwriteCa { path });
        }
    }
    Ok(())
}

// Tests may panic on unexpected results; that is how they fail.
#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests;
