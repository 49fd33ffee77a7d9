//! rustls configurations for the node's HTTPS server and its sync client, built from PEM
//! files that are re-read when they change ([`crate::reload`]): a certificate rotated by
//! cert-manager or a replaced Secret takes effect on the next handshake, with no restart and
//! no dropped connection.
//!
//! - Server: `--tls-cert-file` and `--tls-key-file`; with `--tls-client-ca-file`, clients
//!   are asked for a certificate from that CA. A client without one still completes the
//!   handshake, so that the kubelet's probes work, and [`crate::auth`] refuses its requests
//!   to anything but the probes; a client with a certificate from another CA, or an expired
//!   one, fails the handshake.
//! - Client: peers are verified against `--peer-ca-file` and the system's roots (so public
//!   `https://` peers work too), with hostname checks; the node presents its own serving
//!   certificate as its client certificate (issue it for both serverAuth and clientAuth).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::reload::Reloading;

/// The one crypto provider (aws-lc-rs, which reqwest's rustls uses too).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = crate::reload::read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = crate::reload::read(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: no PEM private key: {e}", path.display()))
}

/// A certificate chain with its key, checked to belong together.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{}: unusable private key: {e}", key.display()))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        format!(
            "{} does not belong to {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(ck)
}

fn roots(paths: &[PathBuf], system: &[CertificateDer<'static>]) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    // System roots that rustls cannot parse are skipped, as reqwest does.
    store.add_parsable_certificates(system.iter().cloned());
    for p in paths {
        for c in load_certs(p)? {
            store
                .add(c)
                .map_err(|e| format!("{}: not a usable CA certificate: {e}", p.display()))?;
        }
    }
    Ok(store)
}

/// Serves the current certificate of a reloading pair.
#[derive(Debug)]
struct ReloadingCert(Reloading<Arc<CertifiedKey>>);

impl ReloadingCert {
    fn new(cert: &Path, key: &Path) -> Result<Self, String> {
        Reloading::new(
            format!("TLS certificate {}", cert.display()),
            vec![cert.to_path_buf(), key.to_path_buf()],
            |p| certified_key(&p[0], &p[1]).map(Arc::new),
        )
        .map(ReloadingCert)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some((*self.0.get()).clone())
    }
}

impl ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some((*self.0.get()).clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

// Handshake signatures are checked the same way whichever CA file is current.
fn tls12(
    p: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(message, cert, dss, &p.signature_verification_algorithms)
}

fn tls13(
    p: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, &p.signature_verification_algorithms)
}

/// Verifies client certificates against the current CA file; lets clients without one
/// through the handshake (see the module comment).
#[derive(Debug)]
struct ReloadingClientVerifier {
    inner: Reloading<Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    // No hints: they would have to outlive a reload. Clients send their one certificate.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .get()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies servers against the current CA file and the system's roots.
#[derive(Debug)]
struct ReloadingServerVerifier {
    inner: Reloading<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ReloadingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.get().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The files of the node's TLS settings.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Serving certificate (chain) and key; also the client certificate towards peers.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// CA whose certificates clients must present (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// CAs peers' certificates are verified against, besides the system's roots.
    pub peer_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The HTTPS server's config (`None` without a certificate) and the sync client's
    /// (`None` without a peer CA: reqwest's defaults, the system's roots). Both serve the one
    /// reloading certificate.
    pub fn configs(
        &self,
    ) -> Result<
        (
            Option<Arc<rustls::ServerConfig>>,
            Option<rustls::ClientConfig>,
        ),
        String,
    > {
        let cert = match &self.cert {
            Some((cert, key)) => Some(Arc::new(ReloadingCert::new(cert, key)?)),
            None => None,
        };
        Ok((self.server_config(cert.clone())?, self.client_config(cert)?))
    }

    fn server_config(
        &self,
        cert: Option<Arc<ReloadingCert>>,
    ) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
        let Some(cert) = cert else {
            if self.client_ca.is_some() {
                return Err("--tls-client-ca-file needs --tls-cert-file and --tls-key-file".into());
            }
            return Ok(None);
        };
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let p = provider.clone();
                let inner = Reloading::new(
                    format!("client CA {}", ca.display()),
                    vec![ca.clone()],
                    move |paths| {
                        let roots = roots(paths, &[])?;
                        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), p.clone())
                            .allow_unauthenticated()
                            .build()
                            .map_err(|e| e.to_string())
                    },
                )?;
                builder.with_client_cert_verifier(Arc::new(ReloadingClientVerifier {
                    inner,
                    provider,
                }))
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(cert);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }

    fn client_config(
        &self,
        cert: Option<Arc<ReloadingCert>>,
    ) -> Result<Option<rustls::ClientConfig>, String> {
        let Some(peer_ca) = &self.peer_ca else {
            return Ok(None);
        };
        let provider = provider();
        let system = rustls_native_certs::load_native_certs().certs;
        let p = provider.clone();
        let inner = Reloading::new(
            format!("peer CA {}", peer_ca.display()),
            vec![peer_ca.clone()],
            move |paths| {
                WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots(paths, &system)?),
                    p.clone(),
                )
                .build()
                .map_err(|e| e.to_string())
            },
        )?;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ReloadingServerVerifier {
                inner,
                provider,
            }));
        let mut config = match cert {
            Some(cert) => builder.with_client_cert_resolver(cert),
            None => builder.with_no_client_auth(),
        };
        // reqwest speaks HTTP/1.1 here (its http2 feature is off).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(config))
    }
}
