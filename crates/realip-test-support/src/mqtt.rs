//! Raw MQTT 3.1.1 and WebSocket clients (on the codec the broker uses, rumqttc's
//! `mqttbytes`) for what real clients cannot express: PROXY headers, garbage bytes, silence.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{self, Connect, Packet, Publish, Subscribe};

use crate::net::bind_connect;
use crate::wait::STEP_TIMEOUT;

/// A raw MQTT 3.1.1 client over a blocking TCP stream.
#[derive(Debug)]
pub struct RawClient {
    /// The connection to the broker.
    pub stream: TcpStream,
    buf: BytesMut,
    next_pkid: u16,
}

impl RawClient {
    /// Connects from `bind` (a loopback address such as 127.0.0.101), sends `prefix` (e.g. a
    /// PROXY header) and nothing else.
    pub fn connect_from(bind: &str, to: SocketAddr, prefix: &[u8]) -> Self {
        let stream = bind_connect(bind, to);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let mut client = Self {
            stream,
            buf: BytesMut::new(),
            next_pkid: 0,
        };
        if !prefix.is_empty() {
            client.stream.write_all(prefix).unwrap();
        }
        client
    }

    /// The client's own address.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    /// Encodes and sends `packet`.
    pub fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        match packet {
            Packet::Connect(p) => p.write(&mut out),
            Packet::Publish(p) => p.write(&mut out),
            Packet::Subscribe(p) => p.write(&mut out),
            Packet::PubAck(p) => p.write(&mut out),
            Packet::PubRec(p) => p.write(&mut out),
            Packet::PubRel(p) => p.write(&mut out),
            Packet::PubComp(p) => p.write(&mut out),
            Packet::PingReq => v4::PingReq.write(&mut out),
            Packet::Disconnect => v4::Disconnect.write(&mut out),
            other => panic!("raw client cannot send {other:?}"),
        }
        .unwrap();
        self.stream.write_all(&out).unwrap();
    }

    /// Sends raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next packet; `None` when the broker closed the connection.
    pub fn recv(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.buf, 1 << 20) {
                Ok(packet) => return Some(packet),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("broker sent a malformed packet: {e:?}"),
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read from broker: {e}"),
            }
        }
    }

    /// CONNECT and return the CONNACK return code (0 = accepted).
    pub fn handshake(&mut self, connect: Connect) -> u8 {
        self.send(Packet::Connect(connect));
        match self.recv() {
            Some(Packet::ConnAck(ack)) => ack.code as u8,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// SUBSCRIBE to `filter` and wait for the SUBACK.
    pub fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.next_pkid += 1;
        let mut subscribe = Subscribe::new(filter, qos);
        subscribe.pkid = self.next_pkid;
        self.send(Packet::Subscribe(subscribe));
        match self.recv() {
            Some(Packet::SubAck(ack)) => assert_eq!(ack.pkid, self.next_pkid),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// PUBLISH, waiting for the PUBACK at QoS 1.
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let mut publish = Publish::new(topic, qos, payload.to_vec());
        publish.retain = retain;
        if qos != QoS::AtMostOnce {
            self.next_pkid += 1;
            publish.pkid = self.next_pkid;
        }
        self.send(Packet::Publish(publish));
        if qos == QoS::AtLeastOnce {
            match self.recv() {
                Some(Packet::PubAck(ack)) => assert_eq!(ack.pkid, self.next_pkid),
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }

    /// The next PUBLISH (acknowledging QoS 1).
    pub fn next_publish(&mut self) -> Publish {
        match self.recv() {
            Some(Packet::Publish(p)) => {
                if p.qos == QoS::AtLeastOnce {
                    self.send(Packet::PubAck(v4::PubAck::new(p.pkid)));
                }
                p
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// PINGREQ, expecting a PINGRESP.
    pub fn ping(&mut self) {
        self.send(Packet::PingReq);
        assert!(matches!(self.recv(), Some(Packet::PingResp)));
    }
}

/// A CONNECT for `clientid` (clean session) with `keep_alive` seconds.
pub fn connect_packet(clientid: &str, keep_alive: u16) -> Connect {
    let mut connect = Connect::new(clientid);
    connect.keep_alive = keep_alive;
    connect
}

/// A minimal WebSocket client: PROXY header, upgrade request, masked binary frames.
#[derive(Debug)]
pub struct WsClient {
    /// The connection to the server.
    pub stream: TcpStream,
}

impl WsClient {
    /// Connects from `bind`, sends `prefix` and an upgrade of `/mqtt` (subprotocol `mqtt`) with
    /// extra `headers` (`Name: value\r\n` lines), and checks the 101 answer.
    pub fn connect(bind: &str, to: SocketAddr, prefix: &[u8], headers: &str) -> Self {
        match Self::try_connect(bind, to, prefix, headers) {
            Some(client) => client,
            None => panic!("the server closed the WebSocket connection before answering"),
        }
    }

    /// Like [`connect`](Self::connect); `None` when the server closes the connection or
    /// refuses the upgrade.
    pub fn try_connect(bind: &str, to: SocketAddr, prefix: &[u8], headers: &str) -> Option<Self> {
        let mut stream = bind_connect(bind, to);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // Prefix and request in one write: a server that closes after the prefix must not
        // make the second write fail.
        let mut request = prefix.to_vec();
        write!(
            request,
            "GET /mqtt HTTP/1.1\r\nHost: {to}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\n{headers}\r\n"
        )
        .unwrap();
        if stream.write_all(&request).is_err() {
            return None;
        }
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read_exact(&mut byte).is_err() {
                return None;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        if !head.starts_with("HTTP/1.1 101") {
            // Refused (an HTTP error, after which the server closes).
            return None;
        }
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-protocol: mqtt"),
            "{head}"
        );
        Some(Self { stream })
    }

    /// Sends `payload` (under 126 bytes) in one masked binary frame.
    pub fn send(&mut self, payload: &[u8]) {
        assert!(payload.len() < 126);
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![0x82, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).unwrap();
    }

    /// The payload of the next frame, which must be a short final binary frame.
    pub fn recv(&mut self) -> Vec<u8> {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).unwrap();
        assert_eq!(head[0], 0x82, "expected a final binary frame");
        assert!(head[1] < 126);
        let mut payload = vec![0; head[1] as usize];
        self.stream.read_exact(&mut payload).unwrap();
        payload
    }
}

/// The bytes of an MQTT 3.1.1 CONNECT for `client_id` (clean session, keep-alive 30 s).
pub fn mqtt_connect_packet(client_id: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    connect_packet(client_id, 30)
        .write(&mut out)
        .expect("encode CONNECT");
    out.to_vec()
}

/// What a raw MQTT connection got back after sending CONNECT.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// CONNACK with this return code.
    Connack(u8),
    /// The broker closed (or reset) the connection without a CONNACK.
    Closed,
}

/// Sends `prefix` (e.g. a PROXY header) and a CONNECT for `client_id`, then reads the answer.
pub fn raw_mqtt_connect(stream: &mut TcpStream, prefix: &[u8], client_id: &str) -> ConnectOutcome {
    stream
        .set_read_timeout(Some(STEP_TIMEOUT))
        .expect("timeout");
    let mut bytes = prefix.to_vec();
    bytes.extend(mqtt_connect_packet(client_id));
    if stream.write_all(&bytes).is_err() {
        return ConnectOutcome::Closed;
    }
    let mut connack = [0u8; 4];
    match stream.read_exact(&mut connack) {
        Ok(()) => {
            assert_eq!(connack[0], 0x20, "expected CONNACK, got {connack:?}");
            ConnectOutcome::Connack(connack[3])
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            panic!("broker neither answered nor closed within {STEP_TIMEOUT:?}")
        }
        Err(_) => ConnectOutcome::Closed,
    }
}

/// Reads everything until the server closes the connection.
pub fn read_to_close(client: &mut RawClient) -> Vec<u8> {
    let mut rest = Vec::new();
    let _ = client.stream.read_to_end(&mut rest);
    rest
}

/// An MQTT 5 CONNECT with clean start and no properties.
pub fn v5_connect(client_id: &str, keep_alive: u16) -> Vec<u8> {
    v5_connect_with(client_id, keep_alive, None)
}

/// An MQTT 5 CONNECT with clean start and `properties`.
pub fn v5_connect_with(
    client_id: &str,
    keep_alive: u16,
    properties: Option<rumqttc::v5::mqttbytes::v5::ConnectProperties>,
) -> Vec<u8> {
    let connect = rumqttc::v5::mqttbytes::v5::Connect {
        keep_alive,
        client_id: client_id.to_owned(),
        clean_start: true,
        properties,
    };
    let mut out = BytesMut::new();
    connect
        .write(&None, &None, &mut out)
        .expect("encode CONNECT");
    out.to_vec()
}

/// An MQTT 5 QoS 0 PUBLISH of "x" with a Topic Alias (and `topic`, which may be empty).
pub fn v5_aliased_publish(topic: &str, alias: u16) -> Vec<u8> {
    use rumqttc::v5::mqttbytes::{QoS as V5QoS, v5};
    let properties = v5::PublishProperties {
        payload_format_indicator: None,
        message_expiry_interval: None,
        topic_alias: Some(alias),
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
        subscription_identifiers: Vec::new(),
        content_type: None,
    };
    let mut out = BytesMut::new();
    v5::Publish::new(topic, V5QoS::AtMostOnce, "x", Some(properties))
        .write(&mut out)
        .unwrap();
    out.to_vec()
}

/// Reads MQTT 5 packets from `client` until `n` PUBLISHes arrived, or until a read times out
/// (set a read timeout first); other packets are skipped.
pub fn v5_publishes(
    client: &mut RawClient,
    buf: &mut BytesMut,
    n: usize,
) -> Vec<rumqttc::v5::mqttbytes::v5::Publish> {
    use rumqttc::v5::mqttbytes::v5;
    let mut got = Vec::new();
    loop {
        match v5::Packet::read(buf, None) {
            Ok(v5::Packet::Publish(p)) => {
                got.push(p);
                if got.len() == n {
                    return got;
                }
                continue;
            }
            Ok(_) => continue,
            Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
        let mut chunk = [0u8; 4096];
        match client.stream.read(&mut chunk) {
            Ok(0) => panic!("the broker closed the connection"),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(_) => return got,
        }
    }
}
