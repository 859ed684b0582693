//! Reading and writing PEM files, with the path in every error.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::CertError;

/// Largest PEM file we read. A certificate chain or key is a few KiB; the
/// bound stops a wrong path (a log file, a disk image) from being slurped.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// Most certificates accepted from one PEM file (a chain or a CA bundle).
pub const MAX_CERTS_PER_FILE: usize = 16;

/// Unix permissions of private key files: readable by the owner only.
pub(super) const KEY_FILE_MODE: u32 = 0o600;
/// Unix permissions of certificate files: public by nature.
pub(super) const CERT_FILE_MODE: u32 = 0o644;

/// Loads every certificate in a PEM file, leaf first (as TLS sends them).
///
/// Fails with an error naming `path` if the file cannot be read, is larger
/// than [`MAX_PEM_FILE_BYTES`], holds no certificate or more than
/// [`MAX_CERTS_PER_FILE`].
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = read_bounded(path)?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let cert = item.map_err(|e| pem_error(path, e))?;
        if certs.len() == MAX_CERTS_PER_FILE {
            return Err(CertError::Pem {
                path: path.to_owned(),
                reason: format!("more than {MAX_CERTS_PER_FILE} certificates"),
            });
        }
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Loads the first private key (PKCS#8, SEC1 or PKCS#1) in a PEM file.
///
/// Fails with an error naming `path` if the file cannot be read or holds no
/// key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let bytes = read_bounded(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => CertError::NoPrivateKey {
            path: path.to_owned(),
        },
        other => pem_error(path, other),
    })
}

/// Reads a whole file as UTF-8 text, bounded like the PEM loaders.
pub(super) fn read_text(path: &Path) -> Result<String, CertError> {
    let bytes = read_bounded(path)?;
    String::from_utf8(bytes).map_err(|_| CertError::Pem {
        path: path.to_owned(),
        reason: "not UTF-8 text".to_owned(),
    })
}

/// Reads at most [`MAX_PEM_FILE_BYTES`] (plus one, to detect a larger file).
fn read_bounded(path: &Path) -> Result<Vec<u8>, CertError> {
    let file = fs::File::open(path).map_err(|e| io_error("open", path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error("read", path, e))?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(CertError::Pem {
            path: path.to_owned(),
            reason: format!("larger than {MAX_PEM_FILE_BYTES} bytes; is this a PEM file?"),
        });
    }
    Ok(bytes)
}

/// Refuses to go on if any of `paths` exists, naming the first one found.
pub(super) fn ensure_absent(paths: &[&Path]) -> Result<(), CertError> {
    for path in paths {
        match fs::symlink_metadata(path) {
            Ok(_) => {
                return Err(CertError::AlreadyExists {
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("inspect", path, e)),
        }
    }
    Ok(())
}

/// Creates `dir` and its parents if missing.
pub(super) fn create_dir(dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|e| io_error("create directory", dir, e))
}

/// Writes `contents` to `path` through a temporary file and a rename, so a
/// crash leaves either the old file or the new one, never half a key.
///
/// The temporary file is created fresh with `mode`, so a key is never
/// readable by others, not even for the moment before a chmod.
pub(super) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let tmp = tmp_path(path);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("remove stale", &tmp, e)),
    }
    let mut file = open_new(&tmp, mode).map_err(|e| io_error("create", &tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("write", &tmp, e))?;
    drop(file);
    // Certificates are regenerable development artefacts, so we do not fsync
    // the directory after the rename; the file contents themselves are synced.
    fs::rename(&tmp, path).map_err(|e| io_error("rename into place", path, e))
}

#[cfg(unix)]
fn open_new(path: &Path, mode: u32) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

#[cfg(not(unix))]
fn open_new(path: &Path, _mode: u32) -> io::Result<fs::File> {
    // No Unix permission bits here; the directory's ACL is what protects keys.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

pub(super) fn io_error(action: &'static str, path: &Path, source: io::Error) -> CertError {
    CertError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn pem_error(path: &Path, e: pem::Error) -> CertError {
    match e {
        pem::Error::Io(source) => io_error("read", path, source),
        other => CertError::Pem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}
