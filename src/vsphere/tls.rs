//! How the client trusts the server: verified against the system's roots (the default), pinned
//! to a SHA-256 certificate thumbprint, or (explicit opt-in) not verified at all. Unverified
//! means the handshake signature too: a server whose signature does not verify (an RSA-1024
//! certificate, as on ESXi 5.x/6.0 hosts) is accepted, and [`UnverifiedHandshake`] says so.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::error::{Error, ErrorKind};

/// The server-certificate policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Verify the chain and host name against the system's trusted roots.
    Verify,
    /// Accept exactly the certificate whose SHA-256 digest is this.
    Thumbprint([u8; 32]),
    /// Accept any certificate (`allow_unverified_ssl = true`).
    Insecure,
}

/// Makes aws-lc-rs the process's rustls crypto provider (the HTTP client's default verifier
/// needs one); harmless when already done.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Parses a SHA-256 thumbprint written as hex, with or without `:` separators.
pub fn parse_thumbprint(text: &str) -> Result<[u8; 32], String> {
    let hex_digits: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect();
    let bytes = hex::decode(&hex_digits)
        .map_err(|_| format!("{text:?} is not hexadecimal (expected 32 bytes like AB:CD:...)"))?;
    match bytes.len() {
        32 => Ok(bytes.try_into().expect("length checked")),
        20 => Err("this is a SHA-1 thumbprint; give the SHA-256 one (openssl x509 -noout -fingerprint -sha256)".to_string()),
        n => Err(format!("a SHA-256 thumbprint has 32 bytes, this has {n}")),
    }
}

/// Formats a digest as upper-case hex pairs joined by `:`, as ESXi and openssl show them.
pub fn format_thumbprint(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Why a handshake signature was accepted without verifying, under [`TlsPolicy::Insecure`]:
/// shared by a transport's verifier (which records it) and the transport (which reports it).
#[derive(Debug, Clone, Default)]
pub struct UnverifiedHandshake(Arc<Mutex<Option<String>>>);

impl UnverifiedHandshake {
    /// The reason the last unverified signature failed verification, if one did.
    pub fn reason(&self) -> Option<String> {
        self.0.lock().expect("lock").clone()
    }

    fn record(&self, why: &rustls::Error) {
        let mut slot = self.0.lock().expect("lock");
        if slot.is_none() {
            tracing::warn!(error = %why, "TLS handshake signature not verified (allow_unverified_ssl)");
        }
        *slot = Some(why.to_string());
    }
}

/// A rustls client configuration for a pinned or unverified policy; `None` for `Verify`, which
/// uses the HTTP client's default (platform) verifier. Under `Insecure`, handshake signatures
/// that fail verification are accepted and recorded in `unverified`.
pub fn client_config(
    policy: &TlsPolicy,
    unverified: &UnverifiedHandshake,
) -> Option<rustls::ClientConfig> {
    let verifier: Arc<dyn ServerCertVerifier> = match policy {
        TlsPolicy::Verify => return None,
        TlsPolicy::Thumbprint(pin) => Arc::new(PinnedVerifier::new(Some(*pin), None)),
        TlsPolicy::Insecure => Arc::new(PinnedVerifier::new(None, Some(unverified.clone()))),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Some(config)
}

/// Turns a TLS verification failure message from the HTTP stack into a typed error.
pub fn tls_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Tls, message)
}

/// Accepts the one certificate with the pinned digest, and checks that the server holds the
/// certificate's key (handshake signatures are verified, as strictly as by default). With no
/// pin (`allow_unverified_ssl`) it accepts any certificate, and a handshake signature that
/// does not verify is accepted too and recorded: without a trusted certificate the signature
/// proves nothing, and the user chose not to verify.
#[derive(Debug)]
struct PinnedVerifier {
    pin: Option<[u8; 32]>,
    /// Where an accepted unverified signature is recorded; set only without a pin.
    unverified: Option<UnverifiedHandshake>,
    provider: CryptoProvider,
}

impl PinnedVerifier {
    fn new(pin: Option<[u8; 32]>, unverified: Option<UnverifiedHandshake>) -> Self {
        Self {
            pin,
            unverified: if pin.is_none() { unverified } else { None },
            provider: rustls::crypto::aws_lc_rs::default_provider(),
        }
    }

    /// A handshake signature check's outcome under this verifier's policy.
    fn signature(
        &self,
        checked: Result<HandshakeSignatureValid, rustls::Error>,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match (checked, &self.unverified) {
            (Err(why), Some(unverified)) => {
                unverified.record(&why);
                Ok(HandshakeSignatureValid::assertion())
            }
            (checked, _) => checked,
        }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if digest == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate thumbprint mismatch: the server presented SHA-256 {}, expected {}",
                format_thumbprint(&digest),
                format_thumbprint(&pin)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        ))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_thumbprints_with_or_without_colons() {
        let hex = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_thumbprint(&hex).unwrap(), [0xAB; 32]);
        assert_eq!(parse_thumbprint(&colons).unwrap(), [0xAB; 32]);
        assert!(parse_thumbprint(&"AB".repeat(20))
            .unwrap_err()
            .contains("SHA-1"));
        assert!(parse_thumbprint("zz").is_err());
        assert_eq!(format_thumbprint(&[0xAB, 0x01]), "AB:01");
    }

    fn bad_signature() -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadSignature,
        ))
    }

    #[test]
    fn only_unverified_mode_accepts_a_bad_handshake_signature_and_says_so() {
        let unverified = UnverifiedHandshake::default();
        let insecure = PinnedVerifier::new(None, Some(unverified.clone()));
        assert!(insecure
            .signature(Ok(HandshakeSignatureValid::assertion()))
            .is_ok());
        assert_eq!(
            unverified.reason(),
            None,
            "a good signature is not reported"
        );
        assert!(insecure.signature(bad_signature()).is_ok());
        assert!(
            unverified.reason().unwrap().contains("BadSignature"),
            "{:?}",
            unverified.reason()
        );

        // A pinned certificate's signature stays checked, whatever is passed in.
        let pinned = PinnedVerifier::new(Some([0xAB; 32]), Some(UnverifiedHandshake::default()));
        assert!(pinned.signature(bad_signature()).is_err());
    }

    #[test]
    fn verified_mode_uses_the_default_verifier() {
        let unverified = UnverifiedHandshake::default();
        assert!(client_config(&TlsPolicy::Verify, &unverified).is_none());
        assert!(client_config(&TlsPolicy::Insecure, &unverified).is_some());
    }
}
