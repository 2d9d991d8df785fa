//! The example broker's MQTT decoding path: a CONNECT, then arbitrary bytes, in arbitrary
//! chunks, through the broker's own codec module (compiled here from its source file).
//!
//! * Never panics, for MQTT 3.1.1 and 5.0, after a valid CONNECT or as the CONNECT itself.
//! * The packets decoded, and the first error, are the same whether the bytes arrive at
//!   once or in chunks (a session's reads split packets anywhere).

#![no_main]
// The broker's modules are compiled whole; only their decoding functions are used here.
#![allow(dead_code, unreachable_pub)]

#[path = "../../examples/broker/src/acl.rs"]
mod acl;
#[path = "../../examples/broker/src/broker.rs"]
mod broker;
#[path = "../../examples/broker/src/codec.rs"]
mod codec;
#[path = "../../examples/broker/src/metrics.rs"]
mod metrics;
#[path = "../../examples/broker/src/wellformed.rs"]
mod wellformed;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

use codec::Version;

/// The broker's packet size limit (`session::MAX_PACKET_SIZE`).
const MAX_PACKET_SIZE: usize = 1024 * 1024;

const CONNECT_V4: &[u8] = &[
    0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c',
];
const CONNECT_V5: &[u8] = &[
    0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'c',
];

/// The fuzzer's bytes: a flags byte (bit 0: MQTT 5.0 instead of 3.1.1; bit 1: the data is
/// the whole session, CONNECT included, instead of what follows a valid CONNECT), a count
/// `n`, `n` chunk sizes (each 1 + value, used in turn), then the data. Seeds captured from
/// real clients are `[flags | 2, 0]` followed by what the client sent.
struct Input<'a> {
    v5: bool,
    raw_connect: bool,
    sizes: Vec<usize>,
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let (flags, sizes, data) = realip_fuzz::chunked_input(bytes)?;
        Some(Self {
            v5: flags & 1 == 1,
            raw_connect: flags & 2 == 2,
            sizes,
            data,
        })
    }
}

/// `packet`'s `Debug` text without the instants it holds (a message's expiry is an instant
/// computed at decoding time, different at every decoding).
fn text(packet: &impl std::fmt::Debug) -> String {
    let mut text = format!("{packet:?}");
    while let Some(start) = text.find("Instant {") {
        let end = text[start..]
            .find('}')
            .map_or(text.len(), |e| start + e + 1);
        text.replace_range(start..end, "Instant");
    }
    text
}

/// Decodes like a session: the CONNECT, then packets until the first error, feeding the
/// bytes in `sizes`-long chunks. Returns what was decoded, as text.
fn session(version: Version, bytes: &[u8], sizes: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut rest = bytes;
    let mut sizes = sizes.iter().copied();
    let mut connected = false;
    loop {
        loop {
            if !connected {
                match codec::decode_connect(version, &mut buf, MAX_PACKET_SIZE) {
                    Ok(Some(connect)) => {
                        out.push(text(&connect));
                        connected = true;
                        continue;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        out.push(format!("error {e:?}"));
                        return out;
                    }
                }
            }
            match version.decode(&mut buf, MAX_PACKET_SIZE) {
                Ok(Some(packet)) => out.push(text(&packet)),
                Ok(None) => break,
                Err(e) => {
                    out.push(format!("error {e:?}"));
                    return out;
                }
            }
        }
        if rest.is_empty() {
            out.push(format!("end with {} bytes buffered", buf.len()));
            return out;
        }
        let n = sizes.next().unwrap_or(rest.len()).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Some(input) = Input::parse(bytes) else {
        return;
    };
    let version = if input.v5 { Version::V5 } else { Version::V4 };
    let mut session_bytes = Vec::new();
    if !input.raw_connect {
        session_bytes.extend_from_slice(if input.v5 { CONNECT_V5 } else { CONNECT_V4 });
    }
    session_bytes.extend_from_slice(input.data);
    let sizes = &input.sizes;
    let whole = session(version, &session_bytes, &[]);
    let chunked = session(version, &session_bytes, sizes);
    assert_eq!(whole, chunked, "chunks {sizes:?}");
    if !input.raw_connect {
        assert!(whole[0].starts_with("Connect"), "{whole:?}");
    }
});
