//! The TLVs of a v2 header: type numbers, the raw list with typed accessors, the SSL TLV,
//! and the walk that validates them (bounds, lengths, CRC32C) when a header is parsed.
//!
//! # Example
//!
//! ```
//! use realip_listener::{ProxyHeader, SslInfo, parse_header, tlv_type};
//!
//! let ssl = SslInfo::new(SslInfo::CLIENT_SSL, 0).with_version("TLSv1.3");
//! let bytes = ProxyHeader::v2("192.0.2.7:51000".parse().unwrap(), "10.0.0.1:443".parse().unwrap())
//!     .with_ssl(&ssl)
//!     .with_aws_vpce_id("vpce-1")
//!     .with_crc32c()
//!     .to_bytes();
//! let (info, _) = parse_header(&bytes, 4096).unwrap().unwrap();
//! let tlvs = info.tlvs();
//! assert_eq!(tlvs.ssl().unwrap().version(), Some("TLSv1.3"));
//! assert_eq!(tlvs.aws_vpce_id(), Some("vpce-1"));
//! assert!(tlvs.get(tlv_type::CRC32C).is_some());
//! ```

use crate::error::HeaderError;

/// CRC32C (Castagnoli), the checksum of the `PP2_TYPE_CRC32C` TLV.
pub(crate) const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// PROXY protocol TLV type numbers (the `PP2_TYPE_*` constants of the specification).
pub mod tlv_type {
    /// Application-Layer Protocol Negotiation (`PP2_TYPE_ALPN`).
    pub const ALPN: u8 = 0x01;
    /// Host name sent by the client (SNI) (`PP2_TYPE_AUTHORITY`).
    pub const AUTHORITY: u8 = 0x02;
    /// CRC32C of the whole header (`PP2_TYPE_CRC32C`).
    pub const CRC32C: u8 = 0x03;
    /// Padding (`PP2_TYPE_NOOP`).
    pub const NOOP: u8 = 0x04;
    /// An opaque connection identifier, at most 128 bytes (`PP2_TYPE_UNIQUE_ID`).
    pub const UNIQUE_ID: u8 = 0x05;
    /// TLS information (`PP2_TYPE_SSL`), with sub-TLVs.
    pub const SSL: u8 = 0x20;
    /// TLS version sub-TLV (`PP2_SUBTYPE_SSL_VERSION`).
    pub const SSL_VERSION: u8 = 0x21;
    /// Client certificate common name sub-TLV (`PP2_SUBTYPE_SSL_CN`).
    pub const SSL_CN: u8 = 0x22;
    /// Cipher sub-TLV (`PP2_SUBTYPE_SSL_CIPHER`).
    pub const SSL_CIPHER: u8 = 0x23;
    /// Certificate signature algorithm sub-TLV (`PP2_SUBTYPE_SSL_SIG_ALG`).
    pub const SSL_SIG_ALG: u8 = 0x24;
    /// Certificate key algorithm sub-TLV (`PP2_SUBTYPE_SSL_KEY_ALG`).
    pub const SSL_KEY_ALG: u8 = 0x25;
    /// TLS key exchange group sub-TLV, such as `secp256r1` (`PP2_SUBTYPE_SSL_GROUP`).
    pub const SSL_GROUP: u8 = 0x26;
    /// TLS signature scheme sub-TLV, such as `rsa_pss_rsae_sha256`
    /// (`PP2_SUBTYPE_SSL_SIG_SCHEME`).
    pub const SSL_SIG_SCHEME: u8 = 0x27;
    /// The client certificate, DER encoded (`PP2_SUBTYPE_SSL_CLIENT_CERT`).
    pub const SSL_CLIENT_CERT: u8 = 0x28;
    /// Network namespace name (`PP2_TYPE_NETNS`).
    pub const NETNS: u8 = 0x30;
    /// Google Cloud Private Service Connect: 8-byte connection id.
    pub const GCP: u8 = 0xE0;
    /// AWS: first byte is a sub-type, `0x01` = VPC endpoint id.
    pub const AWS: u8 = 0xEA;
    /// Azure: first byte is a sub-type, `0x01` = private endpoint link id (u32, little endian).
    pub const AZURE: u8 = 0xEE;
}

/// One raw type-length-value entry of a v2 header.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tlv {
    kind: u8,
    value: Box<[u8]>,
}

impl Tlv {
    /// Creates a TLV.
    pub fn new(kind: u8, value: impl Into<Box<[u8]>>) -> Self {
        Self {
            kind,
            value: value.into(),
        }
    }

    /// The type byte (see [`tlv_type`]).
    pub const fn kind(&self) -> u8 {
        self.kind
    }

    /// The value bytes.
    pub fn value(&self) -> &[u8] {
        &self.value
    }
}

/// The `PP2_TYPE_SSL` TLV: how the client connected to the proxy over TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SslInfo {
    client: u8,
    verify: u32,
    sub_tlvs: Vec<Tlv>,
}

impl SslInfo {
    /// `PP2_CLIENT_SSL` flag: the client connected over TLS.
    pub const CLIENT_SSL: u8 = 0x01;
    /// `PP2_CLIENT_CERT_CONN` flag: the client presented a certificate on this connection.
    pub const CLIENT_CERT_CONN: u8 = 0x02;
    /// `PP2_CLIENT_CERT_SESS` flag: the client presented a certificate in this TLS session.
    pub const CLIENT_CERT_SESS: u8 = 0x04;

    /// The raw client flags byte.
    pub const fn client_flags(&self) -> u8 {
        self.client
    }

    /// Whether the client connected over TLS (`PP2_CLIENT_SSL`).
    pub const fn is_ssl(&self) -> bool {
        self.client & Self::CLIENT_SSL != 0
    }

    /// Whether the client presented a certificate (on this connection or session).
    pub const fn has_client_cert(&self) -> bool {
        self.client & (Self::CLIENT_CERT_CONN | Self::CLIENT_CERT_SESS) != 0
    }

    /// The raw verify result (`0` is success). HAProxy also writes `0` when the client sent
    /// no certificate at all, so this field alone never means "verified": see [`verified`](Self::verified).
    pub const fn verify(&self) -> u32 {
        self.verify
    }

    /// Whether the client presented a certificate (on this connection or session) **and** the
    /// proxy verified it (`verify == 0`). Fails closed: `false` for a TLS client without a
    /// certificate, although HAProxy writes `verify = 0` for it (proxy-protocol.txt 2.2.6).
    pub const fn verified(&self) -> bool {
        self.has_client_cert() && self.verify == 0
    }

    fn sub_str(&self, kind: u8) -> Option<&str> {
        self.sub_tlvs
            .iter()
            .find(|t| t.kind == kind)
            .and_then(|t| std::str::from_utf8(&t.value).ok())
    }

    /// The TLS version, such as `TLSv1.3`.
    pub fn version(&self) -> Option<&str> {
        self.sub_str(tlv_type::SSL_VERSION)
    }

    /// The client certificate's common name, as sent, whether or not a certificate was
    /// verified: for an identity use [`SslInfo::verified_client_cn`].
    pub fn client_cn(&self) -> Option<&str> {
        self.sub_str(tlv_type::SSL_CN)
    }

    /// The cipher suite, such as `ECDHE-RSA-AES128-GCM-SHA256`.
    pub fn cipher(&self) -> Option<&str> {
        self.sub_str(tlv_type::SSL_CIPHER)
    }

    /// The certificate's signature algorithm, such as `SHA256`.
    pub fn sig_alg(&self) -> Option<&str> {
        self.sub_str(tlv_type::SSL_SIG_ALG)
    }

    /// The certificate's key algorithm, such as `RSA2048`.
    pub fn key_alg(&self) -> Option<&str> {
        self.sub_str(tlv_type::SSL_KEY_ALG)
    }

    /// Every sub-TLV, in header order.
    pub fn sub_tlvs(&self) -> &[Tlv] {
        &self.sub_tlvs
    }
}

impl SslInfo {
    /// An SSL TLV value for
    /// [`ProxyHeader::with_ssl`](crate::header::write::ProxyHeader::with_ssl): client flags
    /// (see the `CLIENT_*`
    /// constants) and the verify result (`0` = verified).
    pub const fn new(client_flags: u8, verify: u32) -> Self {
        Self {
            client: client_flags,
            verify,
            sub_tlvs: Vec::new(),
        }
    }

    /// Adds a sub-TLV (for example [`tlv_type::SSL_VERSION`]).
    #[must_use]
    pub fn with_sub_tlv(mut self, kind: u8, value: impl Into<Vec<u8>>) -> Self {
        self.sub_tlvs.push(Tlv::new(kind, value.into()));
        self
    }

    /// Adds the TLS version sub-TLV.
    #[must_use]
    pub fn with_version(self, version: &str) -> Self {
        self.with_sub_tlv(tlv_type::SSL_VERSION, version)
    }

    /// Adds the client common name sub-TLV.
    #[must_use]
    pub fn with_client_cn(self, cn: &str) -> Self {
        self.with_sub_tlv(tlv_type::SSL_CN, cn)
    }

    /// Adds the cipher sub-TLV.
    #[must_use]
    pub fn with_cipher(self, cipher: &str) -> Self {
        self.with_sub_tlv(tlv_type::SSL_CIPHER, cipher)
    }

    /// Adds the signature algorithm sub-TLV.
    #[must_use]
    pub fn with_sig_alg(self, alg: &str) -> Self {
        self.with_sub_tlv(tlv_type::SSL_SIG_ALG, alg)
    }

    /// Adds the key algorithm sub-TLV.
    #[must_use]
    pub fn with_key_alg(self, alg: &str) -> Self {
        self.with_sub_tlv(tlv_type::SSL_KEY_ALG, alg)
    }
}

impl SslInfo {
    /// Reads the SSL TLV whose `len`-byte value starts at `at` in `header` (offsets are
    /// the header's, for errors): flags, verify result, then a sub-TLV list.
    fn parse(header: &[u8], at: usize, len: usize) -> Result<Self, HeaderError> {
        if len < 5 {
            return Err(HeaderError::TlvLength {
                kind: tlv_type::SSL,
                len,
            });
        }
        let value = &header[at..at + len];
        let mut ssl = Self {
            client: value[0],
            verify: u32::from_be_bytes([value[1], value[2], value[3], value[4]]),
            sub_tlvs: Vec::new(),
        };
        walk(header, at + 5, at + len, |kind, _, value| {
            ssl.sub_tlvs.push(Tlv::new(kind, value));
            Ok(())
        })?;
        Ok(ssl)
    }

    /// The TLV value: flags, verify result, sub-TLVs.
    pub(crate) fn to_value(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(5);
        value.push(self.client);
        value.extend_from_slice(&self.verify.to_be_bytes());
        for sub in &self.sub_tlvs {
            push_tlv(&mut value, sub.kind, &sub.value);
        }
        value
    }
}

/// The TLVs of a v2 header, validated at parse time, with typed accessors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tlvs {
    raw: Vec<Tlv>,
    ssl: Option<SslInfo>,
}

impl Tlvs {
    /// No TLV at all.
    pub(crate) const EMPTY: Self = Self {
        raw: Vec::new(),
        ssl: None,
    };

    /// Every TLV in header order (including CRC32C and NOOP entries).
    pub fn raw(&self) -> &[Tlv] {
        &self.raw
    }

    /// Whether the header carried no TLV.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The value of the first TLV of type `kind`.
    pub fn get(&self, kind: u8) -> Option<&[u8]> {
        self.raw.iter().find(|t| t.kind == kind).map(Tlv::value)
    }

    fn get_str(&self, kind: u8) -> Option<&str> {
        self.get(kind).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The negotiated ALPN protocol (`PP2_TYPE_ALPN`), such as `h2`.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.get(tlv_type::ALPN)
    }

    /// The host name the client asked for (`PP2_TYPE_AUTHORITY`), when valid UTF-8.
    pub fn authority(&self) -> Option<&str> {
        self.get_str(tlv_type::AUTHORITY)
    }

    /// The connection's unique id (`PP2_TYPE_UNIQUE_ID`).
    pub fn unique_id(&self) -> Option<&[u8]> {
        self.get(tlv_type::UNIQUE_ID)
    }

    /// The CRC32C the header carried (already verified when present).
    pub fn crc32c(&self) -> Option<u32> {
        let v = self.get(tlv_type::CRC32C)?;
        Some(u32::from_be_bytes(v.try_into().ok()?))
    }

    /// TLS information (`PP2_TYPE_SSL`).
    pub fn ssl(&self) -> Option<&SslInfo> {
        self.ssl.as_ref()
    }

    /// The network namespace name (`PP2_TYPE_NETNS`).
    pub fn netns(&self) -> Option<&str> {
        self.get_str(tlv_type::NETNS)
    }

    /// The AWS VPC endpoint id (TLV `0xEA`, sub-type `0x01`), such as `vpce-08d2bf15fac5001c9`.
    pub fn aws_vpce_id(&self) -> Option<&str> {
        self.raw
            .iter()
            .filter(|t| t.kind == tlv_type::AWS)
            .find_map(|t| match t.value.split_first() {
                Some((0x01, rest)) => std::str::from_utf8(rest).ok(),
                _ => None,
            })
    }

    /// The Azure private endpoint link id (TLV `0xEE`, sub-type `0x01`, u32 little endian).
    pub fn azure_private_endpoint_link_id(&self) -> Option<u32> {
        self.raw
            .iter()
            .filter(|t| t.kind == tlv_type::AZURE)
            .find_map(|t| match t.value.split_first() {
                Some((0x01, rest)) => rest.try_into().ok().map(u32::from_le_bytes),
                _ => None,
            })
    }

    /// The Google Cloud Private Service Connect connection id (TLV `0xE0`, u64 big endian).
    pub fn gcp_psc_connection_id(&self) -> Option<u64> {
        let v = self.get(tlv_type::GCP)?;
        Some(u64::from_be_bytes(v.try_into().ok()?))
    }
}

/// Walks `data[start..end]` as a TLV list, calling `f(kind, value_offset, value)` for each.
fn walk(
    data: &[u8],
    start: usize,
    end: usize,
    mut f: impl FnMut(u8, usize, &[u8]) -> Result<(), HeaderError>,
) -> Result<(), HeaderError> {
    let mut off = start;
    while off < end {
        let kind = data[off];
        if end - off < 3 {
            return Err(HeaderError::TlvOverrun { kind, offset: off });
        }
        let len = usize::from(u16::from_be_bytes([data[off + 1], data[off + 2]]));
        let value_start = off + 3;
        if len > end - value_start {
            return Err(HeaderError::TlvOverrun { kind, offset: off });
        }
        f(kind, value_start, &data[value_start..value_start + len])?;
        off = value_start + len;
    }
    Ok(())
}

/// Walks and validates the TLVs from `start` to the end of `header`; `None` when there
/// are none.
pub(crate) fn parse_tlvs(header: &[u8], start: usize) -> Result<Option<Box<Tlvs>>, HeaderError> {
    if start >= header.len() {
        // No TLV: the usual header, with nothing to build or drop.
        return Ok(None);
    }
    let mut tlvs = Tlvs::default();
    let mut crc_at = Vec::new();
    walk(header, start, header.len(), |kind, at, value| {
        match kind {
            tlv_type::CRC32C => {
                if value.len() != 4 {
                    return Err(HeaderError::TlvLength {
                        kind,
                        len: value.len(),
                    });
                }
                crc_at.push(at);
            }
            tlv_type::UNIQUE_ID if value.len() > 128 => {
                return Err(HeaderError::TlvLength {
                    kind,
                    len: value.len(),
                });
            }
            tlv_type::SSL => {
                let ssl = SslInfo::parse(header, at, value.len())?;
                if tlvs.ssl.is_none() {
                    tlvs.ssl = Some(ssl);
                }
            }
            _ => {}
        }
        tlvs.raw.push(Tlv::new(kind, value));
        Ok(())
    })?;
    // Each CRC32C TLV is checked (normally there is one): `Tlvs::crc32c` returns the
    // first, and it must not be one nobody verified.
    for at in crc_at {
        let expected =
            u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let mut digest = CRC32C.digest();
        digest.update(&header[..at]);
        digest.update(&[0; 4]);
        digest.update(&header[at + 4..]);
        let computed = digest.finalize();
        if computed != expected {
            return Err(HeaderError::Crc32c { expected, computed });
        }
    }
    Ok((!tlvs.raw.is_empty()).then(|| Box::new(tlvs)))
}

pub(crate) fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    // Sub-TLV lengths beyond u16 are truncated; the outer TLV length check rejects them.
    out.extend_from_slice(&(value.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(value);
}
