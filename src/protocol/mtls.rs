//! go-plugin's AutoMTLS: an ephemeral self-signed server certificate for this process, and a
//! TLS server that requires the client to present exactly the certificate Terraform announced
//! in `PLUGIN_CLIENT_CERT` (go-plugin's client certificates are ECDSA P-521 self-signed CA
//! certificates, which webpki refuses as end-entity certificates, so the client certificate is
//! pinned byte for byte and its handshake signature verified with aws-lc-rs).

use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Errors setting up AutoMTLS.
#[derive(Debug, thiserror::Error)]
pub enum MtlsError {
    /// `PLUGIN_CLIENT_CERT` holds no PEM certificate.
    #[error("PLUGIN_CLIENT_CERT does not hold a PEM certificate: {0}")]
    ClientCert(String),
    /// The server certificate could not be made.
    #[error("cannot generate the plugin's TLS certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("cannot configure TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server side of AutoMTLS.
pub struct ServerTls {
    /// The rustls configuration to accept connections with.
    pub config: Arc<rustls::ServerConfig>,
    /// The server certificate, DER, for the handshake line.
    pub certificate: CertificateDer<'static>,
}

impl ServerTls {
    /// The server certificate as the handshake line carries it: base64 of the DER, no padding.
    pub fn handshake_field(&self) -> String {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.certificate.as_ref())
    }
}

/// Builds the TLS server for a client that announced `client_cert_pem`.
pub fn server_tls(client_cert_pem: &str) -> Result<ServerTls, MtlsError> {
    let client_cert = CertificateDer::from_pem_slice(client_cert_pem.as_bytes())
        .map_err(|e| MtlsError::ClientCert(e.to_string()))?
        .into_owned();
    let (certificate, key) = generate_server_certificate()?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(PinnedClientCert {
        expected: client_cert,
        provider: rustls::crypto::aws_lc_rs::default_provider(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![certificate.clone()], key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        certificate,
    })
}

/// A self-signed ECDSA P-256 certificate for `localhost`, marked as a CA so Go's verifier
/// accepts it as its own root (go-plugin's client trusts exactly this certificate).
fn generate_server_certificate(
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), MtlsError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "ceso");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    mark_as_plugin_ca(&mut params);
    let cert = params.self_signed(&key)?;
    let der = cert.der().clone();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((der, key_der))
}

/// Makes a certificate a self-signed CA for server and client auth, as go-plugin's are (each
/// side trusts exactly the other's certificate as its own root).
fn mark_as_plugin_ca(params: &mut rcgen::CertificateParams) {
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
        rcgen::KeyUsagePurpose::KeyCertSign,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
}

/// Accepts exactly one client certificate and verifies the client's handshake signature.
#[derive(Debug)]
struct PinnedClientCert {
    expected: CertificateDer<'static>,
    provider: CryptoProvider,
}

impl ClientCertVerifier for PinnedClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.expected.as_ref() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "client certificate is not the one announced in PLUGIN_CLIENT_CERT".to_string(),
            ))
        }
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Makes a go-plugin style client certificate (ECDSA P-521, self-signed CA) and its key as
/// PEM, as Terraform would: for tests and the benchmark's handshake timing.
pub fn generate_client_certificate() -> Result<(String, String), MtlsError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512)?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    mark_as_plugin_ca(&mut params);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_server_for_a_p521_client() {
        let (pem, _) = generate_client_certificate().unwrap();
        let tls = server_tls(&pem).unwrap();
        assert!(!tls.handshake_field().contains('='));
        assert_eq!(tls.config.alpn_protocols, vec![b"h2".to_vec()]);
    }

    #[test]
    fn rejects_garbage_client_cert() {
        assert!(matches!(server_tls("nope"), Err(MtlsError::ClientCert(_))));
    }
}
