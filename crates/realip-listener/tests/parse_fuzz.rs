//! Randomized checks of the sans-I/O parser: mutated and truncated headers never panic,
//! never claim more bytes than they were given, and an answer never changes as more bytes
//! arrive ("incomplete" may become anything; a header or an error is final).

use std::net::SocketAddr;

use realip_listener::{
    Command, DEFAULT_MAX_HEADER_LEN, ProxyHeader, Transport, parse_header, tlv_type,
};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let v4: SocketAddr = "192.0.2.1:1000".parse().unwrap();
    let v4d: SocketAddr = "10.0.0.1:443".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:1000".parse().unwrap();
    let v6d: SocketAddr = "[2001:db8::2]:443".parse().unwrap();
    vec![
        ProxyHeader::v1(v4, v4d).to_bytes(),
        ProxyHeader::v1(v6, v6d).to_bytes(),
        ProxyHeader::v1_unknown().to_bytes(),
        b"PROXY TCP6 2001:db8::1 127.0.0.21 51512 15001\r\n".to_vec(),
        b"PROXY TCP4 192.0.2.1 ::1 51512 15003\r\n".to_vec(),
        b"PROXY TCP6 ::ffff:192.0.2.1 fe80::1%eth0 1 2\r\n".to_vec(),
        ProxyHeader::v2(v4, v4d).to_bytes(),
        ProxyHeader::v2(v6, v6d)
            .with_transport(Transport::Datagram)
            .to_bytes(),
        ProxyHeader::v2_unix(b"/a", b"/b").to_bytes(),
        ProxyHeader::v2_unspec().to_bytes(),
        ProxyHeader::v2_local().to_bytes(),
        ProxyHeader::v2(v4, v4d)
            .with_command(Command::Local)
            .to_bytes(),
        ProxyHeader::v2(v4, v4d)
            .with_alpn("h2")
            .with_authority("example.com")
            .with_unique_id(b"id".to_vec())
            .with_netns("ns")
            .with_aws_vpce_id("vpce-1")
            .with_azure_link_id(7)
            .with_gcp_psc_connection_id(9)
            .with_tlv(
                tlv_type::SSL,
                vec![1, 0, 0, 0, 0, tlv_type::SSL_VERSION, 0, 3, b'T', b'L', b'S'],
            )
            .with_crc32c()
            .to_bytes(),
    ]
}

/// The parser's answer, reduced to what must be stable.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Incomplete,
    Header(usize),
    Error(String),
}

fn answer(buf: &[u8]) -> Answer {
    match parse_header(buf, DEFAULT_MAX_HEADER_LEN) {
        Ok(None) => Answer::Incomplete,
        Ok(Some((_, len))) => {
            assert!(
                len <= buf.len(),
                "header length {len} beyond the {} bytes given",
                buf.len()
            );
            assert!(len > 0);
            Answer::Header(len)
        }
        // The whole error, details included: a rejection's reason does not depend on how
        // the bytes were split.
        Err(err) => Answer::Error(err.to_string()),
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            // Flip a byte.
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
            // Change a length field or TLV length byte to something large or small.
            1 if bytes.len() > 16 => {
                let i = 14 + rng.below(bytes.len() - 14);
                bytes[i] = [0, 1, 2, 3, 0x7F, 0xFF][rng.below(6)];
            }
            // Truncate.
            2 if !bytes.is_empty() => bytes.truncate(rng.below(bytes.len())),
            // Append random bytes (application data, or garbage).
            3 => {
                for _ in 0..rng.below(40) {
                    bytes.push(rng.next() as u8);
                }
            }
            // Insert a CR or LF somewhere.
            _ if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes.insert(i, if rng.below(2) == 0 { b'\r' } else { b'\n' });
            }
            _ => {}
        }
    }
    bytes
}

#[test]
fn mutated_headers_never_panic_and_answers_are_final() {
    let seeds = seeds();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for round in 0..300_000 {
        let seed = &seeds[rng.below(seeds.len())];
        let bytes = mutate(&mut rng, seed);
        let full = answer(&bytes);
        // Any prefix that already has a final answer must agree with the whole.
        let cut = rng.below(bytes.len() + 1);
        match answer(&bytes[..cut]) {
            Answer::Incomplete => {}
            Answer::Header(len) => {
                assert_eq!(full, Answer::Header(len), "round {round}: {bytes:02x?}")
            }
            Answer::Error(err) => {
                assert_eq!(full, Answer::Error(err), "round {round}: {bytes:02x?}")
            }
        }
    }
}

#[test]
fn valid_headers_parse_at_their_exact_length_whatever_follows() {
    let mut rng = Rng(42);
    for seed in seeds() {
        for _ in 0..200 {
            let mut bytes = seed.clone();
            for _ in 0..rng.below(64) {
                bytes.push(rng.next() as u8);
            }
            assert_eq!(answer(&bytes), Answer::Header(seed.len()), "{seed:02x?}");
        }
        for cut in 0..seed.len() {
            assert_eq!(
                answer(&seed[..cut]),
                Answer::Incomplete,
                "{seed:02x?} cut at {cut}"
            );
        }
    }
}
