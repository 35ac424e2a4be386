//! TLS to the server, as the connection string asks, with libpq's words:
//! `sslmode=disable` (never), `prefer` (the default: when the server offers
//! it), `require` (always; the server's certificate is not checked, so
//! this stops eavesdroppers, not an impostor), `verify-ca` (always, the
//! certificate must chain to a trusted root) and `verify-full` (that, and
//! it must name the host connected to). Trusted roots are the file
//! `sslrootcert=PATH` names (PEM), else the Mozilla roots of
//! `webpki-roots`. rustls with the ring provider, as the rest of
//! Thinklio's TLS.
//!
//! `tokio-postgres` reads only `disable`, `prefer` and `require`, and no
//! `sslrootcert`: this module takes those words out of the string first,
//! and hands it the mode that makes it negotiate TLS.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::OpenError;

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Not at all (`disable`, `prefer`, `require`).
    Nothing,
    /// It chains to a trusted root (`verify-ca`).
    Chain,
    /// It chains to a trusted root and names the host (`verify-full`).
    Full,
}

/// A connection string split into what `tokio-postgres` reads and what
/// this module does.
pub(crate) struct Parsed {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: MakeRustlsConnect,
}

/// Reads `url` (a `postgres://` URL or key-value pairs).
pub(crate) fn parse(url: &str) -> Result<Parsed, OpenError> {
    let (rest, mode, root) = take_tls_words(url);
    let verify = match mode.as_deref() {
        None | Some("disable" | "allow" | "prefer" | "require") => Verify::Nothing,
        Some("verify-ca") => Verify::Chain,
        Some("verify-full") => Verify::Full,
        Some(other) => {
            return Err(OpenError::Tls(format!(
                "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
            )));
        }
    };
    let mut config: tokio_postgres::Config = rest.parse().map_err(OpenError::Config)?;
    config.ssl_mode(match mode.as_deref() {
        Some("disable") => tokio_postgres::config::SslMode::Disable,
        None | Some("allow" | "prefer") => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    let tls = connector(verify, root.as_deref())?;
    Ok(Parsed { config, tls })
}

/// The connection string without `sslmode` and `sslrootcert`, and their
/// values.
fn take_tls_words(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    if let Some((base, query)) = url.split_once('?')
        && url.contains("://")
    {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| match pair.split_once('=') {
                Some(("sslmode", v)) => {
                    mode = Some(v.to_owned());
                    false
                }
                Some(("sslrootcert", v)) => {
                    root = Some(percent_decode(v));
                    false
                }
                _ => !pair.is_empty(),
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, mode, root);
    }
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|pair| match pair.split_once('=') {
            Some(("sslmode", v)) => {
                mode = Some(v.trim_matches('\'').to_owned());
                false
            }
            Some(("sslrootcert", v)) => {
                root = Some(v.trim_matches('\'').to_owned());
                false
            }
            _ => true,
        })
        .collect();
    (kept.join(" "), mode, root)
}

/// `%2F` and the like in a URL's query value.
fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn connector(verify: Verify, root: Option<&str>) -> Result<MakeRustlsConnect, OpenError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| OpenError::Tls(e.to_string()))?;
    let config = match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider())))
            .with_no_client_auth(),
        Verify::Chain | Verify::Full => {
            let mut roots = RootCertStore::empty();
            match root {
                Some(path) => {
                    let certs = CertificateDer::pem_file_iter(path)
                        .map_err(|e| OpenError::Tls(format!("sslrootcert {path}: {e}")))?;
                    for cert in certs {
                        let cert =
                            cert.map_err(|e| OpenError::Tls(format!("sslrootcert {path}: {e}")))?;
                        roots
                            .add(cert)
                            .map_err(|e| OpenError::Tls(format!("sslrootcert {path}: {e}")))?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| OpenError::Tls(e.to_string()))?;
            let verifier: Arc<dyn ServerCertVerifier> = match verify {
                Verify::Chain => Arc::new(ChainOnly(webpki)),
                _ => webpki,
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `require`: encrypts, takes any certificate (libpq's meaning), but still
/// checks that the handshake is signed by the key it presented.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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

/// `verify-ca`: the chain must be trusted; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
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
    use super::take_tls_words;

    #[test]
    fn tls_words_are_taken_out_of_both_forms() {
        let (rest, mode, root) = take_tls_words(
            "postgres://u:p@db:5432/x?sslmode=verify-full&application_name=a&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(rest, "postgres://u:p@db:5432/x?application_name=a");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, mode, root) =
            take_tls_words("host=db user=u sslmode=require sslrootcert=/ca.pem");
        assert_eq!(rest, "host=db user=u");
        assert_eq!(
            (mode.as_deref(), root.as_deref()),
            (Some("require"), Some("/ca.pem"))
        );
        let (rest, mode, _) = take_tls_words("postgres://db/x");
        assert_eq!((rest.as_str(), mode), ("postgres://db/x", None));
    }
}
