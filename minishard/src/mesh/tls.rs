//! TLS for the mesh, when configured: mutual TLS 1.3 (rustls with the ring
//! provider) under the cookie handshake, which still runs on top.
//!
//! Every node is both a client (it dials) and a server (it listens), with
//! one certificate and key, and trusts exactly one thing: the cluster's CA.
//!
//! - The dialer checks that the listener's certificate chains to the CA and
//!   is valid for the host of the address it dialled (an IP SAN for an IP
//!   address, a DNS SAN for a name), as HTTPS does.
//! - The listener requires a client certificate chaining to the CA. For a
//!   dialer that says it is a member, it also checks, after the dialer's
//!   hello, that the certificate is valid for the host of the address the
//!   dialer claims: a member's identity is bound to its certificate both
//!   ways. An observer (`minishard status` on an operator's machine) needs a
//!   certificate from the CA but not one naming its address, which nobody
//!   dials and which may be behind NAT.
//!
//! So a certificate from the CA proves "a node of this cluster", and for a
//! member also "this member"; the cookie, checked on top, still proves the
//! cluster's secret. A private CA per cluster is the intended setup: a
//! public CA would make every certificate it ever signed a cluster node.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::TlsFiles;
use crate::core::NodeId;
use crate::error::Error;

/// A node's TLS setup, loaded and checked once at join.
#[derive(Clone)]
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls { .. }")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(what: &str, path: &Path, why: impl fmt::Display) -> Error {
    Error::Config(format!("TLS {what} {}: {why}", path.display()))
}

fn read_certificates(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    // Read the file first, so a missing or unreadable file says so plainly.
    let pem = std::fs::read(path).map_err(|e| config_error(what, path, e))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error(what, path, format!("not valid PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(config_error(
            what,
            path,
            "no certificate in it (expected PEM blocks \"BEGIN CERTIFICATE\")",
        ));
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = std::fs::read(path).map_err(|e| config_error("key", path, e))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => config_error(
            "key",
            path,
            "no private key in it (expected PEM \"BEGIN PRIVATE KEY\", \"BEGIN EC PRIVATE KEY\" or \"BEGIN RSA PRIVATE KEY\")",
        ),
        other => config_error("key", path, format!("not valid PEM: {other}")),
    })
}

impl Tls {
    /// Reads and checks the certificate, the key and the CA: unreadable
    /// files, bad PEM, a key that does not match the certificate and a
    /// certificate the CA did not sign are all errors here, at join.
    pub(crate) fn load(files: &TlsFiles) -> Result<Tls, Error> {
        let chain = read_certificates("certificate", &files.cert)?;
        let key = read_key(&files.key)?;
        let mut roots = RootCertStore::empty();
        for ca in read_certificates("CA", &files.ca)? {
            roots
                .add(ca)
                .map_err(|e| config_error("CA", &files.ca, format!("unusable certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let mismatch = |e: rustls::Error| {
            Error::Config(format!(
                "TLS key {} does not fit certificate {}: {e}",
                files.key.display(),
                files.cert.display()
            ))
        };

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| config_error("CA", &files.ca, e))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(mismatch)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain.clone(), key)
            .map_err(mismatch)?;

        // A certificate the CA did not sign would be refused by every peer:
        // say so now rather than as refusals at run time.
        let now = rustls_pki_types::UnixTime::now();
        verifier
            .verify_client_cert(&chain[0], &chain[1..], now)
            .map_err(|e| {
                Error::Config(format!(
                    "TLS certificate {} is not accepted by the CA {}: {e}",
                    files.cert.display(),
                    files.ca.display()
                ))
            })?;

        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// The server side of a connection; returns the client's certificate.
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<
        (
            tokio_rustls::server::TlsStream<TcpStream>,
            CertificateDer<'static>,
        ),
        String,
    > {
        let stream = self
            .acceptor
            .accept(tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.clone().into_owned())
            // Unreachable: the verifier requires a client certificate.
            .ok_or_else(|| "TLS handshake failed: the client sent no certificate".to_owned())?;
        Ok((stream, certificate))
    }

    /// The client side of a connection to `target`.
    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
        target: &NodeId,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let name = ServerName::try_from(host(target).to_owned())
            .map_err(|e| format!("TLS: {target} has no host a certificate can name: {e}"))?;
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))
    }
}

/// The host of a `host:port` address, without IPv6 brackets.
fn host(node: &NodeId) -> &str {
    let text = node.as_str();
    let host = text.rsplit_once(':').map_or(text, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Whether a (CA-verified) certificate is valid for the host of `node`.
pub(crate) fn names(certificate: &CertificateDer<'_>, node: &NodeId) -> Result<(), String> {
    let name = ServerName::try_from(host(node))
        .map_err(|e| format!("{node} has no host a certificate can name: {e}"))?;
    webpki::EndEntityCert::try_from(certificate)
        .and_then(|cert| cert.verify_is_valid_for_subject_name(&name))
        .map_err(|e| {
            format!(
                "{node} claims to be a member but its TLS certificate is not valid for {}: {e}",
                host(node)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_address() {
        let host_of = |s: &str| host(&NodeId::parse(s).unwrap()).to_owned();
        assert_eq!(host_of("10.0.0.1:7000"), "10.0.0.1");
        assert_eq!(host_of("[::1]:7000"), "::1");
        assert_eq!(host_of("node-1.example:7000"), "node-1.example");
    }
}
