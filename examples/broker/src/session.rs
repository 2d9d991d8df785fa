//! One MQTT 3.1.1 connection, over any byte stream (TCP, PROXY protocol, WebSocket).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use mqttbytes::QoS;
use mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Packet, PingResp, PubAck, PubComp, PubRec,
    Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::broker::{
    Broker, ClientInfo, CloseReason, ConnMeta, Delivery, min_qos, valid_filter, valid_topic,
};

/// Time a new connection has to send CONNECT.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that does not read what it is sent for this long is disconnected.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest accepted packet (remaining length).
pub(crate) const MAX_PACKET_SIZE: usize = 1024 * 1024;

/// Why a connection ended, for the audit log.
#[derive(Debug)]
enum End {
    /// The client sent DISCONNECT.
    Normal,
    /// The socket closed without DISCONNECT.
    Closed,
    KeepaliveTimeout(Duration),
    Malformed(String),
    Protocol(&'static str),
    UnsupportedProtocol(u8),
    Io(std::io::Error),
    WriteTimeout,
    Broker(CloseReason),
    Shutdown,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Normal => f.write_str("normal"),
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

/// Reads MQTT packets from a stream, buffering partial packets.
#[derive(Debug)]
struct Reader {
    buf: BytesMut,
}

impl Reader {
    fn new() -> Self {
        Self {
            buf: BytesMut::with_capacity(4096),
        }
    }

    /// The next complete packet already buffered, if any.
    fn next(&mut self) -> Result<Option<Packet>, End> {
        match mqttbytes::v4::read(&mut self.buf, MAX_PACKET_SIZE) {
            Ok(packet) => Ok(Some(packet)),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(End::Malformed(format!("{e:?}"))),
        }
    }

    /// Reads more bytes; `Ok(false)` at end of stream. Cancel safe.
    async fn fill<IO: AsyncRead + Unpin>(&mut self, io: &mut IO) -> Result<bool, End> {
        self.buf.reserve(4096);
        match io.read_buf(&mut self.buf).await {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(End::Io(e)),
        }
    }
}

async fn send<IO: AsyncWrite + Unpin>(io: &mut IO, out: &mut BytesMut) -> Result<(), End> {
    if out.is_empty() {
        return Ok(());
    }
    let write = async {
        io.write_all(out).await?;
        io.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => {
            out.clear();
            Ok(())
        }
        Ok(Err(e)) => Err(End::Io(e)),
        Err(_) => Err(End::WriteTimeout),
    }
}

fn encode_err(e: mqttbytes::Error) -> End {
    End::Malformed(format!("cannot encode: {e:?}"))
}

/// Serves one connection until it ends. Never returns an error: the end is logged.
pub(crate) async fn run<IO>(mut io: IO, meta: ConnMeta, broker: Arc<Broker>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let _guard = broker.track();
    let mut shutdown = broker.shutdown_signal();
    if *shutdown.borrow_and_update() {
        return;
    }
    let mut reader = Reader::new();

    // CONNECT first, within CONNECT_TIMEOUT.
    let first = tokio::select! {
        first = tokio::time::timeout(CONNECT_TIMEOUT, read_first(&mut io, &mut reader)) => first,
        _ = shutdown.changed() => return,
    };
    let connect = match first {
        Err(_) => {
            tracing::debug!(peername = %meta.client, socket_peer = %meta.socket_peer, listener = meta.listener, "no CONNECT in time, closing");
            return;
        }
        Ok(Err(end @ (End::Closed | End::Io(_)))) => {
            // A load balancer's probe: connect and close (or reset).
            tracing::debug!(peername = %meta.client, socket_peer = %meta.socket_peer, listener = meta.listener, reason = %end, "closed before CONNECT");
            return;
        }
        Ok(Err(End::UnsupportedProtocol(level))) => {
            tracing::warn!(peername = %meta.client, socket_peer = %meta.socket_peer, listener = meta.listener, protocol_level = level, "unsupported protocol version, only MQTT 3.1.1 (level 4) is served");
            if level == 5 {
                // An MQTT 5 client reads a v5 CONNACK: reason 0x84, no properties.
                let mut out = BytesMut::from(&[0x20, 0x03, 0x00, 0x84, 0x00][..]);
                let _ = send(&mut io, &mut out).await;
            } else {
                let _ = connack(&mut io, ConnectReturnCode::RefusedProtocolVersion, false).await;
            }
            return;
        }
        Ok(Err(end)) => {
            tracing::warn!(peername = %meta.client, socket_peer = %meta.socket_peer, listener = meta.listener, reason = %end, "bad first packet, closing");
            return;
        }
        Ok(Ok(connect)) => connect,
    };
    if connect.protocol != mqttbytes::Protocol::V4 {
        tracing::warn!(peername = %meta.client, socket_peer = %meta.socket_peer, listener = meta.listener, "MQTT 5 CONNECT refused: only MQTT 3.1.1 is served");
        let _ = connack(&mut io, ConnectReturnCode::RefusedProtocolVersion, false).await;
        return;
    }

    let mut clientid = connect.client_id.clone();
    if clientid.is_empty() {
        if !connect.clean_session {
            tracing::warn!(peername = %meta.client, socket_peer = %meta.socket_peer, listener = meta.listener, reason = "empty client id with clean session = 0", "client refused");
            let _ = connack(&mut io, ConnectReturnCode::BadClientId, false).await;
            return;
        }
        clientid = format!("realip-{:016x}", rand_id());
    }

    if let Err(reason) = broker.acl().check(meta.client.ip()) {
        tracing::warn!(
            target: "realip_broker::audit",
            event = "denied",
            client = %clientid,
            peername = %meta.client,
            socket_peer = %meta.socket_peer,
            listener = meta.listener,
            reason = %reason,
            "client denied"
        );
        let _ = connack(&mut io, ConnectReturnCode::NotAuthorized, false).await;
        close(&mut io).await;
        return;
    }

    let info = ClientInfo {
        clientid: clientid.clone(),
        meta: meta.clone(),
        proto_ver: 4,
        keepalive: connect.keep_alive,
        clean_session: connect.clean_session,
        connected_at: SystemTime::now(),
    };
    let registration = broker.register(info);
    let conn_id = registration.conn_id;
    // Unregisters even if this task panics (the explicit call below runs first normally).
    let _registered = Registered {
        broker: &broker,
        clientid: &clientid,
        conn_id,
    };
    tracing::info!(
        target: "realip_broker::audit",
        event = "connected",
        client = %clientid,
        peername = %meta.client,
        socket_peer = %meta.socket_peer,
        listener = meta.listener,
        source = %meta.client.source(),
        keepalive = connect.keep_alive,
        clean_session = connect.clean_session,
        "client connected"
    );

    let mut will = connect.last_will.clone();
    let end = match connack(
        &mut io,
        ConnectReturnCode::Success,
        registration.session_present,
    )
    .await
    {
        Ok(()) => {
            connected(
                &mut io,
                &mut reader,
                &broker,
                &clientid,
                connect.keep_alive,
                registration,
                &mut shutdown,
            )
            .await
        }
        Err(end) => end,
    };

    broker.unregister(&clientid, conn_id);
    if matches!(end, End::Normal) {
        will = None;
    }
    if let Some(LastWill {
        topic,
        message,
        qos,
        retain,
    }) = will
    {
        if valid_topic(&topic) {
            tracing::debug!(client = %clientid, topic = %topic, "publishing will message");
            broker.publish(&topic, message, min_qos(qos, QoS::AtLeastOnce), retain);
        }
    }
    close(&mut io).await;
    let level_info = matches!(
        end,
        End::Normal | End::Closed | End::Broker(_) | End::Shutdown | End::KeepaliveTimeout(_)
    );
    if level_info {
        tracing::info!(
            target: "realip_broker::audit",
            event = "disconnected",
            client = %clientid,
            peername = %meta.client,
            socket_peer = %meta.socket_peer,
            listener = meta.listener,
            reason = %end,
            "client disconnected"
        );
    } else {
        tracing::warn!(
            target: "realip_broker::audit",
            event = "disconnected",
            client = %clientid,
            peername = %meta.client,
            socket_peer = %meta.socket_peer,
            listener = meta.listener,
            reason = %end,
            "client disconnected"
        );
    }
}

/// Shuts the stream down (TCP FIN, WebSocket close frame) without waiting on a peer that
/// does not read.
async fn close<IO: AsyncWrite + Unpin>(io: &mut IO) {
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}

/// Removes the connection from the broker when dropped.
struct Registered<'a> {
    broker: &'a Broker,
    clientid: &'a str,
    conn_id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.broker.unregister(self.clientid, self.conn_id);
    }
}

async fn read_first<IO: AsyncRead + Unpin>(
    io: &mut IO,
    reader: &mut Reader,
) -> Result<Connect, End> {
    loop {
        if let Some((name, level)) = connect_protocol(&reader.buf) {
            if name != b"MQTT" || level != 4 {
                return Err(End::UnsupportedProtocol(level));
            }
        }
        match reader.next()? {
            Some(Packet::Connect(connect)) => return Ok(connect),
            Some(_) => return Err(End::Protocol("first packet is not CONNECT")),
            None => {
                if !reader.fill(io).await? {
                    return Err(End::Closed);
                }
            }
        }
    }
}

/// The protocol name and level of a CONNECT at the start of `buf`, once they have arrived.
///
/// Read before decoding, so that MQTT 5 and 3.1 clients get a proper refusal instead of a
/// decoding error from the 3.1.1 codec.
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
    code: ConnectReturnCode,
    session_present: bool,
) -> Result<(), End> {
    let mut out = BytesMut::new();
    ConnAck::new(code, session_present)
        .write(&mut out)
        .map_err(encode_err)?;
    send(io, &mut out).await
}

/// The CONNECTed part of a connection: packets in, deliveries out, keep-alive.
async fn connected<IO>(
    io: &mut IO,
    reader: &mut Reader,
    broker: &Broker,
    clientid: &str,
    keepalive: u16,
    registration: crate::broker::Registration,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> End
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut rx = registration.rx;
    let mut close = registration.close;
    // MQTT 3.1.1 §3.1.2.10: the server disconnects after one and a half keep-alive periods.
    let idle_limit = (keepalive > 0).then(|| Duration::from_millis(u64::from(keepalive) * 1500));
    let far_future = Duration::from_secs(86400 * 365);
    let mut deadline = Instant::now() + idle_limit.unwrap_or(far_future);
    let mut out = BytesMut::new();
    let mut next_pkid: u16 = 0;

    loop {
        // Packets already buffered (pipelined after CONNECT, or several in one read).
        loop {
            match reader.next() {
                Ok(Some(packet)) => {
                    if let Some(end) = handle(packet, broker, clientid, &mut next_pkid, &mut out) {
                        let _ = send(io, &mut out).await;
                        return end;
                    }
                }
                Ok(None) => break,
                Err(end) => return end,
            }
        }
        if let Err(end) = send(io, &mut out).await {
            return end;
        }

        tokio::select! {
            biased;
            reason = &mut close => {
                return match reason {
                    Ok(reason) => End::Broker(reason),
                    Err(_) => End::Shutdown,
                };
            }
            _ = shutdown.changed() => return End::Shutdown,
            filled = reader.fill(io) => match filled {
                Ok(true) => {
                    if let Some(limit) = idle_limit {
                        deadline = Instant::now() + limit;
                    }
                }
                Ok(false) => return End::Closed,
                Err(end) => return end,
            },
            delivery = rx.recv() => {
                let Some(delivery) = delivery else {
                    // The broker dropped this connection's queue: taken over or kicked.
                    return match close.try_recv() {
                        Ok(reason) => End::Broker(reason),
                        Err(_) => End::Shutdown,
                    };
                };
                if let Err(end) = write_delivery(delivery, &mut next_pkid, &mut out) {
                    return end;
                }
                // Batch whatever else is queued.
                while let Ok(delivery) = rx.try_recv() {
                    if let Err(end) = write_delivery(delivery, &mut next_pkid, &mut out) {
                        return end;
                    }
                    if out.len() > 64 * 1024 {
                        break;
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return End::KeepaliveTimeout(idle_limit.unwrap_or(far_future));
            }
        }
    }
}

fn write_delivery(delivery: Delivery, next_pkid: &mut u16, out: &mut BytesMut) -> Result<(), End> {
    let mut publish = Publish::from_bytes(&*delivery.topic, delivery.qos, delivery.payload);
    publish.retain = delivery.retain;
    if delivery.qos != QoS::AtMostOnce {
        *next_pkid = next_pkid.wrapping_add(1).max(1);
        publish.pkid = *next_pkid;
    }
    publish.write(out).map(drop).map_err(encode_err)
}

/// Handles one packet from a CONNECTed client; `Some` ends the connection.
fn handle(
    packet: Packet,
    broker: &Broker,
    clientid: &str,
    next_pkid: &mut u16,
    out: &mut BytesMut,
) -> Option<End> {
    let written = match packet {
        Packet::Publish(publish) => {
            if !valid_topic(&publish.topic) {
                return Some(End::Protocol("invalid topic name in PUBLISH"));
            }
            let (qos, pkid) = (publish.qos, publish.pkid);
            broker.publish(&publish.topic, publish.payload, qos, publish.retain);
            match qos {
                QoS::AtMostOnce => Ok(0),
                QoS::AtLeastOnce => PubAck::new(pkid).write(out),
                // Delivered on receipt; PUBREL is answered with PUBCOMP below.
                QoS::ExactlyOnce => PubRec::new(pkid).write(out),
            }
        }
        Packet::PubRel(rel) => PubComp::new(rel.pkid).write(out),
        // Our QoS 1 deliveries are fire-and-forget in memory; nothing to retransmit.
        Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => Ok(0),
        Packet::Subscribe(subscribe) => {
            let mut granted = Vec::with_capacity(subscribe.filters.len());
            let mut accepted = Vec::with_capacity(subscribe.filters.len());
            for filter in subscribe.filters {
                if valid_filter(&filter.path) {
                    let qos = min_qos(filter.qos, QoS::AtLeastOnce);
                    granted.push(SubscribeReasonCode::Success(qos));
                    accepted.push((filter.path, qos));
                } else {
                    granted.push(SubscribeReasonCode::Failure);
                }
            }
            if granted.is_empty() {
                return Some(End::Protocol("SUBSCRIBE without topic filters"));
            }
            let retained = broker.subscribe(clientid, &accepted);
            tracing::debug!(client = %clientid, filters = ?accepted, "subscribed");
            if let Err(e) = SubAck::new(subscribe.pkid, granted).write(out) {
                return Some(encode_err(e));
            }
            for delivery in retained {
                if let Err(end) = write_delivery(delivery, next_pkid, out) {
                    return Some(end);
                }
            }
            Ok(0)
        }
        Packet::Unsubscribe(unsubscribe) => {
            broker.unsubscribe(clientid, &unsubscribe.topics);
            UnsubAck::new(unsubscribe.pkid).write(out)
        }
        Packet::PingReq => PingResp.write(out),
        Packet::Disconnect => return Some(End::Normal),
        Packet::Connect(_) => return Some(End::Protocol("second CONNECT")),
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            return Some(End::Protocol("server-to-client packet sent by the client"));
        }
    };
    written.err().map(encode_err)
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

    /// The codec must turn any byte soup into packets or errors, never a panic: a panic
    /// would end the connection task without its cleanup.
    #[test]
    fn random_bytes_never_panic_the_decoder() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200_000 {
            let len = (next() % 48) as usize;
            let mut bytes = BytesMut::with_capacity(len);
            for _ in 0..len {
                let b = next() as u8;
                // Bias the first byte towards real packet types and small lengths.
                bytes.extend_from_slice(&[b]);
            }
            if len > 1 {
                bytes[1] &= 0x3F;
                bytes[1] = bytes[1].min(len as u8 - 2);
            }
            let mut reader = Reader { buf: bytes };
            while let Ok(Some(_)) = reader.next() {}
            let _ = connect_protocol(&reader.buf);
        }
    }

    #[test]
    fn protocol_level_is_read_before_decoding() {
        let mut v4 = BytesMut::new();
        Connect::new("c").write(&mut v4).unwrap();
        assert_eq!(connect_protocol(&v4), Some((&b"MQTT"[..], 4)));
        assert_eq!(connect_protocol(&v4[..8]), None, "level not there yet");
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
