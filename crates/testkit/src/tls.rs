//! Certificates for clusters with TLS on, made for the test: a CA, a server certificate for
//! `localhost` signed by it (so `sslmode=verify-full` passes for `host=localhost` and fails
//! with a host-name mismatch for `host=127.0.0.1`), and an unrelated CA for "wrong CA" tests.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::{Error, Result};

/// Where a TLS cluster's client-side files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed the server's certificate (`sslrootcert`).
    pub root_cert: PathBuf,
    /// A CA that signed nothing the server has: verification against it fails.
    pub other_root_cert: PathBuf,
}

/// A server certificate and its key, PEM.
pub(crate) struct ServerCert {
    pub(crate) cert: String,
    pub(crate) key: String,
}

fn failed(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::io(what, std::io::Error::other(e.to_string()))
}

fn ca(name: &str) -> Result<(rcgen::Certificate, KeyPair)> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed("a CA"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().map_err(failed("a CA key"))?;
    let cert = params.self_signed(&key).map_err(failed("signing a CA"))?;
    Ok((cert, key))
}

/// Makes the CAs (their certificates written into `dir`, created) and the server's
/// certificate for `localhost`.
pub(crate) fn generate(dir: &Path) -> Result<(TlsFiles, ServerCert)> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let (root, root_key) = ca("pgops test CA")?;
    let (other, _) = ca("pgops unrelated test CA")?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])
        .map_err(failed("a server certificate"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(failed("a server key"))?;
    let cert = params
        .signed_by(&key, &root, &root_key)
        .map_err(failed("signing the server certificate"))?;
    let files = TlsFiles {
        root_cert: dir.join("root.crt"),
        other_root_cert: dir.join("other-root.crt"),
    };
    for (path, pem) in [
        (&files.root_cert, root.pem()),
        (&files.other_root_cert, other.pem()),
    ] {
        std::fs::write(path, pem)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    Ok((
        files,
        ServerCert {
            cert: cert.pem(),
            key: key.serialize_pem(),
        },
    ))
}
