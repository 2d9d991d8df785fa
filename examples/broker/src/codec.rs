//! MQTT 3.1.1 and 5.0 packets (`mqttbytes`'s `v4` and `v5` modules) behind one small
//! interface, so that a session does not care which version its client speaks.
//!
//! Only what this broker uses is mapped. MQTT 5 properties are ignored on input except the
//! session expiry interval and topic aliases (refused: the broker announces none); on output
//! the CONNACK carries the capabilities the broker has, and server-side DISCONNECTs carry a
//! reason code.

use bytes::{Bytes, BytesMut};
use mqttbytes::{QoS, v4, v5};

use crate::broker::SubOptions;

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
pub(crate) struct DecodeError(pub(crate) String);

/// The parts of CONNECT the broker uses.
#[derive(Clone, Debug)]
pub(crate) struct Connect {
    pub(crate) client_id: String,
    pub(crate) clean_start: bool,
    pub(crate) keep_alive: u16,
    /// 3.1.1: `!clean_session`; MQTT 5: session expiry interval > 0.
    pub(crate) persistent: bool,
    pub(crate) will: Option<Will>,
}

/// A will message.
#[derive(Clone, Debug)]
pub(crate) struct Will {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
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
        /// MQTT 5: the packet used a topic alias.
        topic_alias: bool,
    },
    PubRel(u16),
    /// PUBACK, PUBREC or PUBCOMP for a message the broker sent.
    Ack,
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
        }
    }
}

fn err(e: mqttbytes::Error) -> DecodeError {
    DecodeError(format!("{e:?}"))
}

/// Decodes a CONNECT of either version from the start of `buf` (whose protocol level was
/// checked by the caller). `Ok(None)`: more bytes are needed.
pub(crate) fn decode_connect(
    version: Version,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Connect>, DecodeError> {
    match version {
        Version::V4 => match v4::read(buf, max) {
            Ok(v4::Packet::Connect(c)) => Ok(Some(Connect {
                client_id: c.client_id,
                clean_start: c.clean_session,
                keep_alive: c.keep_alive,
                persistent: !c.clean_session,
                will: c.last_will.map(|w| Will {
                    topic: w.topic,
                    payload: w.message,
                    qos: w.qos,
                    retain: w.retain,
                }),
            })),
            Ok(_) => Err(DecodeError("first packet is not CONNECT".into())),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(err(e)),
        },
        Version::V5 => match v5::read(buf, max) {
            Ok(v5::Packet::Connect(c)) => Ok(Some(Connect {
                client_id: c.client_id,
                clean_start: c.clean_session,
                keep_alive: c.keep_alive,
                persistent: c
                    .properties
                    .as_ref()
                    .and_then(|p| p.session_expiry_interval)
                    .is_some_and(|secs| secs > 0),
                will: c.last_will.map(|w| Will {
                    topic: w.topic,
                    payload: w.message,
                    qos: w.qos,
                    retain: w.retain,
                }),
            })),
            Ok(_) => Err(DecodeError("first packet is not CONNECT".into())),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
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
    ) -> Result<(), mqttbytes::Error> {
        match self {
            Self::V4 => {
                let code = match code {
                    ConnackCode::Accepted => v4::ConnectReturnCode::Success,
                    ConnackCode::BadClientId => v4::ConnectReturnCode::BadClientId,
                    ConnackCode::NotAuthorized => v4::ConnectReturnCode::NotAuthorized,
                };
                v4::ConnAck::new(code, session_present).write(out)?;
            }
            Self::V5 => {
                let code = match code {
                    ConnackCode::Accepted => v5::ConnectReturnCode::Success,
                    ConnackCode::BadClientId => v5::ConnectReturnCode::ClientIdentifierNotValid,
                    ConnackCode::NotAuthorized => v5::ConnectReturnCode::NotAuthorized,
                };
                // mqttbytes writes no property length for `properties: None`, which MQTT 5
                // requires: always send (possibly empty) properties.
                let mut properties = v5::ConnAckProperties::new();
                if code == v5::ConnectReturnCode::Success {
                    properties.assigned_client_identifier = assigned_client_id.map(str::to_owned);
                    properties.retain_available = Some(1);
                    properties.wildcard_subscription_available = Some(1);
                    properties.subscription_identifiers_available = Some(0);
                    properties.shared_subscription_available = Some(0);
                }
                let mut ack = v5::ConnAck::new(code, session_present);
                ack.properties = Some(properties);
                ack.write(out)?;
            }
        }
        Ok(())
    }

    pub(crate) fn publish(
        self,
        out: &mut BytesMut,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        pkid: u16,
    ) -> Result<(), mqttbytes::Error> {
        match self {
            Self::V4 => {
                let mut publish = v4::Publish::from_bytes(topic, qos, payload);
                publish.retain = retain;
                publish.pkid = pkid;
                publish.write(out)?;
            }
            Self::V5 => {
                let mut publish = v5::Publish::from_bytes(topic, qos, payload);
                publish.retain = retain;
                publish.pkid = pkid;
                publish.write(out)?;
            }
        }
        Ok(())
    }

    pub(crate) fn puback(self, out: &mut BytesMut, pkid: u16) -> Result<(), mqttbytes::Error> {
        match self {
            Self::V4 => v4::PubAck::new(pkid).write(out).map(drop),
            Self::V5 => v5::PubAck::new(pkid).write(out).map(drop),
        }
    }

    pub(crate) fn pubrec(self, out: &mut BytesMut, pkid: u16) -> Result<(), mqttbytes::Error> {
        match self {
            Self::V4 => v4::PubRec::new(pkid).write(out).map(drop),
            Self::V5 => v5::PubRec::new(pkid).write(out).map(drop),
        }
    }

    pub(crate) fn pubcomp(self, out: &mut BytesMut, pkid: u16) -> Result<(), mqttbytes::Error> {
        match self {
            Self::V4 => v4::PubComp::new(pkid).write(out).map(drop),
            Self::V5 => v5::PubComp::new(pkid).write(out).map(drop),
        }
    }

    /// SUBACK with one entry per filter: the granted QoS, or `None` for a refused filter.
    pub(crate) fn suback(
        self,
        out: &mut BytesMut,
        pkid: u16,
        granted: &[Option<QoS>],
    ) -> Result<(), mqttbytes::Error> {
        match self {
            Self::V4 => {
                let codes = granted
                    .iter()
                    .map(|g| match g {
                        Some(qos) => v4::SubscribeReasonCode::Success(*qos),
                        None => v4::SubscribeReasonCode::Failure,
                    })
                    .collect();
                v4::SubAck::new(pkid, codes).write(out).map(drop)
            }
            Self::V5 => {
                let codes = granted
                    .iter()
                    .map(|g| match g {
                        Some(QoS::AtMostOnce) => v5::SubscribeReasonCode::QoS0,
                        Some(QoS::AtLeastOnce) => v5::SubscribeReasonCode::QoS1,
                        Some(QoS::ExactlyOnce) => v5::SubscribeReasonCode::QoS2,
                        None => v5::SubscribeReasonCode::TopicFilterInvalid,
                    })
                    .collect();
                v5::SubAck::new(pkid, codes).write(out).map(drop)
            }
        }
    }

    pub(crate) fn unsuback(
        self,
        out: &mut BytesMut,
        pkid: u16,
        count: usize,
    ) -> Result<(), mqttbytes::Error> {
        match self {
            Self::V4 => v4::UnsubAck::new(pkid).write(out).map(drop),
            Self::V5 => {
                let mut ack = v5::UnsubAck::new(pkid);
                ack.reasons = vec![v5::UnsubAckReason::Success; count];
                ack.write(out).map(drop)
            }
        }
    }

    pub(crate) fn pingresp(self, out: &mut BytesMut) -> Result<(), mqttbytes::Error> {
        match self {
            Self::V4 => v4::PingResp.write(out).map(drop),
            Self::V5 => v5::PingResp.write(out).map(drop),
        }
    }

    /// A server-side DISCONNECT for MQTT 5; nothing for 3.1.1, which has none.
    pub(crate) fn disconnect(
        self,
        out: &mut BytesMut,
        reason: DisconnectReason,
    ) -> Result<(), mqttbytes::Error> {
        match self {
            Self::V4 => Ok(()),
            Self::V5 => {
                let mut disconnect = v5::Disconnect::new();
                disconnect.reason_code = reason.code();
                disconnect.write(out).map(drop)
            }
        }
    }
}

fn decode_v4(buf: &mut BytesMut, max: usize) -> Result<Option<Inbound>, DecodeError> {
    let packet = match v4::read(buf, max) {
        Ok(packet) => packet,
        Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    Ok(Some(match packet {
        v4::Packet::Publish(p) => Inbound::Publish {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            pkid: p.pkid,
            topic_alias: false,
        },
        v4::Packet::PubRel(p) => Inbound::PubRel(p.pkid),
        v4::Packet::PubAck(_) | v4::Packet::PubRec(_) | v4::Packet::PubComp(_) => Inbound::Ack,
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
        v4::Packet::Disconnect => Inbound::Disconnect { will: false },
        v4::Packet::Connect(_) => Inbound::Connect,
        v4::Packet::ConnAck(_)
        | v4::Packet::SubAck(_)
        | v4::Packet::UnsubAck(_)
        | v4::Packet::PingResp => Inbound::ServerOnly,
    }))
}

fn decode_v5(buf: &mut BytesMut, max: usize) -> Result<Option<Inbound>, DecodeError> {
    // mqttbytes 0.6 refuses a DISCONNECT with remaining length 0, which MQTT 5 allows
    // (reason 0x00 and no properties omitted): take it here.
    if buf.len() >= 2 && buf[0] == 0xE0 && buf[1] == 0x00 {
        let _ = buf.split_to(2);
        return Ok(Some(Inbound::Disconnect { will: false }));
    }
    let packet = match v5::read(buf, max) {
        Ok(packet) => packet,
        Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    Ok(Some(match packet {
        v5::Packet::Publish(p) => Inbound::Publish {
            topic_alias: p
                .properties
                .as_ref()
                .is_some_and(|p| p.topic_alias.is_some()),
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            pkid: p.pkid,
        },
        v5::Packet::PubRel(p) => Inbound::PubRel(p.pkid),
        v5::Packet::PubAck(_) | v5::Packet::PubRec(_) | v5::Packet::PubComp(_) => Inbound::Ack,
        v5::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| {
                    let opts = SubOptions {
                        qos: f.qos,
                        no_local: f.nolocal,
                        retain_as_published: f.preserve_retain,
                        retain_handling: match f.retain_forward_rule {
                            v5::RetainForwardRule::OnEverySubscribe => 0,
                            v5::RetainForwardRule::OnNewSubscribe => 1,
                            v5::RetainForwardRule::Never => 2,
                        },
                    };
                    (f.path, opts)
                })
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq => Inbound::PingReq,
        v5::Packet::Disconnect(d) => Inbound::Disconnect {
            will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
        },
        v5::Packet::Connect(_) => Inbound::Connect,
        v5::Packet::ConnAck(_)
        | v5::Packet::SubAck(_)
        | v5::Packet::UnsubAck(_)
        | v5::Packet::PingResp => Inbound::ServerOnly,
    }))
}
