//! What a handshake allocates, counted by a counting global allocator. Its own test binary
//! with one test, so that nothing else allocates while a count is taken.

use std::net::SocketAddr;
use std::time::Duration;

use realip_listener::{Policy, ProxyHeader, ProxyListener};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[global_allocator]
static ALLOC: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// A handshake that waited for its header, then got it whole with 5 bytes of data behind
/// it, allocates only the connection's addresses and the bytes to replay: the header is
/// parsed where it was read, without a buffer. (The waiting handshake's own node in the
/// pending set is allocated at accept, before the count.)
#[test]
fn a_header_that_arrives_later_whole_costs_no_buffer() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut listener = ProxyListener::builder()
            .policy(Policy::Require)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let real: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let mut bytes = ProxyHeader::v2(real, addr).to_bytes();
        bytes.extend_from_slice(b"ping\n");

        let mut counts = Vec::new();
        for _ in 0..3 {
            let mut client = TcpStream::connect(addr).await.unwrap();
            // The listener accepts the silent socket and its handshake starts waiting.
            let waiting = tokio::time::timeout(Duration::from_millis(50), listener.accept());
            assert!(waiting.await.is_err(), "nothing to hand out yet");
            assert_eq!(listener.pending(), 1, "the handshake waits for its header");

            client.write_all(&bytes).await.unwrap();
            let region = Region::new(ALLOC);
            let (stream, proxied) = listener.accept().await;
            let allocations = region.change().allocations;
            assert_eq!(proxied.client_socket_addr(), Some(real));
            assert_eq!(stream.buffered(), b"ping\n");
            counts.push(allocations);
        }
        // The shared addresses and the replayed bytes; nothing for the header.
        assert!(
            counts.iter().all(|&n| n <= 2),
            "allocations from the header's arrival to the hand-out: {counts:?}"
        );
    });
}
