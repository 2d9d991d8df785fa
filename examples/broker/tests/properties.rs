//! MQTT 5 message properties reach subscribers: User Property, Payload Format Indicator,
//! Content Type, Response Topic, Correlation Data and the *remaining* Message Expiry Interval,
//! on live, retained and will messages [MQTT-3.3.2-4/-6/-15/-16/-17/-18/-20],
//! [MQTT-3.1.3-10]. Sent by `mosquitto_pub -D publish ...` / `mosquitto_sub -D will ...`,
//! read by `mosquitto_sub -F` and by paho-mqtt's properties API.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{BrokerProcess, Paho, have_mosquitto, have_paho};
use serde_json::json;

const FORMAT: &str = "%t|%p|%P|%C|%R|%D|%E|%F";

fn port(broker: &BrokerProcess) -> String {
    broker.tcp().port().to_string()
}

fn props() -> Vec<&'static str> {
    vec![
        "-D",
        "publish",
        "user-property",
        "k1",
        "v1",
        "-D",
        "publish",
        "user-property",
        "k2",
        "v2",
        "-D",
        "publish",
        "content-type",
        "text/plain",
        "-D",
        "publish",
        "response-topic",
        "reply/here",
        "-D",
        "publish",
        "correlation-data",
        "req-42",
        "-D",
        "publish",
        "payload-format-indicator",
        "1",
        "-D",
        "publish",
        "message-expiry-interval",
        "60",
    ]
}

fn subscriber(broker: &BrokerProcess, id: &str, topic: &str, count: &str) -> Child {
    Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port(broker),
            "-V",
            "mqttv5",
            "-i",
            id,
        ])
        .args([
            "-t", topic, "-q", "1", "-C", count, "-W", "10", "-F", FORMAT,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn lines(child: Child) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "mosquitto_sub failed: {text}");
    text.lines().map(str::to_owned).collect()
}

/// The fields of one `FORMAT` line, with the expiry parsed.
fn fields(line: &str) -> (Vec<&str>, u32) {
    let f: Vec<&str> = line.split('|').collect();
    assert_eq!(f.len(), 8, "{line}");
    let expiry = f[6].parse().unwrap_or_else(|_| panic!("expiry in {line}"));
    (f, expiry)
}

#[test]
fn live_and_retained_messages_keep_their_properties_and_expiry_counts_down() {
    if !have_mosquitto() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    let sub = subscriber(&broker, "props-live", "props/#", "1");
    broker.wait_subscriptions("props-live", 1);
    let mut args = vec!["-V", "mqttv5", "-q", "1", "-t", "props/live", "-m", "hello"];
    args.extend(props());
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port(&broker)])
        .args(&args)
        .status()
        .unwrap();
    assert!(status.success());
    let got = lines(sub);
    assert_eq!(got.len(), 1, "{got:?}");
    let (f, expiry) = fields(&got[0]);
    assert_eq!(
        f[..6],
        [
            "props/live",
            "hello",
            "k1:v1 k2:v2",
            "text/plain",
            "reply/here",
            "req-42"
        ],
        "{got:?}"
    );
    assert_eq!(f[7], "1", "payload format indicator");
    assert!((59..=60).contains(&expiry), "{expiry}");

    // Retained, then read 2 s later: the expiry shown is what remains.
    let mut args = vec![
        "-V",
        "mqttv5",
        "-q",
        "1",
        "-r",
        "-t",
        "props/kept",
        "-m",
        "stored",
    ];
    args.extend(props());
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port(&broker)])
        .args(&args)
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(2100));
    let got = lines(subscriber(&broker, "props-retained", "props/kept", "1"));
    let (f, expiry) = fields(&got[0]);
    assert_eq!(
        f[..6],
        [
            "props/kept",
            "stored",
            "k1:v1 k2:v2",
            "text/plain",
            "reply/here",
            "req-42"
        ]
    );
    assert!((55..=58).contains(&expiry), "remaining expiry {expiry}");

    // A 3.1.1 subscriber gets the message without properties (3.1.1 has none).
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port(&broker), "-V", "mqttv311"])
        .args(["-t", "props/kept", "-C", "1", "-W", "10", "-F", "%t %p"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "props/kept stored\n");
}

#[test]
fn will_messages_carry_their_properties() {
    if !have_mosquitto() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    let sub = subscriber(&broker, "will-watch", "will/#", "1");
    broker.wait_subscriptions("will-watch", 1);
    let mut dying = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port(&broker),
            "-V",
            "mqttv5",
            "-i",
            "will-dying",
        ])
        .args([
            "-t",
            "nothing/here",
            "--will-topic",
            "will/dying",
            "--will-payload",
            "gone",
        ])
        .args(["-D", "will", "user-property", "why", "killed"])
        .args(["-D", "will", "content-type", "text/plain"])
        .args(["-D", "will", "response-topic", "will/reply"])
        .args(["-D", "will", "correlation-data", "w-1"])
        .args(["-D", "will", "payload-format-indicator", "1"])
        .args(["-D", "will", "message-expiry-interval", "30"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    broker.wait_subscriptions("will-dying", 1);
    // Killed without DISCONNECT: the broker publishes the will.
    dying.kill().unwrap();
    let _ = dying.wait();
    let got = lines(sub);
    let (f, expiry) = fields(&got[0]);
    assert_eq!(
        f[..6],
        [
            "will/dying",
            "gone",
            "why:killed",
            "text/plain",
            "will/reply",
            "w-1"
        ],
        "{got:?}"
    );
    assert_eq!(f[7], "1");
    assert!((29..=30).contains(&expiry), "{expiry}");
}

#[test]
fn paho_v5_over_websocket_reads_and_sends_the_same_properties() {
    if !have_paho() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    let v5 = ["--mqtt", "5"];
    let mut sub = Paho::connect_with(broker.ws(), "props-paho-sub", "127.0.0.170", &[], &v5);
    sub.subscribe("pp/#", 1);
    let mut publisher = Paho::connect_with(
        broker.tcp(),
        "props-paho-pub",
        "127.0.0.171",
        &[],
        &["--mqtt", "5", "--transport", "tcp"],
    );
    publisher.command(json!({
        "op": "pub", "topic": "pp/x", "payload": "hi", "qos": 1,
        "props": {
            "user_properties": [["a", "1"], ["a", "2"]],
            "content_type": "application/json",
            "response_topic": "pp/reply",
            "correlation_data": "c-9",
            "payload_format_indicator": 1,
            "message_expiry_interval": 120
        }
    }));
    publisher.expect("published");
    let got = sub.expect("message");
    let props = &got["props"];
    assert_eq!(
        props["user_properties"],
        json!([["a", "1"], ["a", "2"]]),
        "{got}"
    );
    assert_eq!(props["content_type"], "application/json");
    assert_eq!(props["response_topic"], "pp/reply");
    assert_eq!(props["correlation_data"], "c-9");
    assert_eq!(props["payload_format_indicator"], 1);
    let expiry = props["message_expiry_interval"].as_u64().unwrap();
    assert!((119..=120).contains(&expiry), "{got}");
}
