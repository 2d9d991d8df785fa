//! A client-certificate identity from the SSL TLV that fails closed: the common name (and
//! the certificate, when the proxy sends it) only for a client that presented a certificate
//! the proxy verified.
//!
//! The SSL TLV alone does not say "verified": HAProxy writes `verify = 0` (its initial value)
//! for a TLS client that presented no certificate at all, and the spec's
//! `PP2_CLIENT_CERT_CONN` / `PP2_CLIENT_CERT_SESS` bits are what tell the two apart
//! (proxy-protocol.txt, section 2.2.6). Reading [`SslInfo::client_cn`] and the raw
//! [`SslInfo::verify`] field separately is how a client without a certificate ends up
//! authenticated; [`SslInfo::verified_client_cn`] checks every condition and names the one
//! that failed ([`SslInfo::verified`] checks the same conditions as a `bool`).
//!
//! # Example
//!
//! ```
//! use realip_listener::{SslInfo, UnverifiedIdentity};
//!
//! // What HAProxy's `send-proxy-v2-ssl-cn` writes for a verified client certificate...
//! let verified = SslInfo::new(SslInfo::CLIENT_SSL | SslInfo::CLIENT_CERT_CONN | SslInfo::CLIENT_CERT_SESS, 0)
//!     .with_version("TLSv1.3")
//!     .with_client_cn("device-42");
//! assert_eq!(verified.verified_client_cn(), Ok("device-42"));
//!
//! // ...and for a TLS client without one: `verify` is 0 too, but nobody was verified.
//! let anonymous = SslInfo::new(SslInfo::CLIENT_SSL, 0).with_version("TLSv1.3");
//! assert_eq!(anonymous.verify(), 0);
//! assert!(!anonymous.verified());
//! assert_eq!(anonymous.verified_client_cn(), Err(UnverifiedIdentity::NoClientCertificate));
//! ```

use crate::header::tlv::{SslInfo, Tlvs, tlv_type};

/// Why a connection has no verified client-certificate identity
/// ([`SslInfo::verified_client_cn`], [`Tlvs::verified_client_cn`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum UnverifiedIdentity {
    /// The header carried no SSL TLV (the proxy was not configured to send one, with
    /// HAProxy's `send-proxy-v2-ssl` or `send-proxy-v2-ssl-cn`), or more than one.
    #[error("the PROXY header carries no single SSL TLV")]
    NoSslTlv,
    /// The client did not connect to the proxy over TLS (`PP2_CLIENT_SSL` unset).
    #[error("the client did not connect over TLS")]
    NotTls,
    /// The client presented no certificate, on this connection or earlier in its TLS
    /// session (neither `PP2_CLIENT_CERT_CONN` nor `PP2_CLIENT_CERT_SESS`).
    #[error("the client presented no certificate")]
    NoClientCertificate,
    /// The client presented a certificate that the proxy did not verify (`verify` is the
    /// proxy's non-zero verify result, OpenSSL's `X509_V_ERR_*` for HAProxy).
    #[error("the client certificate was not verified (verify result {verify})")]
    NotVerified {
        /// The verify field of the SSL TLV.
        verify: u32,
    },
    /// The proxy sent no common-name sub-TLV (HAProxy sends it with `send-proxy-v2-ssl-cn`,
    /// and only for a certificate whose subject has a CN).
    #[error("the proxy sent no client certificate common name")]
    NoCommonName,
    /// The common-name sub-TLV is empty, not UTF-8, or present more than once.
    #[error("the client certificate common name is empty, not UTF-8 or repeated")]
    InvalidCommonName,
    /// The proxy sent no client-certificate sub-TLV (`PP2_SUBTYPE_SSL_CLIENT_CERT`, `0x28`,
    /// added to the spec after HAProxy 2.6) or sent it more than once.
    #[error("the proxy sent no single client certificate")]
    NoCertificate,
}

impl SslInfo {
    /// The client certificate's common name, only when the client connected over TLS,
    /// presented a certificate on this connection or its TLS session, and the proxy verified
    /// it (`verify == 0`); otherwise the first condition that failed.
    ///
    /// A header from a proxy that is not trusted never reaches this far: trust in the peer
    /// is the listener's [`Policy`](crate::Policy); this checks what a trusted proxy said.
    pub fn verified_client_cn(&self) -> Result<&str, UnverifiedIdentity> {
        self.verified_certificate()?;
        let cn = self.single_sub_tlv(tlv_type::SSL_CN, UnverifiedIdentity::NoCommonName)?;
        match std::str::from_utf8(cn) {
            Ok(cn) if !cn.is_empty() => Ok(cn),
            _ => Err(UnverifiedIdentity::InvalidCommonName),
        }
    }

    /// The client certificate, DER encoded (`PP2_SUBTYPE_SSL_CLIENT_CERT`), under the same
    /// conditions as [`verified_client_cn`](Self::verified_client_cn).
    pub fn verified_client_cert(&self) -> Result<&[u8], UnverifiedIdentity> {
        self.verified_certificate()?;
        self.single_sub_tlv(tlv_type::SSL_CLIENT_CERT, UnverifiedIdentity::NoCertificate)
            .and_then(|der| {
                (!der.is_empty())
                    .then_some(der)
                    .ok_or(UnverifiedIdentity::NoCertificate)
            })
    }

    /// Whether a client certificate was presented and verified, or why not.
    fn verified_certificate(&self) -> Result<(), UnverifiedIdentity> {
        if !self.is_ssl() {
            Err(UnverifiedIdentity::NotTls)
        } else if !self.has_client_cert() {
            Err(UnverifiedIdentity::NoClientCertificate)
        } else if self.verify() != 0 {
            Err(UnverifiedIdentity::NotVerified {
                verify: self.verify(),
            })
        } else {
            Ok(())
        }
    }

    /// The value of the only sub-TLV of type `kind`; `missing` when there is none, and
    /// `InvalidCommonName`/`missing` (for the CN / anything else) when there are several.
    fn single_sub_tlv(
        &self,
        kind: u8,
        missing: UnverifiedIdentity,
    ) -> Result<&[u8], UnverifiedIdentity> {
        let mut found = self.sub_tlvs().iter().filter(|t| t.kind() == kind);
        let first = found.next().ok_or(missing)?;
        if found.next().is_some() {
            return Err(if kind == tlv_type::SSL_CN {
                UnverifiedIdentity::InvalidCommonName
            } else {
                missing
            });
        }
        Ok(first.value())
    }
}

impl Tlvs {
    /// The verified client certificate's common name from the header's SSL TLV
    /// ([`SslInfo::verified_client_cn`]); [`UnverifiedIdentity::NoSslTlv`] when the header
    /// has no SSL TLV or several.
    pub fn verified_client_cn(&self) -> Result<&str, UnverifiedIdentity> {
        self.single_ssl()?.verified_client_cn()
    }

    /// The verified client certificate, DER encoded ([`SslInfo::verified_client_cert`]).
    pub fn verified_client_cert(&self) -> Result<&[u8], UnverifiedIdentity> {
        self.single_ssl()?.verified_client_cert()
    }

    fn single_ssl(&self) -> Result<&SslInfo, UnverifiedIdentity> {
        let count = self
            .raw()
            .iter()
            .filter(|t| t.kind() == tlv_type::SSL)
            .count();
        match (count, self.ssl()) {
            (1, Some(ssl)) => Ok(ssl),
            _ => Err(UnverifiedIdentity::NoSslTlv),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::parse::parse_header;
    use crate::header::write::ProxyHeader;

    const CONN: u8 = SslInfo::CLIENT_CERT_CONN;
    const SESS: u8 = SslInfo::CLIENT_CERT_SESS;
    const SSL: u8 = SslInfo::CLIENT_SSL;

    /// The SSL TLV as HAProxy's `make_proxy_line_v2` writes it with `send-proxy-v2-ssl-cn`:
    /// `client` and `verify` start at zero, `verify` is only filled in when a certificate
    /// was used in the session, and the CN is appended whenever the peer has one.
    fn haproxy(client: u8, verify: u32, cn: Option<&str>) -> Tlvs {
        let mut ssl = SslInfo::new(client, verify).with_version("TLSv1.3");
        if let Some(cn) = cn {
            ssl = ssl.with_client_cn(cn);
        }
        let bytes = ProxyHeader::v2(
            "192.0.2.7:51000".parse().unwrap(),
            "10.0.0.1:8883".parse().unwrap(),
        )
        .with_ssl(&ssl)
        .to_bytes();
        let (info, _) = parse_header(&bytes, 4096).unwrap().unwrap();
        info.tlvs().clone()
    }

    #[test]
    fn a_verified_certificate_on_the_connection_or_session_gives_its_cn() {
        for client in [SSL | CONN | SESS, SSL | SESS, SSL | CONN] {
            assert_eq!(
                haproxy(client, 0, Some("device-42")).verified_client_cn(),
                Ok("device-42"),
                "client flags {client:#04x}"
            );
        }
    }

    #[test]
    fn verify_zero_without_a_certificate_is_no_identity() {
        // HAProxy: a TLS client without a certificate gets client = SSL, verify = 0.
        let tlvs = haproxy(SSL, 0, None);
        assert_eq!(tlvs.ssl().unwrap().verify(), 0);
        assert!(!tlvs.ssl().unwrap().verified());
        assert_eq!(
            tlvs.verified_client_cn(),
            Err(UnverifiedIdentity::NoClientCertificate)
        );
        // Even if a CN sub-TLV is there, without the certificate bits it is not an identity.
        assert_eq!(
            haproxy(SSL, 0, Some("admin")).verified_client_cn(),
            Err(UnverifiedIdentity::NoClientCertificate)
        );
    }

    #[test]
    fn an_unverified_certificate_is_no_identity() {
        // X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT (18), as with `verify optional` plus
        // `ca-ignore-err all`.
        assert_eq!(
            haproxy(SSL | CONN | SESS, 18, Some("device-42")).verified_client_cn(),
            Err(UnverifiedIdentity::NotVerified { verify: 18 })
        );
    }

    #[test]
    fn not_tls_no_cn_and_bad_cn_are_each_named() {
        assert_eq!(
            haproxy(0, 0, None).verified_client_cn(),
            Err(UnverifiedIdentity::NotTls)
        );
        assert_eq!(
            haproxy(CONN | SESS, 0, Some("x")).verified_client_cn(),
            Err(UnverifiedIdentity::NotTls)
        );
        assert_eq!(
            haproxy(SSL | CONN | SESS, 0, None).verified_client_cn(),
            Err(UnverifiedIdentity::NoCommonName)
        );
        assert_eq!(
            haproxy(SSL | CONN | SESS, 0, Some("")).verified_client_cn(),
            Err(UnverifiedIdentity::InvalidCommonName)
        );
        let twice = SslInfo::new(SSL | CONN | SESS, 0)
            .with_client_cn("device-42")
            .with_client_cn("admin");
        assert_eq!(
            twice.verified_client_cn(),
            Err(UnverifiedIdentity::InvalidCommonName)
        );
        let not_utf8 = SslInfo::new(SSL | CONN | SESS, 0).with_sub_tlv(tlv_type::SSL_CN, [0xff]);
        assert_eq!(
            not_utf8.verified_client_cn(),
            Err(UnverifiedIdentity::InvalidCommonName)
        );
    }

    #[test]
    fn no_ssl_tlv_or_two_is_no_identity() {
        let plain = ProxyHeader::v2(
            "192.0.2.7:51000".parse().unwrap(),
            "10.0.0.1:8883".parse().unwrap(),
        )
        .with_authority("broker.example")
        .to_bytes();
        let (info, _) = parse_header(&plain, 4096).unwrap().unwrap();
        assert_eq!(
            info.tlvs().verified_client_cn(),
            Err(UnverifiedIdentity::NoSslTlv)
        );

        let good = SslInfo::new(SSL | CONN | SESS, 0).with_client_cn("device-42");
        let bytes = ProxyHeader::v2(
            "192.0.2.7:51000".parse().unwrap(),
            "10.0.0.1:8883".parse().unwrap(),
        )
        .with_ssl(&good)
        .with_ssl(&good)
        .to_bytes();
        let (info, _) = parse_header(&bytes, 4096).unwrap().unwrap();
        assert_eq!(
            info.tlvs().verified_client_cn(),
            Err(UnverifiedIdentity::NoSslTlv)
        );
    }

    #[test]
    fn the_certificate_is_given_under_the_same_conditions() {
        let der = [0x30, 0x82, 0x01, 0x0a];
        let sent = SslInfo::new(SSL | CONN | SESS, 0)
            .with_client_cn("device-42")
            .with_sub_tlv(tlv_type::SSL_CLIENT_CERT, der);
        assert_eq!(sent.verified_client_cert(), Ok(&der[..]));
        let unverified =
            SslInfo::new(SSL | CONN | SESS, 20).with_sub_tlv(tlv_type::SSL_CLIENT_CERT, der);
        assert_eq!(
            unverified.verified_client_cert(),
            Err(UnverifiedIdentity::NotVerified { verify: 20 })
        );
        assert_eq!(
            haproxy(SSL | CONN | SESS, 0, Some("device-42")).verified_client_cert(),
            Err(UnverifiedIdentity::NoCertificate)
        );
    }
}
