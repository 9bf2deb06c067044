//! Opportunistic STARTTLS for the SMTP client (RFC 3207; Postfix's security level
//! `may`): when a server offers STARTTLS the session is encrypted, without
//! authenticating the server's certificate (MX hosts are found through unauthenticated
//! DNS, so a name check would prove nothing; DANE/MTA-STS are not implemented).
//!
//! The handshake is driven to completion at once, under the command timeout. A server
//! that refuses STARTTLS (not 220) is spoken to in plaintext; a handshake that fails
//! leaves a dead connection, and the caller reconnects in plaintext to the same
//! address (what Postfix does at level `may`). Bytes the server sent after its 220
//! and before the handshake (a STARTTLS response injection) make the session fail.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use std::io;
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;

/// The client TLS settings shared by every session of a worker; an error means rustls
/// offers no safe protocol version with this crypto provider (STARTTLS is then off).
pub fn client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AnyCertificate {
        provider: provider.clone(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The system's trust anchors (Debian's bundle).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Client settings for `remote.tls = "verify"`: the chain must lead to a system root
/// or a certificate of `ca_file`, and the certificate must name the server (the
/// route's host, or the MX host name).
pub fn verifying_config(ca_file: Option<&std::path::Path>) -> Result<Arc<ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let mut files: Vec<&std::path::Path> = Vec::new();
    if std::path::Path::new(SYSTEM_ROOTS).is_file() {
        files.push(std::path::Path::new(SYSTEM_ROOTS));
    }
    files.extend(ca_file);
    for f in files {
        let certs =
            CertificateDer::pem_file_iter(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for c in certs {
            let c = c.map_err(|e| format!("{}: {e}", f.display()))?;
            // A certificate rustls cannot use as an anchor is skipped, as OpenSSL does.
            let _ = roots.add(c);
        }
    }
    if roots.is_empty() {
        return Err("no trusted certificates (system roots or remote.ca_file)".to_string());
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("TLS verifier: {e}"))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Runs the TLS handshake on `tcp` for server `name` (a host name or an IP).
pub fn handshake(
    config: &Arc<ClientConfig>,
    name: &str,
    mut tcp: TcpStream,
) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let server_name = match name.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
    };
    let mut conn = ClientConnection::new(config.clone(), server_name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(StreamOwned::new(conn, tcp))
}

/// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384`, for the log (Postfix's and the
/// smtpd's wording; rustls's TLS13_ prefix is the RFC 8446 TLS_).
pub fn describe(conn: &ClientConnection) -> String {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    };
    let suite = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .unwrap_or("unknown");
    let suite = match suite.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => suite.to_string(),
    };
    format!("{version} with cipher {suite}")
}

/// Accepts any certificate, but still checks the handshake signatures against it, so
/// the session is at least bound to the key the server presented.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
        let algs = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
