//! Certificates for TLS tests, made on the spot with rcgen: a cluster CA,
//! node certificates it signs, and a second, unrelated CA. Also used by the
//! `test-certs` example, which writes them for the C and Python tests.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority that can sign node certificates.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A node certificate valid for `names` (IP addresses or DNS names),
    /// for both TLS server and client use; returns (certificate, key) PEM.
    pub fn node(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Paths of one node's PEM files.
#[derive(Clone, Debug)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Writes a node's files as `<name>.pem`, `<name>-key.pem` (and the CA as
/// `<ca_name>.pem`) into `dir`.
pub fn write(dir: &Path, name: &str, ca_name: &str, ca: &Ca, node: &(String, String)) -> Files {
    std::fs::create_dir_all(dir).unwrap();
    let files = Files {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
        ca: dir.join(format!("{ca_name}.pem")),
    };
    std::fs::write(&files.cert, &node.0).unwrap();
    std::fs::write(&files.key, &node.1).unwrap();
    std::fs::write(&files.ca, &ca.pem).unwrap();
    files
}

/// The files for the C and Python tests, into `dir`: `ca.pem` with
/// `node.pem`/`node-key.pem` (valid for 127.0.0.1 and localhost), and
/// `other-ca.pem` with `other.pem`/`other-key.pem` from an unrelated CA.
pub fn write_test_set(dir: &Path) {
    let ca = Ca::new("minishard test cluster CA");
    write(
        dir,
        "node",
        "ca",
        &ca,
        &ca.node(&["127.0.0.1", "localhost"]),
    );
    let other = Ca::new("some other CA");
    write(
        dir,
        "other",
        "other-ca",
        &other,
        &other.node(&["127.0.0.1", "localhost"]),
    );
}
