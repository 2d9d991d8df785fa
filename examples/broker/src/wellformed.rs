//! The MQTT rules a packet's bytes must follow, checked on each whole frame before it is
//! decoded.
//!
//! The codec (`rumqttc`'s `mqttbytes`) reads fields without enforcing what the
//! specifications require of them: it accepts packet identifier 0, reserved flag bits, QoS 3,
//! wildcards in a PUBLISH topic, U+0000 in strings and trailing bytes. Every such packet is
//! malformed ([MQTT-4.8.0-1] in 3.1.1, §4.13 in 5.0): the connection is closed, after an MQTT 5
//! DISCONNECT with reason code 0x81 (Malformed Packet), or 0x82 (Protocol Error) where the
//! MQTT 5 specification names the fault a Protocol Error.

use std::fmt;

use crate::codec::Version;

/// What is wrong with a packet, and how MQTT 5 names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    /// `true`: MQTT 5 Protocol Error (0x82); `false`: Malformed Packet (0x81).
    pub(crate) protocol_error: bool,
    pub(crate) message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn malformed(message: impl Into<String>) -> Violation {
    Violation {
        protocol_error: false,
        message: message.into(),
    }
}

fn protocol(message: impl Into<String>) -> Violation {
    Violation {
        protocol_error: true,
        message: message.into(),
    }
}

/// The bytes of one field after another, each read refusing to run past the packet's end.
struct Fields<'a> {
    rest: &'a [u8],
    packet: &'static str,
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Violation> {
        if self.rest.len() < n {
            return Err(malformed(format!(
                "{}: {what} runs past the end of the packet",
                self.packet
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8, Violation> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, Violation> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A Variable Byte Integer (MQTT 5 §1.5.5), at most four bytes.
    fn varint(&mut self, what: &str) -> Result<usize, Violation> {
        let mut value = 0usize;
        for i in 0..4 {
            let b = self.u8(what)?;
            value |= usize::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed(format!(
            "{}: {what} is longer than four bytes",
            self.packet
        )))
    }

    /// A UTF-8 Encoded String: well-formed UTF-8 without U+0000 [MQTT-1.5.3-1], [MQTT-1.5.3-2]
    /// (3.1.1 and 5.0; also [MQTT-1.5.4-1/-2] in 5.0).
    fn string(&mut self, what: &str) -> Result<&'a str, Violation> {
        let len = usize::from(self.u16(what)?);
        let bytes = self.take(len, what)?;
        let text = std::str::from_utf8(bytes).map_err(|_| {
            malformed(format!(
                "{}: {what} is not valid UTF-8 [MQTT-1.5.3-1]",
                self.packet
            ))
        })?;
        if text.contains('\0') {
            return Err(malformed(format!(
                "{}: {what} contains U+0000 [MQTT-1.5.3-2]",
                self.packet
            )));
        }
        Ok(text)
    }

    /// Binary Data: a two-byte length and that many bytes.
    fn binary(&mut self, what: &str) -> Result<(), Violation> {
        let len = usize::from(self.u16(what)?);
        self.take(len, what).map(|_| ())
    }

    /// MQTT 5 properties: the length, then each property's identifier and value, with
    /// the UTF-8 rules for every string property. Which property a packet may carry, and
    /// their values, are left to the codec and the session.
    fn properties(&mut self) -> Result<(), Violation> {
        let len = self.varint("property length")?;
        let bytes = self.take(len, "properties")?;
        let mut props = Fields {
            rest: bytes,
            packet: self.packet,
        };
        while !props.rest.is_empty() {
            let id = props.varint("property identifier")?;
            match id {
                // Byte.
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                    props.u8("property")?;
                }
                // Two Byte Integer.
                0x13 | 0x21 | 0x22 | 0x23 => {
                    props.u16("property")?;
                }
                // Four Byte Integer.
                0x02 | 0x11 | 0x18 | 0x27 => {
                    props.take(4, "property")?;
                }
                // Variable Byte Integer (Subscription Identifier).
                0x0B => {
                    props.varint("subscription identifier")?;
                }
                // UTF-8 Encoded String.
                0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => {
                    props.string("string property")?;
                }
                // Binary Data.
                0x09 | 0x16 => props.binary("binary property")?,
                // UTF-8 String Pair.
                0x26 => {
                    props.string("user property name")?;
                    props.string("user property value")?;
                }
                other => {
                    return Err(malformed(format!(
                        "{}: unknown property identifier 0x{other:02X}",
                        self.packet
                    )));
                }
            }
        }
        Ok(())
    }

    fn packet_id(&mut self) -> Result<u16, Violation> {
        let id = self.u16("packet identifier")?;
        if id == 0 {
            return Err(malformed(format!(
                "{}: packet identifier 0 [MQTT-2.3.1-1]",
                self.packet
            )));
        }
        Ok(id)
    }

    fn end(&self) -> Result<(), Violation> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(malformed(format!(
                "{}: {} unexpected bytes at the end",
                self.packet,
                self.rest.len()
            )))
        }
    }
}

const fn packet_name(kind: u8) -> &'static str {
    match kind {
        1 => "CONNECT",
        2 => "CONNACK",
        3 => "PUBLISH",
        4 => "PUBACK",
        5 => "PUBREC",
        6 => "PUBREL",
        7 => "PUBCOMP",
        8 => "SUBSCRIBE",
        9 => "SUBACK",
        10 => "UNSUBSCRIBE",
        11 => "UNSUBACK",
        12 => "PINGREQ",
        13 => "PINGRESP",
        14 => "DISCONNECT",
        15 => "AUTH",
        _ => "reserved packet type 0",
    }
}

/// Checks one whole frame (fixed header included) of a client-to-server packet.
pub(crate) fn check(version: Version, frame: &[u8]) -> Result<(), Violation> {
    let v5 = version == Version::V5;
    let Some(&first) = frame.first() else {
        return Ok(());
    };
    let (kind, flags) = (first >> 4, first & 0x0F);
    let packet = packet_name(kind);
    let mut f = Fields {
        rest: &frame[1..],
        packet,
    };
    let len = f.varint("remaining length")?;
    if f.rest.len() != len {
        // The caller hands whole frames only.
        return Err(malformed(format!("{packet}: incomplete frame")));
    }

    // Fixed header flags [MQTT-2.2.2-1], [MQTT-2.2.2-2] (5.0: [MQTT-2.1.3-1]).
    let required = match kind {
        3 => None,
        6 | 8 | 10 => Some(0b0010),
        _ => Some(0),
    };
    if let Some(required) = required {
        if flags != required {
            return Err(malformed(format!(
                "{packet}: reserved flags 0b{flags:04b}, must be 0b{required:04b} [MQTT-2.2.2-2]"
            )));
        }
    }

    match kind {
        0 => return Err(malformed("reserved packet type 0")),
        15 if !v5 => return Err(malformed("reserved packet type 15")),
        // The broker refuses every Authentication Method in CONNECT, so any AUTH is out of
        // place (MQTT 5 §4.12).
        15 => {
            return Err(protocol("AUTH without an Authentication Method in CONNECT"));
        }
        1 => connect(&mut f)?,
        3 => publish(&mut f, flags, v5)?,
        4..=7 => {
            f.packet_id()?;
            if v5 && !f.rest.is_empty() {
                f.u8("reason code")?;
                if !f.rest.is_empty() {
                    f.properties()?;
                }
            }
            f.end()?;
        }
        8 => {
            f.packet_id()?;
            if v5 {
                f.properties()?;
            }
            if f.rest.is_empty() {
                let message = "SUBSCRIBE: no topic filter [MQTT-3.8.3-3]";
                // MQTT 5 §3.8.3: "A SUBSCRIBE packet with no Payload is a Protocol Error."
                return Err(if v5 {
                    protocol(message)
                } else {
                    malformed(message)
                });
            }
            while !f.rest.is_empty() {
                f.string("topic filter")?;
                let options = f.u8("subscription options")?;
                subscription_options(options, v5)?;
            }
        }
        10 => {
            f.packet_id()?;
            if v5 {
                f.properties()?;
            }
            if f.rest.is_empty() {
                let message = "UNSUBSCRIBE: no topic filter [MQTT-3.10.3-2]";
                // MQTT 5 §3.10.3: "An UNSUBSCRIBE packet with no Payload is a Protocol Error."
                return Err(if v5 {
                    protocol(message)
                } else {
                    malformed(message)
                });
            }
            while !f.rest.is_empty() {
                f.string("topic filter")?;
            }
        }
        12 => f.end()?,
        14 => {
            if v5 && !f.rest.is_empty() {
                f.u8("reason code")?;
                if !f.rest.is_empty() {
                    f.properties()?;
                }
            }
            f.end()?;
        }
        // Server-to-client packets and AUTH are refused by the session.
        _ => {}
    }
    Ok(())
}

fn subscription_options(options: u8, v5: bool) -> Result<(), Violation> {
    if options & 0b11 == 3 {
        return Err(malformed(
            "SUBSCRIBE: requested QoS 3 [MQTT-3.8.3-4]".to_owned(),
        ));
    }
    if v5 {
        if options & 0b1100_0000 != 0 {
            return Err(malformed(
                "SUBSCRIBE: reserved bits of the subscription options are set [MQTT-3.8.3-5]",
            ));
        }
        if (options >> 4) & 0b11 == 3 {
            // MQTT 5 §3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3."
            return Err(protocol("SUBSCRIBE: retain handling 3"));
        }
    } else if options & 0b1111_1100 != 0 {
        return Err(malformed(
            "SUBSCRIBE: reserved bits of the requested QoS byte are set [MQTT-3-8.3-4]",
        ));
    }
    Ok(())
}

fn publish(f: &mut Fields<'_>, flags: u8, v5: bool) -> Result<(), Violation> {
    let qos = (flags >> 1) & 0b11;
    if qos == 3 {
        return Err(malformed("PUBLISH: QoS 3 [MQTT-3.3.1-4]"));
    }
    if qos == 0 && flags & 0b1000 != 0 {
        return Err(malformed(
            "PUBLISH: DUP set on a QoS 0 message [MQTT-3.3.1-2]",
        ));
    }
    let topic = f.string("topic name")?;
    if topic.contains(['+', '#']) {
        return Err(malformed(
            "PUBLISH: wildcard in the topic name [MQTT-3.3.2-2]",
        ));
    }
    if topic.is_empty() && !v5 {
        // MQTT 5 allows an empty topic with a topic alias; the session checks that.
        return Err(malformed("PUBLISH: empty topic name [MQTT-4.7.3-1]"));
    }
    if qos > 0 {
        f.packet_id()?;
    }
    if v5 {
        f.properties()?;
    }
    Ok(())
}

/// A CONNECT, laid out by its own protocol level (a second CONNECT may differ from the first).
fn connect(f: &mut Fields<'_>) -> Result<(), Violation> {
    f.string("protocol name")?;
    let v5 = f.u8("protocol level")? == 5;
    let flags = f.u8("connect flags")?;
    if flags & 0x01 != 0 {
        return Err(malformed(
            "CONNECT: reserved connect flag is set [MQTT-3.1.2-3]",
        ));
    }
    let will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    if will_qos == 3 {
        return Err(malformed("CONNECT: will QoS 3 [MQTT-3.1.2-14]"));
    }
    if !will && (will_qos != 0 || will_retain) {
        return Err(malformed(
            "CONNECT: will QoS or will retain without a will [MQTT-3.1.2-11/-13/-15]",
        ));
    }
    let (username, password) = (flags & 0x80 != 0, flags & 0x40 != 0);
    if password && !username && !v5 {
        return Err(malformed(
            "CONNECT: password without user name [MQTT-3.1.2-22]",
        ));
    }
    f.u16("keep alive")?;
    if v5 {
        f.properties()?;
    }
    f.string("client identifier")?;
    if will {
        if v5 {
            f.properties()?;
        }
        let topic = f.string("will topic")?;
        if topic.is_empty() || topic.contains(['+', '#']) {
            return Err(malformed(
                "CONNECT: the will topic is not a valid topic name [MQTT-3.1.3-11]",
            ));
        }
        f.binary("will message")?;
    }
    if username {
        f.string("user name")?;
    }
    if password {
        f.binary("password")?;
    }
    f.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(version: Version, frame: &[u8]) -> Violation {
        check(version, frame).expect_err(&format!("{frame:x?} passed"))
    }

    #[test]
    fn packet_identifier_zero_is_malformed_in_every_packet_that_has_one() {
        for version in [Version::V4, Version::V5] {
            for frame in [
                &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00][..],
                &[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a'],
                &[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00],
                &[0x40, 0x02, 0x00, 0x00],
                &[0x50, 0x02, 0x00, 0x00],
                &[0x62, 0x02, 0x00, 0x00],
                &[0x70, 0x02, 0x00, 0x00],
            ] {
                let frame = if version == Version::V5 {
                    v5_form(frame)
                } else {
                    frame.to_vec()
                };
                let v = bad(version, &frame);
                assert!(
                    !v.protocol_error && v.message.contains("packet identifier 0"),
                    "{v}"
                );
            }
        }
    }

    /// The same packet with the MQTT 5 property length (0) where the packet has one.
    fn v5_form(frame: &[u8]) -> Vec<u8> {
        let kind = frame[0] >> 4;
        let mut body = frame[2..].to_vec();
        match kind {
            8 | 10 => body.insert(2, 0),
            3 => {
                let topic = 2 + usize::from(body[1]);
                let pkid = if frame[0] & 0b0110 == 0 { 0 } else { 2 };
                body.insert(topic + pkid, 0);
            }
            _ => {}
        }
        let mut out = vec![frame[0], u8::try_from(body.len()).unwrap()];
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn well_formed_packets_pass() {
        for frame in [
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x01][..],
            &[0xA2, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
            &[0x30, 0x04, 0x00, 0x01, b'a', b'x'],
            &[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x07],
            &[0x40, 0x02, 0x00, 0x07],
            &[0x62, 0x02, 0x00, 0x07],
            &[0xC0, 0x00],
            &[0xE0, 0x00],
        ] {
            assert_eq!(check(Version::V4, frame), Ok(()), "{frame:x?}");
            assert_eq!(check(Version::V5, &v5_form(frame)), Ok(()), "{frame:x?}");
        }
        // MQTT 5 acknowledgements with a reason code, and with properties.
        assert_eq!(check(Version::V5, &[0x40, 0x03, 0x00, 0x07, 0x10]), Ok(()));
        assert_eq!(
            check(Version::V5, &[0x40, 0x04, 0x00, 0x07, 0x00, 0x00]),
            Ok(())
        );
        // A user property on a PUBLISH.
        let publish = [
            0x30, 0x0B, 0x00, 0x01, b'a', 0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
        ];
        assert_eq!(check(Version::V5, &publish), Ok(()));
    }

    #[test]
    fn every_other_malformed_form_is_refused() {
        for (version, frame, what) in [
            (
                Version::V4,
                &[0x83, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00][..],
                "reserved flags",
            ),
            (
                Version::V4,
                &[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
                "reserved flags",
            ),
            (Version::V4, &[0x60, 0x02, 0x00, 0x01], "reserved flags"),
            (Version::V4, &[0x41, 0x02, 0x00, 0x01], "reserved flags"),
            (Version::V4, &[0xC1, 0x00], "reserved flags"),
            (Version::V4, &[0xE2, 0x00], "reserved flags"),
            (
                Version::V4,
                &[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
                "QoS 3",
            ),
            (Version::V4, &[0x38, 0x03, 0x00, 0x01, b'a'], "DUP"),
            (
                Version::V4,
                &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+'],
                "wildcard",
            ),
            (
                Version::V4,
                &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#'],
                "wildcard",
            ),
            (Version::V4, &[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28], "UTF-8"),
            (Version::V4, &[0x30, 0x03, 0x00, 0x01, 0x00], "U+0000"),
            (Version::V4, &[0x30, 0x02, 0x00, 0x00], "empty topic"),
            (Version::V4, &[0x82, 0x02, 0x00, 0x01], "no topic filter"),
            (Version::V4, &[0xA2, 0x02, 0x00, 0x01], "no topic filter"),
            (
                Version::V4,
                &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03],
                "QoS 3",
            ),
            (
                Version::V4,
                &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04],
                "reserved bits",
            ),
            (
                Version::V4,
                &[0x82, 0x06, 0x00, 0x01, 0x00, 0x02, 0xC3, 0x28],
                "UTF-8",
            ),
            (
                Version::V4,
                &[0xA2, 0x05, 0x00, 0x01, 0x00, 0x02, 0xFF],
                "runs past",
            ),
            (
                Version::V4,
                &[0x40, 0x03, 0x00, 0x01, 0x00],
                "unexpected bytes",
            ),
            (Version::V4, &[0xC0, 0x01, 0x00], "unexpected bytes"),
            (Version::V4, &[0xE0, 0x01, 0x00], "unexpected bytes"),
            (Version::V4, &[0x00, 0x00], "reserved packet type"),
            (Version::V4, &[0xF0, 0x00], "reserved packet type"),
            (
                Version::V5,
                &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x40],
                "reserved bits",
            ),
            (
                Version::V5,
                &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x03],
                "QoS 3",
            ),
            (
                Version::V5,
                &[0x36, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, 0x00],
                "QoS 3",
            ),
            (
                Version::V5,
                &[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x7F, 0x00],
                "property",
            ),
            (
                Version::V5,
                &[0x30, 0x07, 0x00, 0x01, b'a', 0x04, 0x03, 0x00, 0x01],
                "runs past",
            ),
            (
                Version::V5,
                &[0x30, 0x08, 0x00, 0x01, b'a', 0x04, 0x03, 0x00, 0x01, 0xFF],
                "UTF-8",
            ),
        ] {
            let v = bad(version, frame);
            assert!(!v.protocol_error, "{frame:x?}: {v}");
            assert!(
                v.message.contains(what),
                "{frame:x?}: {v} (expected {what})"
            );
        }
        // MQTT 5 names these a Protocol Error.
        for frame in [
            &[0x82, 0x03, 0x00, 0x01, 0x00][..],
            &[0xA2, 0x03, 0x00, 0x01, 0x00],
            &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30],
        ] {
            assert!(bad(Version::V5, frame).protocol_error, "{frame:x?}");
        }
    }

    #[test]
    fn connect_flags_and_strings() {
        // 3.1.1 CONNECT "c", clean session, keep-alive 60, with `flags` and `payload`.
        let connect = |flags: u8, payload: &[u8]| {
            let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x3C];
            body.extend_from_slice(&[0x00, 0x01, b'c']);
            body.extend_from_slice(payload);
            let mut frame = vec![0x10, u8::try_from(body.len()).unwrap()];
            frame.extend_from_slice(&body);
            frame
        };
        assert_eq!(check(Version::V4, &connect(0x02, &[])), Ok(()));
        let will = [0x00, 0x01, b't', 0x00, 0x01, b'w'];
        assert_eq!(check(Version::V4, &connect(0x0E, &will)), Ok(()));
        for (flags, payload, what) in [
            (0x03, &[][..], "reserved connect flag"),
            (0x1E, &will[..], "will QoS 3"),
            (0x0A, &[], "without a will"),
            (0x22, &[], "without a will"),
            (0x42, &[0x00, 0x01, b'p'], "password without user name"),
            (0x06, &[0x00, 0x01, b'#', 0x00, 0x01, b'w'], "will topic"),
            (0x82, &[0x00, 0x02, 0xC3, 0x28], "UTF-8"),
        ] {
            let v = bad(Version::V4, &connect(flags, payload));
            assert!(
                v.message.contains(what),
                "{flags:02x}: {v} (expected {what})"
            );
        }
    }
}
