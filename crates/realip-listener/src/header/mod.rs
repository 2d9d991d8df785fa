//! PROXY protocol headers, from bytes to what they say and back.
//!
//! * [`parse`]: detects the v1 or v2 signature at the start of a connection and parses the
//!   header (v1 lines here, v2 address blocks with `ppp`), under the size caps.
//! * [`info`]: what a parsed header said ([`ProxyInfo`]: version, command, family,
//!   transport, addresses).
//! * [`tlv`]: the TLVs of a v2 header, validated while parsing ([`Tlvs`], [`SslInfo`]).
//! * [`write`]: [`ProxyHeader`], which writes v1 and v2 headers.

pub(crate) mod info;
pub(crate) mod parse;
pub(crate) mod tlv;
pub(crate) mod write;

pub use info::{Command, Family, ProxyAddr, ProxyInfo, ProxyVersion, Transport};
pub use parse::parse_header;
pub use tlv::{SslInfo, Tlv, Tlvs, tlv_type};
pub use write::ProxyHeader;
