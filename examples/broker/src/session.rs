//! One MQTT connection (3.1.1 or 5.0), over any byte stream (TCP, PROXY protocol, WebSocket).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use realip_core::LogThrottle;
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::broker::{
    Broker, ClientInfo, ClientMeta, CloseReason, ConnMeta, ConnSignal, Delivery, Expiry, Limits,
    PendingWill, Registration, min_qos, shared_filter, valid_filter, valid_topic,
};
use crate::codec::{self, ConnackCode, DisconnectReason, Inbound, Version};
use crate::metrics::{Counters, Metered};
use crate::prom::{OpenConnection, Reject};

/// One `realip_broker::audit` line about a client, at `$level`: the event, the client id, its
/// address (`peername`), the socket peer, the listener and the reason. (tracing's level is part
/// of the macro, so a line whose level depends on the outcome names it here.)
macro_rules! audit_line {
    ($level:ident, $event:literal, $clientid:expr, $meta:expr, $reason:expr, $message:literal) => {
        tracing::$level!(
            target: "realip_broker::audit",
            event = $event,
            client = %$clientid,
            peername = %$meta.client,
            socket_peer = %$meta.socket_peer,
            listener = $meta.listener,
            reason = %$reason,
            $message
        )
    };
}

/// Time a new connection has to send CONNECT.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that does not read what it is sent for this long is disconnected.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection ended, for the audit log.
#[derive(Debug)]
enum End {
    /// The client sent DISCONNECT.
    Normal,
    /// The client sent DISCONNECT asking for its will message (MQTT 5, reason 0x04).
    NormalWithWill,
    /// The socket closed without DISCONNECT.
    Closed,
    KeepaliveTimeout(Duration),
    Malformed(String),
    Protocol(String),
    TooLarge(String),
    /// A limit of the broker's was broken (MQTT 5 reason code, description).
    Limit(DisconnectReason, &'static str),
    TopicAlias(&'static str),
    UnsupportedProtocol(u8),
    Io(std::io::Error),
    WriteTimeout,
    Broker(CloseReason),
    Shutdown,
}

impl End {
    /// The MQTT 5 DISCONNECT the server sends before closing, if any.
    const fn disconnect_reason(&self) -> Option<DisconnectReason> {
        match self {
            Self::KeepaliveTimeout(_) => Some(DisconnectReason::KeepAliveTimeout),
            Self::Malformed(_) => Some(DisconnectReason::MalformedPacket),
            Self::Protocol(_) => Some(DisconnectReason::ProtocolError),
            Self::TooLarge(_) => Some(DisconnectReason::PacketTooLarge),
            Self::Limit(reason, _) => Some(*reason),
            Self::TopicAlias(_) => Some(DisconnectReason::TopicAliasInvalid),
            Self::Broker(CloseReason::TakenOver) => Some(DisconnectReason::SessionTakenOver),
            Self::Broker(CloseReason::Kicked) => Some(DisconnectReason::AdministrativeAction),
            Self::Shutdown => Some(DisconnectReason::ServerShuttingDown),
            _ => None,
        }
    }
}

impl From<codec::DecodeError> for End {
    fn from(e: codec::DecodeError) -> Self {
        if e.too_large {
            Self::TooLarge(e.message)
        } else if e.protocol_error {
            Self::Protocol(e.message)
        } else {
            Self::Malformed(e.message)
        }
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Normal => f.write_str("normal"),
            Self::NormalWithWill => f.write_str("normal, with will message"),
            Self::Closed => f.write_str("closed by peer"),
            Self::KeepaliveTimeout(after) => {
                write!(
                    f,
                    "keepalive timeout ({:.1}s without a packet)",
                    after.as_secs_f64()
                )
            }
            Self::Malformed(e) => write!(f, "malformed packet: {e}"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::TooLarge(e) => write!(f, "packet too large: {e}"),
            Self::Limit(_, e) => f.write_str(e),
            Self::TopicAlias(e) => write!(f, "topic alias invalid: {e}"),
            Self::UnsupportedProtocol(level) => write!(f, "unsupported protocol level {level}"),
            Self::Io(e) => write!(f, "io error: {e}"),
            Self::WriteTimeout => write!(
                f,
                "write timeout ({}s): the client does not read",
                WRITE_TIMEOUT.as_secs()
            ),
            Self::Broker(reason) => f.write_str(reason.as_str()),
            Self::Shutdown => f.write_str("server shutdown"),
        }
    }
}

/// Smallest read: most packets (PINGREQ, PUBACK, a small PUBLISH) fit.
const MIN_READ: usize = 256;
/// Largest read: a read that fills its buffer doubles the next one, up to this.
const MAX_READ: usize = 64 * 1024;

/// Reads MQTT packets from a stream, buffering partial packets.
///
/// The buffer follows the traffic: it starts at [`MIN_READ`] bytes, doubles while reads fill
/// it, drops to twice the last read when that used less than a quarter of it, and is given
/// back whenever it is empty and a read has to wait, so an idle connection holds no buffer.
#[derive(Debug)]
struct Reader {
    buf: BytesMut,
    /// Bytes to make room for on the next read.
    chunk: usize,
}

impl Reader {
    fn new() -> Self {
        Self {
            buf: BytesMut::new(),
            chunk: MIN_READ,
        }
    }

    /// The next complete packet already buffered, if any.
    fn next(&mut self, version: Version, max: usize) -> Result<Option<Inbound>, End> {
        version.decode(&mut self.buf, max).map_err(End::from)
    }

    /// Reads more bytes; `Ok(false)` at end of stream. Cancel safe.
    async fn fill<IO: AsyncRead + Unpin>(&mut self, io: &mut IO) -> Result<bool, End> {
        std::future::poll_fn(|cx| self.poll_fill(io, cx)).await
    }

    fn poll_fill<IO: AsyncRead + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<Result<bool, End>> {
        if self.buf.is_empty() && self.buf.capacity() > self.chunk {
            // A burst is over: give its buffer back rather than hold it while idle.
            self.buf = BytesMut::new();
        }
        self.buf.reserve(self.chunk);
        let room = self.buf.capacity() - self.buf.len();
        let read = std::pin::pin!(io.read_buf(&mut self.buf)).poll(cx);
        match read {
            Poll::Pending => {
                // Nothing to read: an empty buffer is not kept while the connection waits
                // (a pending read has not written into it).
                if self.buf.is_empty() {
                    self.buf = BytesMut::new();
                }
                Poll::Pending
            }
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(false)),
            Poll::Ready(Ok(n)) => {
                if n == room {
                    self.chunk = (self.chunk * 2).min(MAX_READ);
                } else if n < self.chunk / 4 {
                    // Traffic slowed down: size the next read for what came, so an idle
                    // connection soon reads MIN_READ bytes again.
                    self.chunk = (n * 2).next_power_of_two().max(MIN_READ);
                }
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(End::Io(e))),
        }
    }
}

/// How the connection ends if the broker closed it.
fn closed(signal: &ConnSignal) -> Option<End> {
    signal.close_reason().map(|reason| match reason {
        CloseReason::Shutdown => End::Shutdown,
        reason => End::Broker(reason),
    })
}

/// Completes when the keep-alive timer fires; never without one.
async fn expiry(timer: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Writes and flushes `out`, within [`WRITE_TIMEOUT`], then gives its buffer back (an idle
/// connection holds none).
///
/// What the stream takes at once is written without a timer; only a write that has to wait
/// sets one, in a boxed future of its own: held inline, the timer and the write would be part
/// of every connection's task for as long as it lives, idle or not.
async fn send<IO: AsyncWrite + Unpin>(io: &mut IO, out: &mut BytesMut) -> Result<(), End> {
    if out.is_empty() {
        return Ok(());
    }
    let done = std::future::poll_fn(|cx| Poll::Ready(write_now(io, out, cx)))
        .await
        .map_err(End::Io)?;
    if !done {
        let write = async {
            io.write_all(out).await?;
            io.flush().await
        };
        match Box::pin(tokio::time::timeout(WRITE_TIMEOUT, write)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(End::Io(e)),
            Err(_) => return Err(End::WriteTimeout),
        }
    }
    *out = BytesMut::new();
    Ok(())
}

/// Writes what `io` takes without waiting and removes it from `out`, then flushes:
/// `Ok(true)` once all of `out` is written and flushed, `Ok(false)` when the stream has to
/// wait (the rest is left in `out`).
fn write_now<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    out: &mut BytesMut,
    cx: &mut Context<'_>,
) -> std::io::Result<bool> {
    while !out.is_empty() {
        match Pin::new(&mut *io).poll_write(cx, out) {
            Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => out.advance(n),
            Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(false),
        }
    }
    match Pin::new(&mut *io).poll_flush(cx) {
        Poll::Ready(result) => result.map(|()| true),
        Poll::Pending => Ok(false),
    }
}

fn encode_err(e: codec::EncodeError) -> End {
    End::Malformed(format!("cannot encode: {}", e.0))
}

/// What an accepted CONNECT leaves for the rest of the connection. The packet itself and the
/// connection's metadata are not kept by the task: the record the admin API shows is `info`,
/// shared with the broker.
struct Admitted {
    info: Arc<ClientInfo>,
    version: Version,
    /// Whether the broker assigned the client id, which CONNACK then carries (MQTT 5).
    assigned: bool,
    keep_alive: u16,
    /// The client's Receive Maximum [MQTT-3.3.4-9].
    receive_maximum: u16,
    /// The Session Expiry Interval of CONNECT (MQTT 5).
    session_expiry: Option<u32>,
    /// The client's Maximum Packet Size [MQTT-3.1.2-24].
    max_packet_size: Option<u32>,
    /// The client's Topic Alias Maximum.
    topic_alias_max: u16,
    will: Option<Box<codec::Will>>,
}

/// Serves one connection until it ends. Never returns an error: the end is logged.
///
/// `received` are bytes of the connection already read from `io` (what followed a PROXY
/// header in the same read): they are read first.
///
/// Every connected client keeps this future, in its task, for as long as it is connected:
/// it holds the connection's state and what waiting on it takes, no more. The CONNECT phase
/// and writes that have to wait run boxed (an async fn also keeps a copy of its arguments,
/// so the block below uses what it captures in place).
pub(crate) fn run<IO>(
    io: IO,
    received: Vec<u8>,
    meta: ConnMeta,
    broker: Arc<Broker>,
) -> impl Future<Output = ()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let open = OpenConnection::new(meta.listener);
    let counters = Arc::new(Counters::default());
    let mut reader = Reader::new();
    if !received.is_empty() {
        reader.buf = BytesMut::from(&received[..]);
        counters.add_received_bytes(received.len() as u64);
    }
    let mut io = Metered::new(io, Arc::clone(&counters));
    // The connection record is passed boxed, and the CONNECT phase takes it out.
    let meta = Box::new(meta);
    async move {
        let guard = broker.track();
        // Boxed: the CONNECT phase (the packet, the metadata, its timer) is held only while
        // it runs.
        let admitted = Box::pin(admit(&mut io, &mut reader, meta, &counters, &broker)).await;
        serve(admitted, &mut io, &mut reader, &broker).await;
        drop(guard);
        drop(open);
    }
}

/// Serves a client whose CONNECT was accepted (`None`: it was not): registration, CONNACK,
/// packets and deliveries, then the will, unregistration and the audit line.
///
/// Not an async fn, whose future would hold its arguments twice (it moves them into
/// locals): the block uses what it captures in place, and keeps across its waits only what
/// an idle connection needs.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn's future would keep a second copy of its arguments"
)]
fn serve<'a, IO>(
    mut admitted: Option<Admitted>,
    io: &'a mut IO,
    reader: &'a mut Reader,
    broker: &'a Broker,
) -> impl Future<Output = ()> + 'a
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    async move {
        let Some(admitted) = admitted.as_mut() else {
            return;
        };
        let version = admitted.version;
        let Registration {
            conn_id,
            session_present,
            signal,
            resend,
        } = broker.register(Arc::clone(&admitted.info));
        let info = &*admitted.info;
        tracing::info!(
            target: "realip_broker::audit",
            event = "connected",
            client = %info.clientid,
            peername = %info.meta.client,
            socket_peer = %info.meta.socket_peer,
            listener = info.meta.listener,
            source = %info.meta.client.source(),
            proto_ver = version.level(),
            keepalive = admitted.keep_alive,
            clean_start = info.clean_start,
            "client connected"
        );

        // Unregisters when dropped, also if this task panics (the explicit call below runs
        // first normally).
        let mut conn = Connection {
            version,
            info: &admitted.info,
            broker,
            conn_id,
            receive_max: admitted.receive_maximum,
            session_expiry: admitted.session_expiry,
            client_max_packet: admitted
                .max_packet_size
                .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX)),
            out: BytesMut::new(),
            disconnect_expiry: None,
            client_alias_max: admitted.topic_alias_max,
            aliases: None,
        };
        // A resumed session re-sends what was in flight, in order, with DUP set (PUBREL for
        // QoS 2 messages already received) [MQTT-4.4.0-1], [MQTT-4.6.0-1]: queued here, sent
        // after CONNACK.
        let resent = conn.resend(resend);
        let connacked = connack(
            io,
            version,
            ConnackCode::Accepted,
            session_present,
            admitted.assigned.then_some(conn.info.clientid.as_str()),
            broker.limits(),
        )
        .await;
        // (`if let`: the failed result is not held while the connection runs.)
        let end = if let Err(end) = connacked.and(resent) {
            end
        } else {
            let end = conn.run(io, reader, admitted.keep_alive, &signal).await;
            if let Some(reason) = end.disconnect_reason() {
                let mut out = BytesMut::new();
                if version.disconnect(&mut out, reason).is_ok() {
                    let _ = send(io, &mut out).await;
                }
            }
            end
        };

        let will = match end {
            End::Normal => None,
            _ => admitted.will.take().filter(|w| valid_topic(&w.topic)),
        };
        let will = will.map(|will| {
            let will = *will;
            PendingWill {
                msg: Delivery {
                    topic: Arc::from(will.topic.as_str()),
                    payload: will.payload,
                    qos: will.qos,
                    retain: will.retain,
                    props: Arc::new(will.props),
                    sub_ids: Vec::new(),
                },
                delay: Duration::from_secs(u64::from(will.delay)),
                message_expiry: will.message_expiry,
            }
        });
        let clientid = conn.info.clientid.as_str();
        broker.unregister(
            clientid,
            conn_id,
            conn.disconnect_expiry
                .map(|secs| Expiry::from_interval(Some(secs))),
            will,
        );
        close(io).await;
        let clientid = conn.info.clientid.as_str();
        let meta = &conn.info.meta;
        let level_info = matches!(
            end,
            End::Normal
                | End::NormalWithWill
                | End::Closed
                | End::Broker(_)
                | End::Shutdown
                | End::KeepaliveTimeout(_)
        );
        if level_info {
            audit_line!(
                info,
                "disconnected",
                clientid,
                meta,
                end,
                "client disconnected"
            );
        } else {
            audit_line!(
                warn,
                "disconnected",
                clientid,
                meta,
                end,
                "client disconnected"
            );
        }
    }
}

/// Refusals before CONNECT, which any peer can cause as often as it connects: at most 10
/// `warn` lines per 5 seconds for each (`printk_ratelimit`'s limit; the others at `debug`,
/// counted in the next line), as the PROXY listener's rejections.
static UNSUPPORTED_VERSION_LOG: LazyLock<LogThrottle> = LazyLock::new(LogThrottle::default);
static BAD_FIRST_PACKET_LOG: LazyLock<LogThrottle> = LazyLock::new(LogThrottle::default);

/// Reads CONNECT (within [`CONNECT_TIMEOUT`]) and decides whether the client may connect:
/// `None` when it may not, after the refusing CONNACK (if any) and the log line.
async fn admit<IO>(
    io: &mut IO,
    reader: &mut Reader,
    meta: Box<ConnMeta>,
    counters: &Arc<Counters>,
    broker: &Broker,
) -> Option<Admitted>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut shutdown = broker.shutdown_signal();
    if *shutdown.borrow_and_update() {
        return None;
    }
    let first = tokio::select! {
        first = tokio::time::timeout(CONNECT_TIMEOUT, read_first(io, reader, max_packet(broker))) => first,
        _ = shutdown.changed() => return None,
    };
    let (version, connect) = match first {
        Err(_) => {
            tracing::debug!(peername = %meta.client, socket_peer = %meta.socket_peer, listener = meta.listener, "no CONNECT in time, closing");
            Reject::ConnectTimeout.count();
            return None;
        }
        Ok(Err(end @ (End::Closed | End::Io(_)))) => {
            // A load balancer's probe: connect and close (or reset).
            tracing::debug!(peername = %meta.client, socket_peer = %meta.socket_peer, listener = meta.listener, reason = %end, "closed before CONNECT");
            return None;
        }
        Ok(Err(End::UnsupportedProtocol(level))) => {
            match UNSUPPORTED_VERSION_LOG.admit(std::time::Instant::now()) {
                Some(suppressed) => {
                    tracing::warn!(peername = %meta.client, socket_peer = %meta.socket_peer, listener = meta.listener, protocol_level = level, suppressed, "unsupported protocol version, only MQTT 3.1.1 (level 4) and 5 are served")
                }
                None => {
                    tracing::debug!(peername = %meta.client, socket_peer = %meta.socket_peer, listener = meta.listener, protocol_level = level, "unsupported protocol version, only MQTT 3.1.1 (level 4) and 5 are served")
                }
            }
            Reject::ProtocolVersion.count();
            // MQTT 3.1.1 §3.1.2.2: CONNACK return code 1 (unacceptable protocol level).
            let mut out = BytesMut::from(&[0x20, 0x02, 0x00, 0x01][..]);
            let _ = send(io, &mut out).await;
            return None;
        }
        Ok(Err(end)) => {
            match BAD_FIRST_PACKET_LOG.admit(std::time::Instant::now()) {
                Some(suppressed) => {
                    tracing::warn!(peername = %meta.client, socket_peer = %meta.socket_peer, listener = meta.listener, reason = %end, suppressed, "bad first packet, closing")
                }
                None => {
                    tracing::debug!(peername = %meta.client, socket_peer = %meta.socket_peer, listener = meta.listener, reason = %end, "bad first packet, closing")
                }
            }
            Reject::MalformedConnect.count();
            return None;
        }
        Ok(Ok(first)) => first,
    };
    let codec::Connect {
        client_id: mut clientid,
        username,
        clean_start,
        keep_alive,
        persistent,
        will,
        session_expiry,
        receive_maximum,
        max_packet_size,
        topic_alias_max,
        auth_method,
    } = connect;

    let mut assigned = false;
    if clientid.is_empty() {
        // 3.1.1 needs clean session for an assigned id; MQTT 5 allows it either way.
        if version == Version::V4 && !clean_start {
            tracing::warn!(peername = %meta.client, socket_peer = %meta.socket_peer, listener = meta.listener, reason = "empty client id with clean session = 0", "client refused");
            Reject::ClientId.count();
            let _ = connack(
                io,
                version,
                ConnackCode::BadClientId,
                false,
                None,
                broker.limits(),
            )
            .await;
            return None;
        }
        clientid = format!("realip-{:016x}", rand_id());
        assigned = true;
    }

    if let Some(method) = &auth_method {
        // [MQTT-4.12.0-1]: enhanced authentication is not supported; 0x8C and close.
        tracing::warn!(peername = %meta.client, socket_peer = %meta.socket_peer, listener = meta.listener, client = %clientid, method = %method, "client refused: unsupported authentication method");
        Reject::AuthenticationMethod.count();
        refuse(io, version, ConnackCode::BadAuthenticationMethod, broker).await;
        return None;
    }

    if let Err(reason) = broker.acl().check(meta.client.ip()) {
        deny(
            io,
            version,
            broker,
            &meta,
            &clientid,
            Reject::Denied,
            &reason,
        )
        .await;
        return None;
    }

    // `--tls-identity cn-as-username`: the username is the verified certificate's CN, never
    // what the client sent; without one the client is refused.
    let username = if broker.cn_as_username() {
        match &meta.verified_cn {
            Ok(cn) => Some(cn.clone()),
            Err(reason) => {
                let reason = format!(
                    "--tls-identity cn-as-username and no verified client certificate: {reason}"
                );
                deny(
                    io,
                    version,
                    broker,
                    &meta,
                    &clientid,
                    Reject::NoVerifiedCertificate,
                    &reason,
                )
                .await;
                return None;
            }
        }
    } else {
        username
    };

    let info = ClientInfo {
        clientid,
        username,
        counters: Arc::clone(counters),
        meta: ClientMeta::from(*meta),
        proto_ver: version.level(),
        keepalive: keep_alive,
        clean_start,
        persistent,
        expiry: match version {
            Version::V4 if persistent => Expiry::Never,
            Version::V4 => Expiry::Now,
            Version::V5 => Expiry::from_interval(session_expiry),
        },
        connected_at: SystemTime::now(),
    };
    Some(Admitted {
        info: Arc::new(info),
        version,
        assigned,
        keep_alive,
        receive_maximum,
        session_expiry,
        max_packet_size,
        topic_alias_max,
        will: will.map(Box::new),
    })
}

/// Shuts the stream down (TCP FIN, WebSocket close frame) without waiting on a peer that
/// does not read. (Boxed: its timer is not held by the task of every connection.)
async fn close<IO: AsyncWrite + Unpin>(io: &mut IO) {
    let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), io.shutdown())).await;
}

/// A client refused after its CONNECT for who it is: an audit `warn` line with the reason,
/// the count, and the refusing CONNACK (`--allow`/`--deny`: Not authorized;
/// `--tls-identity`: Bad User Name or Password, which 3.1.1 spells Not authorized).
async fn deny<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    version: Version,
    broker: &Broker,
    meta: &ConnMeta,
    clientid: &str,
    reject: Reject,
    reason: &str,
) {
    audit_line!(warn, "denied", clientid, meta, reason, "client denied");
    reject.count();
    let code = match reject {
        Reject::NoVerifiedCertificate => ConnackCode::BadUserNameOrPassword,
        _ => ConnackCode::NotAuthorized,
    };
    refuse(io, version, code, broker).await;
}

/// A refusing CONNACK, then the connection is closed.
async fn refuse<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    version: Version,
    code: ConnackCode,
    broker: &Broker,
) {
    let _ = connack(io, version, code, false, None, broker.limits()).await;
    close(io).await;
}

fn max_packet(broker: &Broker) -> usize {
    usize::try_from(broker.limits().max_packet_size).unwrap_or(usize::MAX)
}

async fn read_first<IO: AsyncRead + Unpin>(
    io: &mut IO,
    reader: &mut Reader,
    max: usize,
) -> Result<(Version, codec::Connect), End> {
    loop {
        if !reader.buf.is_empty() && reader.buf[0] >> 4 != 1 {
            return Err(End::Protocol(String::from("first packet is not CONNECT")));
        }
        if let Some((name, level)) = connect_protocol(&reader.buf) {
            let version = match (name, level) {
                (b"MQTT", 4) => Version::V4,
                (b"MQTT", 5) => Version::V5,
                _ => return Err(End::UnsupportedProtocol(level)),
            };
            match codec::decode_connect(version, &mut reader.buf, max) {
                Ok(Some(connect)) => return Ok((version, connect)),
                Ok(None) => {}
                Err(e) => return Err(End::from(e)),
            }
        }
        if !reader.fill(io).await? {
            return Err(End::Closed);
        }
    }
}

/// The protocol name and level of a CONNECT at the start of `buf`, once they have arrived.
///
/// Read before decoding: the level decides which codec reads the packet (rumqttc's 3.1.1
/// decoder also accepts level 5 and then misreads the CONNECT, whose properties it does not
/// expect), and clients of unsupported versions get a proper refusal instead of a decoding
/// error.
fn connect_protocol(buf: &[u8]) -> Option<(&[u8], u8)> {
    if buf.first()? >> 4 != 1 {
        return None;
    }
    // Fixed header: type byte, then 1 to 4 remaining-length bytes.
    let len_bytes = buf.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let rest = buf.get(1 + len_bytes..)?;
    let name_len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    let name = rest.get(2..2 + name_len)?;
    let level = *rest.get(2 + name_len)?;
    Some((name, level))
}

async fn connack<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    version: Version,
    code: ConnackCode,
    session_present: bool,
    assigned: Option<&str>,
    limits: &Limits,
) -> Result<(), End> {
    let mut out = BytesMut::new();
    version
        .connack(&mut out, code, session_present, assigned, limits)
        .map_err(encode_err)?;
    send(io, &mut out).await
}

/// Messages taken from the session queue per wake-up.
const BATCH: usize = 256;

/// The CONNECTed part of a connection. Outgoing messages and their acknowledgement state
/// live in the broker's session, so that a resumed session continues where this one stopped.
struct Connection<'a> {
    version: Version,
    /// The admin API's record: the client id, and this connection's message and byte
    /// counters.
    info: &'a ClientInfo,
    broker: &'a Broker,
    conn_id: u64,
    /// The client's Receive Maximum [MQTT-3.3.4-9].
    receive_max: u16,
    /// The Session Expiry Interval of CONNECT (MQTT 5).
    session_expiry: Option<u32>,
    /// The Session Expiry Interval of DISCONNECT (MQTT 5), which replaces CONNECT's.
    disconnect_expiry: Option<u32>,
    /// The client's Maximum Packet Size [MQTT-3.1.2-24].
    client_max_packet: usize,
    /// The client's Topic Alias Maximum: aliases the broker may set.
    client_alias_max: u16,
    /// Topic aliases, once either side sets one (most connections never do).
    aliases: Option<Box<Aliases>>,
    out: BytesMut,
}

/// Removes the connection from the broker.
impl Drop for Connection<'_> {
    fn drop(&mut self) {
        self.broker
            .unregister(self.info.clientid.as_str(), self.conn_id, None, None);
    }
}

/// The topic aliases of one connection (MQTT 5 §3.3.2.3.4).
#[derive(Debug, Default)]
struct Aliases {
    /// Set by the client.
    inbound: HashMap<u16, String>,
    /// Set by the broker.
    outbound: HashMap<Arc<str>, u16>,
}

impl Connection<'_> {
    /// Queues what a resumed session had in flight, to be sent first.
    fn resend(&mut self, resend: Vec<crate::broker::InFlight>) -> Result<(), End> {
        for f in resend {
            let written = if f.released {
                self.version.pubrel(&mut self.out, f.pkid)
            } else {
                self.write_publish(&f.msg, f.pkid, true)
            };
            written.map_err(encode_err)?;
        }
        Ok(())
    }

    /// Packets in, deliveries out, keep-alive; returns why the connection ended.
    ///
    /// Not an async fn, whose future would hold its arguments twice: this future is what an
    /// idle connection waits in.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn's future would keep a second copy of its arguments"
    )]
    fn run<'s, IO>(
        &'s mut self,
        io: &'s mut IO,
        reader: &'s mut Reader,
        keepalive: u16,
        signal: &'s ConnSignal,
    ) -> impl Future<Output = End> + 's
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        async move {
            // MQTT 3.1.1 §3.1.2.10, MQTT 5 §3.1.2.10: the server disconnects after one and a
            // half keep-alive periods without a packet. The timer is set once and, when it
            // fires, moved to the last read's deadline if there was one since: no timer work
            // per packet, and none at all for a client without keep-alive.
            let idle_limit = Duration::from_millis(u64::from(keepalive) * 1500);
            let mut last_read = Instant::now();
            let mut timer =
                (keepalive > 0).then(|| Box::pin(tokio::time::sleep_until(last_read + idle_limit)));

            loop {
                // The broker's close (takeover, kick, shutdown) comes before anything else.
                if let Some(end) = closed(signal) {
                    return end;
                }
                // Packets already buffered (pipelined after CONNECT, or several in one read).
                loop {
                    let packet = match reader.next(self.version, max_packet(self.broker)) {
                        Ok(Some(packet)) => packet,
                        Ok(None) => break,
                        Err(end) => return end,
                    };
                    if let Some(end) = self.handle(packet) {
                        let _ = send(io, &mut self.out).await;
                        return end;
                    }
                }
                if let Err(end) = send(io, &mut self.out).await {
                    return end;
                }

                // Reads before deliveries: a subscriber's acknowledgements make room for more.
                tokio::select! {
                    biased;
                    filled = reader.fill(io) => match filled {
                        Ok(true) => {
                            if timer.is_some() {
                                last_read = Instant::now();
                            }
                        }
                        Ok(false) => return End::Closed,
                        Err(end) => return end,
                    },
                    () = signal.notified() => {
                        if let Some(end) = closed(signal) {
                            return end;
                        }
                        if let Err(end) = self.pull(signal) {
                            return end;
                        }
                    }
                    () = expiry(&mut timer) => {
                        let due = last_read + idle_limit;
                        if due <= Instant::now() {
                            return End::KeepaliveTimeout(idle_limit);
                        }
                        if let Some(timer) = timer.as_mut() {
                            timer.as_mut().reset(due);
                        }
                    }
                }
            }
        }
    }

    /// Writes a PUBLISH unless it exceeds the client's Maximum Packet Size; such a message
    /// is dropped as if it had been delivered [MQTT-3.1.2-25].
    fn write_publish(
        &mut self,
        msg: &Delivery,
        pkid: u16,
        dup: bool,
    ) -> Result<(), codec::EncodeError> {
        // Topic aliases towards the client, up to its Topic Alias Maximum: the first message
        // on a topic sets one, the next ones send it with an empty topic (MQTT 5 §3.3.2.3.4).
        let outbound = self.aliases.as_ref().map(|a| &a.outbound);
        let known = outbound.and_then(|o| o.get(&msg.topic).copied());
        let set = outbound.map_or(0, HashMap::len);
        let new_alias = match known {
            None if set < usize::from(self.client_alias_max) => u16::try_from(set + 1).ok(),
            _ => None,
        };
        let alias = known.map(|a| (a, false)).or(new_alias.map(|a| (a, true)));
        let start = self.out.len();
        self.version.publish(
            &mut self.out,
            msg,
            pkid,
            dup,
            std::time::Instant::now(),
            alias,
        )?;
        if self.out.len() - start > self.client_max_packet {
            self.out.truncate(start);
            tracing::debug!(client = %self.info.clientid.as_str(), topic = %msg.topic, "message larger than the client's Maximum Packet Size: dropped");
            if msg.qos != QoS::AtMostOnce {
                self.broker
                    .discard(self.info.clientid.as_str(), self.conn_id, pkid);
            }
        } else {
            self.info.counters.sent_message();
            if let Some(alias) = new_alias {
                self.aliases
                    .get_or_insert_with(Box::default)
                    .outbound
                    .insert(Arc::clone(&msg.topic), alias);
            }
        }
        Ok(())
    }

    /// Sends what the session's queue holds, within the client's Receive Maximum.
    fn pull(&mut self, signal: &ConnSignal) -> Result<(), End> {
        let batch = self.broker.take(
            self.info.clientid.as_str(),
            self.conn_id,
            self.receive_max,
            BATCH,
        );
        if batch.len() == BATCH {
            // More may be waiting: come back after this batch is written.
            signal.wake();
        }
        for outgoing in batch {
            self.write_publish(&outgoing.msg, outgoing.pkid, false)
                .map_err(encode_err)?;
        }
        Ok(())
    }

    /// Handles one packet; `Some` ends the connection.
    fn handle(&mut self, packet: Inbound) -> Option<End> {
        let (version, out) = (self.version, &mut self.out);
        let written = match packet {
            Inbound::Publish {
                has_subscription_id: true,
                ..
            } => {
                // [MQTT-3.3.4-6]: only a server sends Subscription Identifiers.
                return Some(End::Protocol(String::from(
                    "Subscription Identifier in a PUBLISH from the client",
                )));
            }
            Inbound::Publish {
                mut topic,
                payload,
                qos,
                retain,
                pkid,
                props,
                topic_alias,
                ..
            } => {
                self.info.counters.received_message();
                if let Some(alias) = topic_alias {
                    let max = self.broker.limits().topic_alias_maximum;
                    if alias == 0 || alias > max {
                        // [MQTT-3.3.2-8], [MQTT-3.3.2-9]: 0x94.
                        return Some(End::TopicAlias("0 or above the Topic Alias Maximum"));
                    }
                    if topic.is_empty() {
                        match self.aliases.as_ref().and_then(|a| a.inbound.get(&alias)) {
                            Some(known) => topic.clone_from(known),
                            None => {
                                return Some(End::Protocol(String::from(
                                    "empty topic with a topic alias that was never set",
                                )));
                            }
                        }
                    } else {
                        self.aliases
                            .get_or_insert_with(Box::default)
                            .inbound
                            .insert(alias, topic.clone());
                    }
                }
                if !valid_topic(&topic) {
                    return Some(End::Protocol(String::from("invalid topic name in PUBLISH")));
                }
                let limits = self.broker.limits();
                if (qos as u8) > (limits.max_qos as u8) && version == Version::V5 {
                    // [MQTT-3.2.2-11]: above the Maximum QoS of CONNACK.
                    return Some(End::Limit(
                        DisconnectReason::QosNotSupported,
                        "QoS not supported: PUBLISH above the broker's Maximum QoS",
                    ));
                }
                let msg = Delivery {
                    topic: Arc::from(topic.as_str()),
                    payload,
                    qos,
                    retain,
                    props: Arc::new(props),
                    sub_ids: Vec::new(),
                };
                match qos {
                    QoS::AtMostOnce => {
                        self.broker.publish(Some(self.info.clientid.as_str()), msg);
                        Ok(())
                    }
                    QoS::AtLeastOnce => {
                        self.broker.publish(Some(self.info.clientid.as_str()), msg);
                        version.puback(out, pkid)
                    }
                    QoS::ExactlyOnce => {
                        // Delivered on the first receipt only; a re-sent PUBLISH (same
                        // packet identifier, before PUBREL) is only acknowledged again.
                        let (new, unreleased) = self.broker.inbound_qos2(
                            self.info.clientid.as_str(),
                            self.conn_id,
                            pkid,
                        );
                        if unreleased > usize::from(limits.receive_maximum)
                            && version == Version::V5
                        {
                            // [MQTT-3.3.4-8]: more unacknowledged QoS 2 PUBLISHes than the
                            // Receive Maximum of CONNACK.
                            return Some(End::Limit(
                                DisconnectReason::ReceiveMaximumExceeded,
                                "receive maximum exceeded",
                            ));
                        }
                        if new {
                            self.broker.publish(Some(self.info.clientid.as_str()), msg);
                        }
                        version.pubrec(out, pkid)
                    }
                }
            }
            Inbound::PubRel(pkid) => {
                self.broker
                    .inbound_release(self.info.clientid.as_str(), self.conn_id, pkid);
                version.pubcomp(out, pkid)
            }
            Inbound::PubAck(pkid) => {
                self.broker
                    .puback(self.info.clientid.as_str(), self.conn_id, pkid);
                Ok(())
            }
            Inbound::PubRec { pkid, failed } => {
                self.broker
                    .pubrec(self.info.clientid.as_str(), self.conn_id, pkid, failed);
                if failed {
                    Ok(())
                } else {
                    version.pubrel(out, pkid)
                }
            }
            Inbound::PubComp(pkid) => {
                self.broker
                    .pubcomp(self.info.clientid.as_str(), self.conn_id, pkid);
                Ok(())
            }
            Inbound::Subscribe { pkid, filters } => {
                let mut granted = Vec::with_capacity(filters.len());
                let mut accepted = Vec::with_capacity(filters.len());
                for (filter, mut opts) in filters {
                    let shared = filter.starts_with("$share/");
                    if shared && opts.no_local && version == Version::V5 {
                        // [MQTT-3.8.3-4].
                        return Some(End::Protocol(String::from(
                            "No Local on a shared subscription",
                        )));
                    }
                    let valid = if shared {
                        shared_filter(&filter).is_some()
                    } else {
                        valid_filter(&filter)
                    };
                    if valid {
                        opts.qos = min_qos(opts.qos, self.broker.limits().max_qos);
                        granted.push(Some(opts.qos));
                        accepted.push((filter, opts));
                    } else {
                        granted.push(None);
                    }
                }
                // SUBACK first; the retained messages are queued and follow it.
                if let Err(e) = version.suback(out, pkid, &granted) {
                    return Some(encode_err(e));
                }
                self.broker
                    .subscribe(self.info.clientid.as_str(), &accepted);
                tracing::debug!(client = %self.info.clientid.as_str(), filters = ?accepted, "subscribed");
                Ok(())
            }
            Inbound::Unsubscribe { pkid, filters } => {
                self.broker
                    .unsubscribe(self.info.clientid.as_str(), &filters);
                version.unsuback(out, pkid, filters.len())
            }
            Inbound::PingReq => version.pingresp(out),
            Inbound::Disconnect {
                session_expiry: Some(secs),
                ..
            } if secs > 0 && self.session_expiry.is_none() => {
                // [MQTT-3.14.2-2]: a session that ends with the connection cannot be made
                // to outlive it by DISCONNECT.
                return Some(End::Protocol(String::from(
                    "DISCONNECT sets a Session Expiry Interval after CONNECT set 0",
                )));
            }
            Inbound::Disconnect {
                will,
                session_expiry,
            } => {
                self.disconnect_expiry = session_expiry;
                return Some(if will {
                    End::NormalWithWill
                } else {
                    End::Normal
                });
            }
            Inbound::Connect => return Some(End::Protocol(String::from("second CONNECT"))),
            Inbound::ServerOnly => {
                return Some(End::Protocol(String::from(
                    "server-to-client packet sent by the client",
                )));
            }
        };
        written.err().map(encode_err)
    }
}

/// A random-enough id for clients that leave theirs empty.
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codecs must turn any byte soup into packets or errors, never a panic: a panic
    /// would end the connection task without its cleanup.
    #[test]
    fn random_bytes_never_panic_the_decoders() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200_000 {
            let len = (next() % 48) as usize;
            let mut bytes = BytesMut::with_capacity(len);
            for _ in 0..len {
                bytes.extend_from_slice(&[next() as u8]);
            }
            // Keep remaining lengths small so that whole packets are often complete.
            if len > 1 {
                bytes[1] &= 0x3F;
                bytes[1] = bytes[1].min(len as u8 - 2);
            }
            let _ = connect_protocol(&bytes);
            let version = if round % 2 == 0 {
                Version::V4
            } else {
                Version::V5
            };
            let mut first = bytes.clone();
            let _ = codec::decode_connect(version, &mut first, 1 << 20);
            let mut reader = Reader {
                buf: bytes,
                chunk: MIN_READ,
            };
            while let Ok(Some(_)) = reader.next(version, 1 << 20) {}
        }
    }

    #[tokio::test]
    async fn reader_grows_for_a_large_packet_then_holds_min_read_when_idle() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        // A 100,000-byte PUBLISH (MQTT 3.1.1, QoS 0, topic "t"), then a PINGREQ.
        // Remaining length 100,003 = 0x23 + 0x0d·128 + 0x06·128², as MQTT's variable byte integer.
        let mut frame = vec![0x30, 0xa3, 0x8d, 0x06];
        frame.extend_from_slice(&[0x00, 0x01, b't']);
        frame.extend(std::iter::repeat_n(7u8, 100_000));
        client.write_all(&frame).await.unwrap();
        let mut reader = Reader::new();
        let mut reads = 0;
        while reader.next(Version::V4, 1 << 20).unwrap().is_none() {
            assert!(reader.fill(&mut server).await.unwrap());
            reads += 1;
        }
        assert!(reads < 20, "{reads} reads for 100 kB");
        assert!(reader.buf.is_empty());
        client.write_all(&[0xc0, 0x00]).await.unwrap();
        assert!(reader.fill(&mut server).await.unwrap());
        assert!(reader.next(Version::V4, 1 << 20).unwrap().is_some());
        // Idle again: the next read waits with MIN_READ bytes, not the burst's buffer.
        client.write_all(&[0xc0, 0x00]).await.unwrap();
        assert!(reader.fill(&mut server).await.unwrap());
        assert!(
            reader.buf.capacity() <= MIN_READ,
            "{}",
            reader.buf.capacity()
        );
        assert!(reader.next(Version::V4, 1 << 20).unwrap().is_some());
    }

    #[tokio::test]
    async fn a_waiting_read_holds_no_buffer() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut reader = Reader::new();
        client.write_all(&[0xc0, 0x00]).await.unwrap();
        assert!(reader.fill(&mut server).await.unwrap());
        assert!(matches!(
            reader.next(Version::V4, 1 << 20),
            Ok(Some(Inbound::PingReq))
        ));
        // Nothing more arrives: the read waits without a buffer...
        let waited = tokio::time::timeout(Duration::from_millis(20), reader.fill(&mut server));
        assert!(waited.await.is_err());
        assert_eq!(reader.buf.capacity(), 0);
        // ...and reads what comes next, whole.
        client.write_all(&[0xc0, 0x00, 0xe0, 0x00]).await.unwrap();
        assert!(reader.fill(&mut server).await.unwrap());
        assert!(matches!(
            reader.next(Version::V4, 1 << 20),
            Ok(Some(Inbound::PingReq))
        ));
        assert!(matches!(
            reader.next(Version::V4, 1 << 20),
            Ok(Some(Inbound::Disconnect { .. }))
        ));
    }

    /// Bytes of a session's future over TCP (tokio adds its task header and trailer).
    const SESSION_FUTURE_MAX: usize = 640;

    /// The size of what `f` returns, without calling it.
    fn returned_size<F, A, B, C, D, R>(_: F) -> usize
    where
        F: FnOnce(A, B, C, D) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// Every connected session keeps its task, and the task its future, for as long as it
    /// lives: the future must not carry the state of the CONNECT phase, of writes that wait
    /// or of closing, which are boxed while they run.
    #[test]
    fn a_session_future_stays_small() {
        let tcp = returned_size(run::<tokio::net::TcpStream>);
        assert!(tcp <= SESSION_FUTURE_MAX, "{tcp} bytes");
    }

    #[test]
    fn protocol_level_is_read_before_decoding() {
        let mut v4 = BytesMut::new();
        rumqttc::mqttbytes::v4::Connect::new("c")
            .write(&mut v4)
            .unwrap();
        assert_eq!(connect_protocol(&v4), Some((&b"MQTT"[..], 4)));
        assert_eq!(connect_protocol(&v4[..8]), None, "level not there yet");
        let mut v5 = BytesMut::new();
        let connect = rumqttc::v5::mqttbytes::v5::Connect {
            keep_alive: 10,
            client_id: "c".into(),
            clean_start: true,
            properties: None,
        };
        connect.write(&None, &None, &mut v5).unwrap();
        assert_eq!(connect_protocol(&v5), Some((&b"MQTT"[..], 5)));
        let v31 = [
            0x10, 0x0f, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03,
        ];
        assert_eq!(connect_protocol(&v31), Some((&b"MQIsdp"[..], 3)));
        assert_eq!(connect_protocol(&[0x30, 0x00]), None, "not a CONNECT");
        assert_eq!(
            connect_protocol(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            None
        );
    }
}
