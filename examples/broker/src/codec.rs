//! MQTT 3.1.1 and 5.0 packets (`rumqttc`'s `mqttbytes::v4` and `v5::mqttbytes::v5` codecs)
//! behind one small interface, so that a session does not care which version its client
//! speaks.
//!
//! Only what this broker uses is mapped. MQTT 5 properties are ignored on input except the
//! session expiry interval and topic aliases (refused: the broker announces none); on output
//! the CONNACK carries the capabilities the broker has, and server-side DISCONNECTs carry a
//! reason code.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self as mqtt, QoS, v4};
use rumqttc::v5::mqttbytes::{self as mqtt5, v5};

use std::time::Instant;

use crate::broker::{Delivery, Limits, MessageProps, SubOptions};
use crate::wellformed::{self, Violation};

/// The protocol version of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl Version {
    /// The protocol level, as the admin API shows it (`proto_ver`).
    pub(crate) const fn level(self) -> u8 {
        match self {
            Self::V4 => 4,
            Self::V5 => 5,
        }
    }
}

/// A decoding failure: the packet is malformed or not supported.
#[derive(Debug)]
pub(crate) struct DecodeError {
    pub(crate) message: String,
    /// MQTT 5 calls the fault a Protocol Error (0x82) rather than a Malformed Packet (0x81).
    pub(crate) protocol_error: bool,
    /// The packet exceeds the broker's Maximum Packet Size (MQTT 5: 0x95).
    pub(crate) too_large: bool,
}

impl DecodeError {
    fn malformed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            protocol_error: false,
            too_large: false,
        }
    }

    fn protocol(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            protocol_error: true,
            too_large: false,
        }
    }

    fn too_large(size: usize, max: usize) -> Self {
        Self {
            message: format!("{size} bytes, the maximum packet size is {max}"),
            protocol_error: false,
            too_large: true,
        }
    }
}

impl From<Violation> for DecodeError {
    fn from(v: Violation) -> Self {
        Self {
            message: v.message,
            protocol_error: v.protocol_error,
            too_large: false,
        }
    }
}

/// An encoding failure (a packet too large to express).
#[derive(Debug)]
pub(crate) struct EncodeError(pub(crate) String);

impl From<mqtt::Error> for EncodeError {
    fn from(e: mqtt::Error) -> Self {
        Self(format!("{e:?}"))
    }
}

impl From<mqtt5::Error> for EncodeError {
    fn from(e: mqtt5::Error) -> Self {
        Self(format!("{e:?}"))
    }
}

/// The parts of CONNECT the broker uses.
#[derive(Clone, Debug)]
pub(crate) struct Connect {
    pub(crate) client_id: String,
    /// The User Name, when the client sent one (the password is not kept).
    pub(crate) username: Option<String>,
    pub(crate) clean_start: bool,
    pub(crate) keep_alive: u16,
    /// 3.1.1: `!clean_session`; MQTT 5: session expiry interval > 0.
    pub(crate) persistent: bool,
    pub(crate) will: Option<Will>,
    /// MQTT 5 Session Expiry Interval (seconds); `None` when absent (0).
    pub(crate) session_expiry: Option<u32>,
    /// MQTT 5 Receive Maximum: QoS 1/2 PUBLISHes the client accepts in flight.
    pub(crate) receive_maximum: u16,
    /// MQTT 5 Maximum Packet Size the client accepts.
    pub(crate) max_packet_size: Option<u32>,
    /// MQTT 5 Topic Alias Maximum the client accepts.
    pub(crate) topic_alias_max: u16,
    /// MQTT 5 Authentication Method (enhanced authentication, which the broker lacks).
    pub(crate) auth_method: Option<String>,
}

/// A will message.
#[derive(Clone, Debug)]
pub(crate) struct Will {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    /// MQTT 5 will properties, forwarded with the will message [MQTT-3.1.3-10].
    pub(crate) props: MessageProps,
    /// MQTT 5 Message Expiry Interval of the will, counted from when it is published.
    pub(crate) message_expiry: Option<u32>,
    /// MQTT 5 Will Delay Interval (seconds).
    pub(crate) delay: u32,
}

/// A client-to-server packet after CONNECT.
#[derive(Debug)]
pub(crate) enum Inbound {
    Publish {
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        pkid: u16,
        /// MQTT 5: the Topic Alias property.
        topic_alias: Option<u16>,
        /// MQTT 5 properties to forward (expiry counted from now).
        props: MessageProps,
        /// MQTT 5: Subscription Identifiers, which only a server may send.
        has_subscription_id: bool,
    },
    PubRel(u16),
    PubAck(u16),
    /// PUBREC; `failed`: an MQTT 5 reason code of 0x80 or more.
    PubRec {
        pkid: u16,
        failed: bool,
    },
    PubComp(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<(String, SubOptions)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    /// DISCONNECT; `will` is MQTT 5's "disconnect with will message" (0x04).
    Disconnect {
        will: bool,
        /// MQTT 5: a new Session Expiry Interval.
        session_expiry: Option<u32>,
    },
    /// A second CONNECT.
    Connect,
    /// A packet only a server may send (CONNACK, SUBACK, UNSUBACK, PINGRESP).
    ServerOnly,
}

/// CONNACK outcomes the broker uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnackCode {
    Accepted,
    BadClientId,
    NotAuthorized,
    /// MQTT 5 0x86 Bad User Name or Password; 3.1.1 gets 0x05 Not authorized.
    BadUserNameOrPassword,
    /// MQTT 5 only.
    BadAuthenticationMethod,
}

/// Reasons for a server-side DISCONNECT (MQTT 5 only; 3.1.1 just closes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DisconnectReason {
    MalformedPacket,
    ProtocolError,
    KeepAliveTimeout,
    SessionTakenOver,
    AdministrativeAction,
    ServerShuttingDown,
    TopicAliasInvalid,
    PacketTooLarge,
    QosNotSupported,
    ReceiveMaximumExceeded,
}

impl DisconnectReason {
    const fn code(self) -> v5::DisconnectReasonCode {
        use v5::DisconnectReasonCode as C;
        match self {
            Self::MalformedPacket => C::MalformedPacket,
            Self::ProtocolError => C::ProtocolError,
            Self::KeepAliveTimeout => C::KeepAliveTimeout,
            Self::SessionTakenOver => C::SessionTakenOver,
            Self::AdministrativeAction => C::AdministrativeAction,
            Self::ServerShuttingDown => C::ServerShuttingDown,
            Self::TopicAliasInvalid => C::TopicAliasInvalid,
            Self::PacketTooLarge => C::PacketTooLarge,
            Self::QosNotSupported => C::QoSNotSupported,
            Self::ReceiveMaximumExceeded => C::ReceiveMaximumExceeded,
        }
    }
}

fn err(e: impl std::fmt::Debug) -> DecodeError {
    DecodeError::malformed(format!("{e:?}"))
}

/// The MQTT 5 codec has its own QoS type.
const fn qos_from_v5(qos: mqtt5::QoS) -> QoS {
    match qos {
        mqtt5::QoS::AtMostOnce => QoS::AtMostOnce,
        mqtt5::QoS::AtLeastOnce => QoS::AtLeastOnce,
        mqtt5::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

const fn qos_to_v5(qos: QoS) -> mqtt5::QoS {
    match qos {
        QoS::AtMostOnce => mqtt5::QoS::AtMostOnce,
        QoS::AtLeastOnce => mqtt5::QoS::AtLeastOnce,
        QoS::ExactlyOnce => mqtt5::QoS::ExactlyOnce,
    }
}

/// The MQTT 5 codec keeps topic names as bytes; MQTT requires UTF-8.
fn utf8_topic(topic: Bytes) -> Result<String, DecodeError> {
    String::from_utf8(topic.into()).map_err(|_| DecodeError::malformed("topic is not UTF-8"))
}

/// The MQTT 5 codec's size limit.
fn max_v5(max: usize) -> Option<u32> {
    Some(u32::try_from(max).unwrap_or(u32::MAX))
}

// Whether a whole packet is buffered. The codecs report `InsufficientBytes` both for an
// incomplete frame and for a truncated field inside a complete frame (an MQTT 5 property
// length, say) after having taken the frame out of the buffer: only the first means "wait
// for more bytes", so the frame is checked before decoding and any decoding error that
// follows is a malformed packet.

// A whole frame is then checked against the rules of the specification that the codecs do
// not enforce (see `wellformed`).

// `max` is the broker's Maximum Packet Size: the whole packet, fixed header included (MQTT 5
// §3.2.2.3.6). The codecs compare it with the remaining length, which refuses most oversize
// packets before their bytes arrive; the few header bytes are counted once the frame is there.

fn framed_v4(buf: &BytesMut, max: usize) -> Result<bool, DecodeError> {
    match mqtt::check(buf.iter(), max) {
        Ok(header) if header.frame_length() > max => {
            Err(DecodeError::too_large(header.frame_length(), max))
        }
        Ok(header) => {
            wellformed::check(Version::V4, &buf[..header.frame_length()])?;
            Ok(true)
        }
        Err(mqtt::Error::InsufficientBytes(_)) => Ok(false),
        Err(mqtt::Error::PayloadSizeLimitExceeded(len)) => Err(DecodeError::too_large(len, max)),
        Err(e) => Err(err(e)),
    }
}

fn framed_v5(buf: &BytesMut, max: usize) -> Result<bool, DecodeError> {
    match v5::check(buf.iter(), max_v5(max)) {
        Ok(header) if header.frame_length() > max => {
            Err(DecodeError::too_large(header.frame_length(), max))
        }
        Ok(header) => {
            wellformed::check(Version::V5, &buf[..header.frame_length()])?;
            Ok(true)
        }
        Err(mqtt5::Error::InsufficientBytes(_)) => Ok(false),
        Err(mqtt5::Error::PayloadSizeLimitExceeded { pkt_size, .. }) => {
            Err(DecodeError::too_large(pkt_size, max))
        }
        Err(e) => Err(err(e)),
    }
}

/// Decodes a CONNECT of either version from the start of `buf` (whose protocol level was
/// checked by the caller). `Ok(None)`: more bytes are needed.
///
/// The caller must route by protocol level: the 3.1.1 decoder also accepts level 5 and then
/// reads an MQTT 5 CONNECT as if it had no properties (see `session::connect_protocol`).
pub(crate) fn decode_connect(
    version: Version,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Connect>, DecodeError> {
    let framed = match version {
        Version::V4 => framed_v4(buf, max)?,
        Version::V5 => framed_v5(buf, max)?,
    };
    if !framed {
        return Ok(None);
    }
    match version {
        Version::V4 => match v4::Packet::read(buf, max) {
            Ok(v4::Packet::Connect(c)) => Ok(Some(Connect {
                username: c.login.map(|l| l.username),
                client_id: c.client_id,
                clean_start: c.clean_session,
                keep_alive: c.keep_alive,
                persistent: !c.clean_session,
                will: c.last_will.map(|w| Will {
                    topic: w.topic,
                    payload: w.message,
                    qos: w.qos,
                    retain: w.retain,
                    props: MessageProps::default(),
                    message_expiry: None,
                    delay: 0,
                }),
                session_expiry: None,
                receive_maximum: u16::MAX,
                max_packet_size: None,
                topic_alias_max: 0,
                auth_method: None,
            })),
            Ok(_) => Err(DecodeError::malformed("first packet is not CONNECT")),
            Err(e) => Err(err(e)),
        },
        Version::V5 => match v5::Packet::read(buf, max_v5(max)) {
            Ok(v5::Packet::Connect(c, will, login)) => {
                let props = c.properties.unwrap_or_default();
                if props.receive_maximum == Some(0) {
                    // MQTT 5 §3.1.2.11.3.
                    return Err(DecodeError::protocol("Receive Maximum 0"));
                }
                if props.max_packet_size == Some(0) {
                    // MQTT 5 §3.1.2.11.4.
                    return Err(DecodeError::protocol("Maximum Packet Size 0"));
                }
                let session_expiry = props.session_expiry_interval.filter(|s| *s > 0);
                Ok(Some(Connect {
                    username: login.map(|l| l.username),
                    client_id: c.client_id,
                    clean_start: c.clean_start,
                    keep_alive: c.keep_alive,
                    persistent: session_expiry.is_some(),
                    will: match will {
                        Some(w) => {
                            let mut will = Will {
                                topic: utf8_topic(w.topic)?,
                                payload: w.message,
                                qos: qos_from_v5(w.qos),
                                retain: w.retain,
                                props: MessageProps::default(),
                                message_expiry: None,
                                delay: 0,
                            };
                            if let Some(p) = w.properties {
                                will.props = MessageProps {
                                    payload_format_indicator: p.payload_format_indicator,
                                    content_type: p.content_type,
                                    response_topic: p.response_topic,
                                    correlation_data: p.correlation_data,
                                    user_properties: p.user_properties,
                                    expires_at: None,
                                };
                                will.message_expiry = p.message_expiry_interval;
                                will.delay = p.delay_interval.unwrap_or(0);
                            }
                            Some(will)
                        }
                        None => None,
                    },
                    session_expiry,
                    receive_maximum: props.receive_maximum.unwrap_or(u16::MAX),
                    max_packet_size: props.max_packet_size,
                    topic_alias_max: props.topic_alias_max.unwrap_or(0),
                    auth_method: props.authentication_method,
                }))
            }
            Ok(_) => Err(DecodeError::malformed("first packet is not CONNECT")),
            Err(e) => Err(err(e)),
        },
    }
}

impl Version {
    /// The next packet in `buf`; `Ok(None)`: more bytes are needed.
    pub(crate) fn decode(
        self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Inbound>, DecodeError> {
        match self {
            Self::V4 => decode_v4(buf, max),
            Self::V5 => decode_v5(buf, max),
        }
    }

    pub(crate) fn connack(
        self,
        out: &mut BytesMut,
        code: ConnackCode,
        session_present: bool,
        assigned_client_id: Option<&str>,
        limits: &Limits,
    ) -> Result<(), EncodeError> {
        match self {
            Self::V4 => {
                let code = match code {
                    ConnackCode::Accepted => v4::ConnectReturnCode::Success,
                    ConnackCode::BadClientId => v4::ConnectReturnCode::BadClientId,
                    ConnackCode::NotAuthorized
                    | ConnackCode::BadUserNameOrPassword
                    | ConnackCode::BadAuthenticationMethod => v4::ConnectReturnCode::NotAuthorized,
                };
                v4::ConnAck::new(code, session_present).write(out)?;
            }
            Self::V5 => {
                let code = match code {
                    ConnackCode::Accepted => v5::ConnectReturnCode::Success,
                    ConnackCode::BadClientId => v5::ConnectReturnCode::ClientIdentifierNotValid,
                    ConnackCode::NotAuthorized => v5::ConnectReturnCode::NotAuthorized,
                    ConnackCode::BadUserNameOrPassword => {
                        v5::ConnectReturnCode::BadUserNamePassword
                    }
                    ConnackCode::BadAuthenticationMethod => {
                        v5::ConnectReturnCode::BadAuthenticationMethod
                    }
                };
                // A refused CONNECT gets no properties: rumqttc writes the (required)
                // property length 0 for `None`.
                let properties =
                    (code == v5::ConnectReturnCode::Success).then(|| v5::ConnAckProperties {
                        session_expiry_interval: None,
                        // The broker's limits [MQTT-3.2.2-9..-15]: Maximum QoS only when below
                        // 2 (2 may not be sent), Topic Alias Maximum absent (0).
                        receive_max: Some(limits.receive_maximum),
                        max_qos: (limits.max_qos != QoS::ExactlyOnce)
                            .then_some(limits.max_qos as u8),
                        retain_available: Some(1),
                        max_packet_size: Some(limits.max_packet_size),
                        assigned_client_identifier: assigned_client_id.map(str::to_owned),
                        topic_alias_max: (limits.topic_alias_maximum > 0)
                            .then_some(limits.topic_alias_maximum),
                        reason_string: None,
                        user_properties: Vec::new(),
                        wildcard_subscription_available: Some(1),
                        subscription_identifiers_available: Some(1),
                        shared_subscription_available: Some(1),
                        server_keep_alive: None,
                        response_information: None,
                        server_reference: None,
                        authentication_method: None,
                        authentication_data: None,
                    });
                v5::ConnAck {
                    session_present,
                    code,
                    properties,
                }
                .write(out)?;
            }
        }
        Ok(())
    }

    /// A PUBLISH of `msg`; MQTT 5 adds its properties, with the Message Expiry Interval
    /// that remains at `now`, and `alias`: a Topic Alias, and whether the topic goes with it
    /// (the first time) or is left empty.
    pub(crate) fn publish(
        self,
        out: &mut BytesMut,
        msg: &Delivery,
        pkid: u16,
        dup: bool,
        now: Instant,
        alias: Option<(u16, bool)>,
    ) -> Result<(), EncodeError> {
        match self {
            Self::V4 => {
                let mut publish =
                    v4::Publish::from_bytes(&*msg.topic, msg.qos, msg.payload.clone());
                publish.retain = msg.retain;
                publish.pkid = pkid;
                publish.dup = dup;
                publish.write(out)?;
            }
            Self::V5 => {
                let p = &msg.props;
                let properties = (**p != MessageProps::default()
                    || !msg.sub_ids.is_empty()
                    || alias.is_some())
                .then(|| v5::PublishProperties {
                    payload_format_indicator: p.payload_format_indicator,
                    message_expiry_interval: p.remaining_expiry(now),
                    topic_alias: alias.map(|(alias, _)| alias),
                    response_topic: p.response_topic.clone(),
                    correlation_data: p.correlation_data.clone(),
                    user_properties: p.user_properties.clone(),
                    subscription_identifiers: msg.sub_ids.iter().map(|id| *id as usize).collect(),
                    content_type: p.content_type.clone(),
                });
                let topic = match alias {
                    Some((_, false)) => "",
                    _ => &*msg.topic,
                };
                let mut publish =
                    v5::Publish::new(topic, qos_to_v5(msg.qos), msg.payload.clone(), properties);
                publish.retain = msg.retain;
                publish.pkid = pkid;
                publish.dup = dup;
                publish.write(out)?;
            }
        }
        Ok(())
    }

    pub(crate) fn pubrel(self, out: &mut BytesMut, pkid: u16) -> Result<(), EncodeError> {
        match self {
            Self::V4 => {
                v4::PubRel::new(pkid).write(out)?;
            }
            Self::V5 => {
                v5::PubRel::new(pkid, None).write(out)?;
            }
        }
        Ok(())
    }

    pub(crate) fn puback(self, out: &mut BytesMut, pkid: u16) -> Result<(), EncodeError> {
        match self {
            Self::V4 => {
                v4::PubAck::new(pkid).write(out)?;
            }
            Self::V5 => {
                v5::PubAck::new(pkid, None).write(out)?;
            }
        }
        Ok(())
    }

    pub(crate) fn pubrec(self, out: &mut BytesMut, pkid: u16) -> Result<(), EncodeError> {
        match self {
            Self::V4 => {
                v4::PubRec::new(pkid).write(out)?;
            }
            Self::V5 => {
                v5::PubRec::new(pkid, None).write(out)?;
            }
        }
        Ok(())
    }

    pub(crate) fn pubcomp(self, out: &mut BytesMut, pkid: u16) -> Result<(), EncodeError> {
        match self {
            Self::V4 => {
                v4::PubComp::new(pkid).write(out)?;
            }
            Self::V5 => {
                v5::PubComp::new(pkid, None).write(out)?;
            }
        }
        Ok(())
    }

    /// SUBACK with one entry per filter: the granted QoS, or `None` for a refused filter.
    pub(crate) fn suback(
        self,
        out: &mut BytesMut,
        pkid: u16,
        granted: &[Option<QoS>],
    ) -> Result<(), EncodeError> {
        match self {
            Self::V4 => {
                let codes = granted
                    .iter()
                    .map(|g| match g {
                        Some(qos) => v4::SubscribeReasonCode::Success(*qos),
                        None => v4::SubscribeReasonCode::Failure,
                    })
                    .collect();
                v4::SubAck::new(pkid, codes).write(out)?;
            }
            Self::V5 => {
                let return_codes = granted
                    .iter()
                    .map(|g| match g {
                        Some(qos) => v5::SubscribeReasonCode::Success(qos_to_v5(*qos)),
                        None => v5::SubscribeReasonCode::TopicFilterInvalid,
                    })
                    .collect();
                let ack = v5::SubAck {
                    pkid,
                    return_codes,
                    properties: None,
                };
                ack.write(out)?;
            }
        }
        Ok(())
    }

    pub(crate) fn unsuback(
        self,
        out: &mut BytesMut,
        pkid: u16,
        count: usize,
    ) -> Result<(), EncodeError> {
        match self {
            Self::V4 => {
                v4::UnsubAck::new(pkid).write(out)?;
            }
            Self::V5 => {
                let ack = v5::UnsubAck {
                    pkid,
                    reasons: vec![v5::UnsubAckReason::Success; count],
                    properties: None,
                };
                ack.write(out)?;
            }
        }
        Ok(())
    }

    pub(crate) fn pingresp(self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Self::V4 => {
                v4::PingResp.write(out)?;
            }
            Self::V5 => {
                v5::PingResp::write(out)?;
            }
        }
        Ok(())
    }

    /// A server-side DISCONNECT for MQTT 5; nothing for 3.1.1, which has none.
    pub(crate) fn disconnect(
        self,
        out: &mut BytesMut,
        reason: DisconnectReason,
    ) -> Result<(), EncodeError> {
        match self {
            Self::V4 => {}
            Self::V5 => {
                // rumqttc 0.25 writes a DISCONNECT with a reason code and no properties as
                // remaining length 1 followed by two bytes (reason code, property length
                // 0): a malformed packet. Write it by hand: reason code only, properties
                // omitted, as MQTT 5 allows when there are none.
                out.extend_from_slice(&[0xE0, 0x01, reason.code() as u8]);
            }
        }
        Ok(())
    }
}

fn decode_v4(buf: &mut BytesMut, max: usize) -> Result<Option<Inbound>, DecodeError> {
    if !framed_v4(buf, max)? {
        return Ok(None);
    }
    let packet = match v4::Packet::read(buf, max) {
        Ok(packet) => packet,
        Err(e) => return Err(err(e)),
    };
    Ok(Some(match packet {
        v4::Packet::Publish(p) => Inbound::Publish {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            pkid: p.pkid,
            topic_alias: None,
            props: MessageProps::default(),
            has_subscription_id: false,
        },
        v4::Packet::PubRel(p) => Inbound::PubRel(p.pkid),
        v4::Packet::PubAck(p) => Inbound::PubAck(p.pkid),
        v4::Packet::PubRec(p) => Inbound::PubRec {
            pkid: p.pkid,
            failed: false,
        },
        v4::Packet::PubComp(p) => Inbound::PubComp(p.pkid),
        v4::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, SubOptions::qos(f.qos)))
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Inbound::PingReq,
        v4::Packet::Disconnect => Inbound::Disconnect {
            will: false,
            session_expiry: None,
        },
        v4::Packet::Connect(_) => Inbound::Connect,
        v4::Packet::ConnAck(_)
        | v4::Packet::SubAck(_)
        | v4::Packet::UnsubAck(_)
        | v4::Packet::PingResp => Inbound::ServerOnly,
    }))
}

fn decode_v5(buf: &mut BytesMut, max: usize) -> Result<Option<Inbound>, DecodeError> {
    // MQTT 5 lets a DISCONNECT omit its properties (remaining length 1) and, for reason code
    // 0x00, the reason code too (remaining length 0). rumqttc 0.25 decodes neither: it refuses
    // remaining length 0 for any packet but PINGREQ/PINGRESP (`PayloadRequired`), and with
    // remaining length 1 it reads a property length past the end of the packet. Take both
    // forms here.
    if buf.len() >= 2 && buf[0] == 0xE0 && buf[1] <= 1 {
        if buf[1] == 0 {
            let _ = buf.split_to(2);
            return Ok(Some(Inbound::Disconnect {
                will: false,
                session_expiry: None,
            }));
        }
        let Some(&code) = buf.get(2) else {
            return Ok(None);
        };
        let code = v5::DisconnectReasonCode::try_from(code).map_err(err)?;
        let _ = buf.split_to(3);
        return Ok(Some(Inbound::Disconnect {
            will: code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
            session_expiry: None,
        }));
    }
    if !framed_v5(buf, max)? {
        return Ok(None);
    }
    let packet = match v5::Packet::read(buf, max_v5(max)) {
        Ok(packet) => packet,
        // A second CONNECT is a protocol error whatever its protocol level (the MQTT 5
        // decoder refuses any level but 5).
        Err(mqtt5::Error::InvalidProtocolLevel(_)) => return Ok(Some(Inbound::Connect)),
        Err(e) => return Err(err(e)),
    };
    Ok(Some(match packet {
        v5::Packet::Publish(p) => {
            let props = p.properties.unwrap_or_default();
            let mut forwarded = MessageProps {
                payload_format_indicator: props.payload_format_indicator,
                content_type: props.content_type,
                response_topic: props.response_topic,
                correlation_data: props.correlation_data,
                user_properties: props.user_properties,
                expires_at: None,
            };
            forwarded.expire_after(props.message_expiry_interval);
            Inbound::Publish {
                topic: utf8_topic(p.topic)?,
                payload: p.payload,
                qos: qos_from_v5(p.qos),
                retain: p.retain,
                pkid: p.pkid,
                topic_alias: props.topic_alias,
                props: forwarded,
                has_subscription_id: !props.subscription_identifiers.is_empty(),
            }
        }
        v5::Packet::PubRel(p) => Inbound::PubRel(p.pkid),
        v5::Packet::PubAck(p) => Inbound::PubAck(p.pkid),
        v5::Packet::PubRec(p) => Inbound::PubRec {
            pkid: p.pkid,
            failed: !matches!(
                p.reason,
                v5::PubRecReason::Success | v5::PubRecReason::NoMatchingSubscribers
            ),
        },
        v5::Packet::PubComp(p) => Inbound::PubComp(p.pkid),
        v5::Packet::Subscribe(s) => {
            let sub_id = match s.properties.and_then(|p| p.id) {
                // MQTT 5 §3.8.2.1.2.
                Some(0) => return Err(DecodeError::protocol("Subscription Identifier 0")),
                Some(id) => Some(u32::try_from(id).map_err(err)?),
                None => None,
            };
            Inbound::Subscribe {
                pkid: s.pkid,
                filters: s
                    .filters
                    .into_iter()
                    .map(|f| {
                        let opts = SubOptions {
                            qos: qos_from_v5(f.qos),
                            no_local: f.nolocal,
                            retain_as_published: f.preserve_retain,
                            retain_handling: match f.retain_forward_rule {
                                v5::RetainForwardRule::OnEverySubscribe => 0,
                                v5::RetainForwardRule::OnNewSubscribe => 1,
                                v5::RetainForwardRule::Never => 2,
                            },
                            id: sub_id,
                        };
                        (f.path, opts)
                    })
                    .collect(),
            }
        }
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Inbound::PingReq,
        v5::Packet::Disconnect(d) => Inbound::Disconnect {
            will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
            session_expiry: d.properties.and_then(|p| p.session_expiry_interval),
        },
        v5::Packet::Connect(_, will, _) => {
            if let Some(w) = will {
                utf8_topic(w.topic)?;
            }
            Inbound::Connect
        }
        // The decoder never yields AUTH (packet type 15 is refused as invalid); the broker
        // supports no extended authentication either.
        v5::Packet::Auth(_) => {
            return Err(DecodeError::protocol("AUTH is not supported"));
        }
        v5::Packet::ConnAck(_)
        | v5::Packet::SubAck(_)
        | v5::Packet::UnsubAck(_)
        | v5::Packet::PingResp(_) => Inbound::ServerOnly,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(version: Version, bytes: &[u8]) -> (Result<Option<Inbound>, DecodeError>, usize) {
        let mut buf = BytesMut::from(bytes);
        let result = version.decode(&mut buf, 1 << 20);
        (result, buf.len())
    }

    #[test]
    fn v5_connack_advertises_the_limits_and_always_has_a_property_length() {
        let read = |out: &BytesMut| match v5::Packet::read(&mut out.clone(), None) {
            Ok(v5::Packet::ConnAck(ack)) => ack,
            other => panic!("{other:?}"),
        };
        let mut out = BytesMut::new();
        let limits = Limits {
            max_packet_size: 4096,
            max_qos: QoS::AtLeastOnce,
            receive_maximum: 10,
            topic_alias_maximum: 0,
        };
        Version::V5
            .connack(&mut out, ConnackCode::Accepted, false, None, &limits)
            .unwrap();
        let p = read(&out).properties.unwrap();
        assert_eq!(
            (
                p.max_packet_size,
                p.receive_max,
                p.max_qos,
                p.topic_alias_max
            ),
            (Some(4096), Some(10), Some(1), None)
        );
        // Retain, wildcard subscriptions, subscription identifiers, shared subscriptions.
        assert_eq!(
            (
                p.retain_available,
                p.wildcard_subscription_available,
                p.subscription_identifiers_available,
                p.shared_subscription_available
            ),
            (Some(1), Some(1), Some(1), Some(1))
        );
        // Maximum QoS 2 is never sent (MQTT 5 §3.2.2.3.4): its absence means 2.
        out.clear();
        Version::V5
            .connack(
                &mut out,
                ConnackCode::Accepted,
                false,
                None,
                &Limits::default(),
            )
            .unwrap();
        assert_eq!(read(&out).properties.unwrap().max_qos, None);
        out.clear();
        Version::V5
            .connack(&mut out, ConnackCode::BadClientId, false, None, &limits)
            .unwrap();
        assert_eq!(out[..], [0x20, 0x03, 0x00, 0x85, 0x00]);
    }

    #[test]
    fn v5_server_disconnect_is_reason_code_only() {
        let mut out = BytesMut::new();
        Version::V5
            .disconnect(&mut out, DisconnectReason::KeepAliveTimeout)
            .unwrap();
        assert_eq!(out[..], [0xE0, 0x01, 0x8D]);
        out.clear();
        Version::V4
            .disconnect(&mut out, DisconnectReason::KeepAliveTimeout)
            .unwrap();
        assert!(out.is_empty(), "3.1.1 has no server DISCONNECT");
    }

    #[test]
    fn v5_disconnect_forms() {
        for (bytes, with_will) in [
            (&[0xE0, 0x00][..], false),
            (&[0xE0, 0x01, 0x00], false),
            (&[0xE0, 0x01, 0x04], true),
            (&[0xE0, 0x01, 0x80], false),
            (&[0xE0, 0x02, 0x04, 0x00], true),
        ] {
            match decode(Version::V5, bytes) {
                (Ok(Some(Inbound::Disconnect { will, .. })), 0) => {
                    assert_eq!(will, with_will, "{bytes:x?}");
                }
                other => panic!("{bytes:x?}: {other:?}"),
            }
        }
        assert!(matches!(decode(Version::V5, &[0xE0, 0x01]), (Ok(None), 2)));
        assert!(matches!(
            decode(Version::V5, &[0xE0, 0x01, 0x01]),
            (Err(_), _)
        ));
    }

    #[test]
    fn incomplete_frames_wait_and_truncated_fields_are_malformed() {
        // Half a PUBLISH: wait for the rest, nothing taken.
        let publish = [
            0x32, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, 0x00, b'x', b'y',
        ];
        for version in [Version::V4, Version::V5] {
            assert!(matches!(decode(version, &publish[..6]), (Ok(None), 6)));
        }
        assert!(matches!(
            decode(Version::V5, &publish),
            (Ok(Some(Inbound::Publish { .. })), 0)
        ));
        // A complete MQTT 5 PUBLISH frame without its property length.
        let truncated = [0x32, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01];
        assert!(matches!(decode(Version::V5, &truncated), (Err(_), _)));
        // As a CONNECT too: a truncated property length is malformed, not "more bytes".
        let connect = [
            0x10, 0x0B, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x80,
        ];
        assert!(decode_connect(Version::V5, &mut BytesMut::from(&connect[..]), 1 << 20).is_err());
    }

    #[test]
    fn subscribe_without_filters_is_refused_by_version() {
        match decode(Version::V4, &[0x82, 0x02, 0x00, 0x01]) {
            (Err(e), _) => assert!(!e.protocol_error, "{e:?}"),
            other => panic!("{other:?}"),
        }
        // MQTT 5 §3.8.3: a Protocol Error.
        match decode(Version::V5, &[0x82, 0x03, 0x00, 0x01, 0x00]) {
            (Err(e), _) => assert!(e.protocol_error, "{e:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_second_connect_of_any_level_is_a_connect() {
        let v4 = [
            0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01,
            b'c',
        ];
        for version in [Version::V4, Version::V5] {
            assert!(matches!(
                decode(version, &v4),
                (Ok(Some(Inbound::Connect)), 0)
            ));
        }
    }

    #[test]
    fn v5_topics_must_be_utf8() {
        let publish = [0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00];
        assert!(matches!(decode(Version::V5, &publish), (Err(_), _)));
        let publish = [0x30, 0x05, 0x00, 0x02, 0xC3, 0xA9, 0x00];
        match decode(Version::V5, &publish) {
            (Ok(Some(Inbound::Publish { topic, .. })), 0) => assert_eq!(topic, "é"),
            other => panic!("{other:?}"),
        }
    }
}
