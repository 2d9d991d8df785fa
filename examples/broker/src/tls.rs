//! TLS listeners (`--tls`, `--wss`): rustls through tokio-rustls, optionally behind a PROXY
//! protocol header (the header comes first on the wire, then the TLS handshake, as HAProxy's
//! `send-proxy-v2` in front of a TLS passthrough writes it).
//!
//! Handshakes run in their own tasks, so a slow or silent peer never holds up the next one;
//! a failed handshake is logged at `info` with the peer and rustls' reason, and closed.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use realip_core::LogThrottle;
use realip_listener::{ProxiedAddr, ProxiedStream};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ServerConnection, WebPkiClientVerifier};
use tokio_rustls::rustls::{RootCertStore, ServerConfig, crypto};

use crate::config::TlsFiles;
use crate::realip::MqttListener;

/// Time a peer gets to finish the TLS handshake once its connection (and PROXY header, if
/// required) is accepted.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The stream of an accepted TLS connection.
pub(crate) type TlsIo = tokio_rustls::server::TlsStream<ProxiedStream<TcpStream>>;

/// The rustls server configuration from the PEM files: the certificate chain and key, and,
/// with a client CA, mandatory client certificates verified against it.
pub(crate) fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, String> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "--tls-key {}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
            files.key.display()
        )
    })?;
    let provider = Arc::new(crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match &files.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in {}",
            path.display()
        ));
    }
    Ok(certs)
}

/// What the TLS handshake established, as the admin API shows it under `tls`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsFacts {
    /// `TLSv1.3` or `TLSv1.2`.
    pub(crate) version: Option<String>,
    /// The IANA cipher suite name, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub(crate) cipher: Option<String>,
    /// The server name the client asked for (SNI).
    pub(crate) sni: Option<String>,
    /// The common name of the verified client certificate.
    pub(crate) client_cn: Option<String>,
}

impl TlsFacts {
    fn of(conn: &ServerConnection) -> Self {
        Self {
            version: conn.protocol_version().map(|v| match v.as_str() {
                Some(name) => name.replace('_', "."),
                None => format!("{v:?}"),
            }),
            cipher: conn.negotiated_cipher_suite().map(|s| {
                let suite = s.suite();
                suite
                    .as_str()
                    .map_or_else(|| format!("{suite:?}"), str::to_owned)
            }),
            sni: conn.server_name().map(str::to_owned),
            client_cn: conn
                .peer_certificates()
                .and_then(<[_]>::first)
                .and_then(|cert| common_name(cert)),
        }
    }

    /// `{"version": ..., "cipher": ..., "sni": ..., "client_cn": ...}` (absent facts are `null`).
    pub(crate) fn json(&self) -> Value {
        json!({
            "version": self.version,
            "cipher": self.cipher,
            "sni": self.sni,
            "client_cn": self.client_cn,
        })
    }
}

/// The subject's first common name of a DER certificate.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// A TLS connection ready for MQTT: its stream, addresses and handshake facts.
pub(crate) type Accepted = (TlsIo, TlsAddr);

/// The addresses of a TLS connection and what its handshake established.
#[derive(Clone, Debug)]
pub(crate) struct TlsAddr {
    pub(crate) addr: ProxiedAddr,
    /// `None` only for the listener's own address.
    pub(crate) tls: Option<TlsFacts>,
}

/// A listener that hands out connections whose TLS handshake is complete.
#[derive(Debug)]
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<Accepted>,
    local: ProxiedAddr,
    acceptor: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl TlsListener {
    /// Accepts on `listener` (which applies the PROXY protocol rules) and runs every TLS
    /// handshake in its own task.
    pub(crate) fn new(mut listener: MqttListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let local = Listener::local_addr(&listener)?;
        let (tx, ready) = mpsc::channel(64);
        let tls = TlsAcceptor::from(config);
        // Any peer can fail a handshake as often as it connects: at most 10 `info` lines per
        // 5 seconds (`printk_ratelimit`'s limit; the others at `debug`, counted in the next).
        let failures = Arc::new(LogThrottle::default());
        let acceptor = tokio::spawn(async move {
            loop {
                let (stream, addr) = listener.accept().await;
                if tx.is_closed() {
                    return;
                }
                let (tls, tx, failures) = (tls.clone(), tx.clone(), Arc::clone(&failures));
                tokio::spawn(async move {
                    let peer = addr.socket_peer().clone();
                    let failed = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            let facts = TlsFacts::of(stream.get_ref().1);
                            let addr = TlsAddr {
                                addr,
                                tls: Some(facts),
                            };
                            let _ = tx.send((stream, addr)).await;
                            return;
                        }
                        Ok(Err(e)) => format!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => format!(
                            "TLS handshake with {peer} did not finish within {HANDSHAKE_TIMEOUT:?}"
                        ),
                    };
                    match failures.admit(std::time::Instant::now()) {
                        Some(suppressed) => tracing::info!(peer = %peer, suppressed, "{failed}"),
                        None => tracing::debug!(peer = %peer, "{failed}"),
                    }
                });
            }
        });
        Ok(Self {
            ready,
            local,
            acceptor,
        })
    }

    /// The next connection with a completed handshake. Cancel-safe.
    pub(crate) async fn accept(&mut self) -> Accepted {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The acceptor task never ends while `self` holds the receiver.
            None => std::future::pending().await,
        }
    }
}

impl Listener for TlsListener {
    type Io = TlsIo;
    type Addr = TlsAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        TlsListener::accept(self).await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(TlsAddr {
            addr: self.local.clone(),
            tls: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_of_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["client.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device-42");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("device-42"));
        assert_eq!(common_name(&CertificateDer::from(vec![1, 2, 3])), None);
    }
}
