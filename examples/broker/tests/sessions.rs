//! Sessions are visible: a disconnected persistent session is listed by the admin API (and
//! `ctl`) with `connected: false`, its expiry, its queued messages and its subscriptions, as
//! EMQX lists them; `DELETE` discards it.

mod common;

use std::process::Command;

use common::{BIN, BrokerProcess, have_mosquitto};

fn mosquitto(bin: &str, broker: &BrokerProcess, args: &[&str]) {
    let out = Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &broker.tcp().port().to_string()])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{bin} {args:?}: {out:?}");
}

#[test]
fn disconnected_persistent_sessions_are_listed_with_their_state() {
    if !have_mosquitto() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    // MQTT 5, 60 s session, two subscriptions; subscribes and leaves (-E).
    mosquitto(
        "mosquitto_sub",
        &broker,
        &[
            "-V", "mqttv5", "-i", "sv-5", "-c", "-x", "60", "-q", "1", "-t", "sv/a/#", "-t",
            "sv/b", "-E",
        ],
    );
    // 3.1.1, clean session 0: never expires.
    mosquitto(
        "mosquitto_sub",
        &broker,
        &[
            "-V", "mqttv311", "-i", "sv-4", "-c", "-q", "2", "-t", "sv/a/#", "-E",
        ],
    );
    for payload in ["1", "2"] {
        mosquitto(
            "mosquitto_pub",
            &broker,
            &["-V", "mqttv5", "-q", "1", "-t", "sv/a/x", "-m", payload],
        );
    }

    let away = |id: &str| {
        common::wait_for(std::time::Duration::from_secs(10), || {
            let record = broker.client(id);
            (record["connected"] == false).then_some(record)
        })
        .unwrap_or_else(|| panic!("{id} still connected"))
    };
    let record = away("sv-5");
    assert_eq!(record["expiry_interval"], 60);
    let left = record["expires_in"].as_u64().unwrap();
    assert!((55..=60).contains(&left), "{record}");
    assert!(record["disconnected_at"].is_string(), "{record}");
    assert_eq!(record["mqueue_len"], 2);
    assert_eq!(record["subscriptions_cnt"], 2);
    assert_eq!(
        record["subscriptions"],
        serde_json::json!([{"topic": "sv/a/#", "qos": 1}, {"topic": "sv/b", "qos": 1}])
    );
    // The last connection's addresses are kept.
    assert_eq!(record["ip_address"], "127.0.0.1");
    assert_eq!(record["proto_ver"], 5);

    let record = away("sv-4");
    assert_eq!(
        record["expiry_interval"],
        serde_json::Value::Null,
        "never expires"
    );
    assert_eq!(record["mqueue_len"], 2);
    assert_eq!(
        record["subscriptions"],
        serde_json::json!([{"topic": "sv/a/#", "qos": 2}])
    );

    let (_, list) = broker.get("/api/v5/clients");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["clientid"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sv-4", "sv-5"], "{list}");

    let out = Command::new(BIN)
        .args([
            "ctl",
            "--admin",
            &broker.admin.to_string(),
            "clients",
            "list",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");

    // DELETE discards a disconnected session.
    assert_eq!(
        common::http(broker.admin, "DELETE", "/api/v5/clients/sv-5").0,
        204
    );
    assert_eq!(broker.get("/api/v5/clients/sv-5").0, 404);
}
