//! Per-connection traffic counters, as EMQX's `recv_msg`, `send_msg`, `recv_oct` and
//! `send_oct`, and a byte-counting stream wrapper.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Counter of PUBLISH packets received (`GET /metrics`, see `crate::prom`).
pub(crate) const MESSAGES_RECEIVED_TOTAL: &str = "realip_broker_messages_received_total";
/// Counter of PUBLISH packets sent.
pub(crate) const MESSAGES_SENT_TOTAL: &str = "realip_broker_messages_sent_total";
/// Counter of bytes received.
pub(crate) const RECEIVED_BYTES_TOTAL: &str = "realip_broker_received_bytes_total";
/// Counter of bytes sent.
pub(crate) const SENT_BYTES_TOTAL: &str = "realip_broker_sent_bytes_total";

/// Counters of one connection, shared between its session task and the admin API; each
/// event is also added to the broker's process-wide series (`crate::prom`).
#[derive(Debug)]
pub(crate) struct Counters {
    /// PUBLISH packets received from the client.
    recv_msg: AtomicU64,
    /// PUBLISH packets sent to the client (redeliveries included).
    send_msg: AtomicU64,
    /// Bytes received on the connection (MQTT bytes; under WebSocket, the frames' payloads).
    recv_oct: AtomicU64,
    /// Bytes sent on the connection.
    send_oct: AtomicU64,
    /// The process-wide series.
    total: &'static Totals,
}

/// Handles on the process-wide counters (no-ops when no recorder is installed).
#[derive(Debug)]
struct Totals {
    recv_msg: metrics::Counter,
    send_msg: metrics::Counter,
    recv_oct: metrics::Counter,
    send_oct: metrics::Counter,
}

/// The process-wide series, looked up once per process (at the first connection, after the
/// recorder is installed at start) rather than held by every connection.
static TOTALS: OnceLock<Totals> = OnceLock::new();

impl Default for Counters {
    fn default() -> Self {
        Self {
            recv_msg: AtomicU64::new(0),
            send_msg: AtomicU64::new(0),
            recv_oct: AtomicU64::new(0),
            send_oct: AtomicU64::new(0),
            total: TOTALS.get_or_init(|| Totals {
                recv_msg: metrics::counter!(MESSAGES_RECEIVED_TOTAL),
                send_msg: metrics::counter!(MESSAGES_SENT_TOTAL),
                recv_oct: metrics::counter!(RECEIVED_BYTES_TOTAL),
                send_oct: metrics::counter!(SENT_BYTES_TOTAL),
            }),
        }
    }
}

impl Counters {
    pub(crate) fn received_message(&self) {
        self.recv_msg.fetch_add(1, Ordering::Relaxed);
        self.total.recv_msg.increment(1);
    }

    /// Counts `n` bytes received on the connection.
    pub(crate) fn add_received_bytes(&self, n: u64) {
        self.recv_oct.fetch_add(n, Ordering::Relaxed);
        if n > 0 {
            self.total.recv_oct.increment(n);
        }
    }

    pub(crate) fn sent_message(&self) {
        self.send_msg.fetch_add(1, Ordering::Relaxed);
        self.total.send_msg.increment(1);
    }

    /// `(recv_msg, send_msg, recv_oct, send_oct)`.
    pub(crate) fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.recv_msg.load(Ordering::Relaxed),
            self.send_msg.load(Ordering::Relaxed),
            self.recv_oct.load(Ordering::Relaxed),
            self.send_oct.load(Ordering::Relaxed),
        )
    }
}

/// At most one `warn` line per this interval about messages a full session queue dropped.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Messages a session's full queue dropped: counted, and reported in rate-limited `warn`
/// lines (the first drop at once, then one summary per [`DROP_REPORT_EVERY`] while drops go
/// on), not one line per message.
#[derive(Debug, Default)]
pub(crate) struct DropLog {
    total: u64,
    unreported: u64,
    last_report: Option<Instant>,
}

impl DropLog {
    /// Counts one dropped message (on `topic`), logging when a report is due.
    pub(crate) fn record(&mut self, clientid: &str, topic: &str, queue: usize, now: Instant) {
        self.total += 1;
        self.unreported += 1;
        if self
            .last_report
            .is_some_and(|at| now.duration_since(at) < DROP_REPORT_EVERY)
        {
            return;
        }
        tracing::warn!(
            client = %clientid,
            topic = %topic,
            dropped = self.unreported,
            dropped_total = self.total,
            "session queue full ({queue} messages): dropped {} oldest message(s) since the last report, {} in all; at most one such line every {}s",
            self.unreported,
            self.total,
            DROP_REPORT_EVERY.as_secs(),
        );
        self.unreported = 0;
        self.last_report = Some(now);
    }

    /// Messages dropped over the session's life.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

/// A stream that adds the bytes read and written to its [`Counters`].
#[derive(Debug)]
pub(crate) struct Metered<IO> {
    io: IO,
    counters: Arc<Counters>,
}

impl<IO> Metered<IO> {
    pub(crate) fn new(io: IO, counters: Arc<Counters>) -> Self {
        Self { io, counters }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Metered<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        let n = (buf.filled().len() - before) as u64;
        self.counters.add_received_bytes(n);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Metered<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
        self.counters
            .send_oct
            .fetch_add(n as u64, Ordering::Relaxed);
        self.counters.total.send_oct.increment(n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn drops_are_counted_and_reported_at_most_once_per_interval() {
        let mut log = DropLog::default();
        let start = Instant::now();
        log.record("c", "t", 1000, start);
        assert_eq!((log.total, log.unreported), (1, 0));
        for i in 0..162 {
            log.record("c", "t", 1000, start + Duration::from_millis(i));
        }
        // 162 more drops within the interval: counted, not reported yet.
        assert_eq!((log.total(), log.unreported), (163, 162));
        log.record("c", "t", 1000, start + DROP_REPORT_EVERY);
        assert_eq!((log.total(), log.unreported), (164, 0));
    }

    #[tokio::test]
    async fn counts_bytes_both_ways() {
        let (a, mut b) = tokio::io::duplex(64);
        let counters = Arc::new(Counters::default());
        let mut metered = Metered::new(a, Arc::clone(&counters));
        metered.write_all(b"hello").await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut buf = [0; 3];
        metered.read_exact(&mut buf).await.unwrap();
        counters.received_message();
        assert_eq!(counters.snapshot(), (1, 0, 3, 5));
    }
}
