//! TLS for the `sql` step: libpq's `sslmode` over rustls (ring).
//!
//! | sslmode | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` | if the server offers TLS | only with `ca_file`, as `verify-ca` |
//! | `require` | yes | only with `ca_file`, as `verify-ca` |
//! | `verify-ca` | yes | signed by a CA of `ca_file` |
//! | `verify-full` | yes | signed by a CA of `ca_file` and naming the host |
//!
//! As with libpq, `prefer` and `require` without a CA protect against eavesdropping only, not
//! against a server that pretends to be the database.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values, less `allow` (plain first, TLS if refused) which protects nothing
/// `prefer` does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

const NAMES: &[&str] = &["disable", "prefer", "require", "verify-ca", "verify-full"];

impl SslMode {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        Ok(match text.trim() {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                let hint = crate::util::suggest(other, NAMES)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "unknown sslmode `{other}`{hint}; one of {}",
                    NAMES.join(", ")
                ));
            }
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether the mode checks the certificate, and so needs a CA.
    pub(crate) fn needs_ca(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The roots of a PEM file.
fn roots(path: &str) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read `ca_file` {path}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("cannot use `ca_file` {path}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("cannot use `ca_file` {path}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "cannot use `ca_file` {path}: it holds no PEM certificate"
        ));
    }
    Ok(roots)
}

/// The TLS connector for a mode; the error is a failure's message.
pub(crate) fn connector(mode: SslMode, ca_file: Option<&str>) -> Result<MakeRustlsConnect, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let config = match (mode, ca_file) {
        (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, None) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider())))
            .with_no_client_auth(),
        (SslMode::VerifyFull, Some(path)) => builder
            .with_root_certificates(roots(path)?)
            .with_no_client_auth(),
        (_, Some(path)) => {
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots(path)?), provider())
                    .build()
                    .map_err(|e| format!("cannot use `ca_file` {path}: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(inner)))
                .with_no_client_auth()
        }
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(format!(
                "`sslmode: {}` needs `ca_file`, the CA that signed the server's certificate",
                mode.name()
            ));
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Accepts any certificate (the handshake's signatures are still checked): libpq's `prefer`
/// and `require` without a root certificate.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks the chain against the CA but not the name: libpq's `verify-ca`.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_libpqs() {
        for name in NAMES {
            assert_eq!(SslMode::parse(name).unwrap().name(), *name);
        }
        assert_eq!(
            SslMode::parse("verifyfull").unwrap_err(),
            "unknown sslmode `verifyfull` (did you mean `verify-full`?); one of disable, prefer, \
             require, verify-ca, verify-full"
        );
        assert!(SslMode::VerifyCa.needs_ca() && !SslMode::Require.needs_ca());
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing\n").unwrap();
        let path = empty.to_str().unwrap();
        assert_eq!(
            connector(SslMode::VerifyFull, Some(path)).err().unwrap(),
            format!("cannot use `ca_file` {path}: it holds no PEM certificate")
        );
        assert_eq!(
            connector(SslMode::VerifyCa, Some("/no/such.pem"))
                .err()
                .unwrap(),
            "cannot read `ca_file` /no/such.pem: No such file or directory (os error 2)"
        );
        assert!(connector(SslMode::Require, None).is_ok());
    }
}
