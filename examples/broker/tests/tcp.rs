//! MQTT over TCP with real clients (mosquitto_pub/mosquitto_sub) and a raw client for the
//! misbehaving cases: keep-alive, takeover, will messages, malformed packets, access control,
//! `ctl` output, configuration file and graceful shutdown.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, BrokerProcess, RawClient, WsClient, connect_packet, have_mosquitto};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::LastWill;

fn mosquitto(bin: &str, broker: &BrokerProcess, args: &[&str]) -> Command {
    let mut command = Command::new(bin);
    command.args(["-h", "127.0.0.1", "-p", &broker.tcp().port().to_string()]);
    // MQTT 3.1.1 unless the test asks for another version.
    if !args.contains(&"-V") {
        command.args(["-V", "mqttv311"]);
    }
    command.args(args);
    command
}

fn wait_subscriptions(broker: &BrokerProcess, clientid: &str, count: u64) {
    common::wait_for(Duration::from_secs(10), || {
        (broker.client(clientid)["subscriptions_cnt"] == count).then_some(())
    })
    .unwrap_or_else(|| panic!("{clientid} never had {count} subscriptions"));
}

#[test]
fn mosquitto_clients_publish_subscribe_retained_and_the_admin_api_shows_the_real_peer() {
    if !have_mosquitto() {
        return;
    }
    let broker = BrokerProcess::start(&[]);

    let status = mosquitto(
        "mosquitto_pub",
        &broker,
        &[
            "-A",
            "127.0.0.102",
            "-t",
            "realip/retained",
            "-m",
            "kept",
            "-r",
            "-q",
            "1",
        ],
    )
    .status()
    .unwrap();
    assert!(status.success());

    let sub = mosquitto(
        "mosquitto_sub",
        &broker,
        &[
            "-A",
            "127.0.0.101",
            "-i",
            "sub-101",
            "-k",
            "30",
            "-q",
            "1",
            "-t",
            "realip/#",
            "-t",
            "other/+/x",
            "-C",
            "4",
            "-W",
            "20",
            "-F",
            "%r %q %t %p",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    wait_subscriptions(&broker, "sub-101", 2);

    let client = broker.client("sub-101");
    assert_eq!(client["clientid"], "sub-101");
    assert_eq!(client["ip_address"], "127.0.0.101");
    assert_eq!(client["listener"], "tcp:default");
    assert_eq!(client["proto_ver"], 4);
    assert_eq!(client["keepalive"], 30);
    assert_eq!(client["ip_source"], "socket");
    let port = client["port"].as_u64().unwrap();
    assert_eq!(client["peername"], format!("127.0.0.101:{port}"));
    assert_eq!(client["socket_peer"], format!("127.0.0.101:{port}"));
    assert_eq!(client["sockname"], broker.tcp().to_string());
    assert!(client.get("proxy").is_none() && client.get("forwarded").is_none());

    for (topic, message, qos) in [
        ("realip/a/b", "zero", "0"),
        ("realip/c", "one", "1"),
        ("other/y/x", "wild", "1"),
    ] {
        let status = mosquitto(
            "mosquitto_pub",
            &broker,
            &["-A", "127.0.0.102", "-t", topic, "-m", message, "-q", qos],
        )
        .status()
        .unwrap();
        assert!(status.success());
    }
    let out = sub.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_sub failed; logs:\n{}",
        broker.logs()
    );
    let lines: Vec<_> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        [
            "1 1 realip/retained kept",
            "0 0 realip/a/b zero",
            "0 1 realip/c one",
            "0 1 other/y/x wild"
        ]
    );

    let (status, list) = broker.get("/api/v5/clients");
    assert_eq!(status, 200);
    assert!(list["data"].is_array() && list["meta"]["count"].is_u64());
    let (status, missing) = broker.get("/api/v5/clients/nobody");
    assert_eq!(status, 404);
    assert_eq!(missing["code"], "CLIENTID_NOT_FOUND");

    let logs = broker.wait_log("client=sub-101 peername=127.0.0.101");
    assert!(logs.contains("client connected"), "{logs}");
}

#[test]
fn ctl_clients_show_and_list_print_the_emqx_style_line() {
    if !have_mosquitto() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    let mut sub = mosquitto(
        "mosquitto_sub",
        &broker,
        &[
            "-A",
            "127.0.0.103",
            "-i",
            "ctl-client",
            "-t",
            "x",
            "-W",
            "30",
        ],
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let client = broker.client("ctl-client");
    let port = client["port"].as_u64().unwrap();
    let expected = format!(
        "Client(ctl-client, listener=tcp:default, peername=127.0.0.103:{port}, sockname={}, socket_peer=127.0.0.103:{port})",
        broker.tcp()
    );
    let admin = broker.admin.to_string();

    let show = Command::new(BIN)
        .args(["ctl", "--admin", &admin, "clients", "show", "ctl-client"])
        .output()
        .unwrap();
    assert!(show.status.success());
    assert_eq!(
        String::from_utf8(show.stdout).unwrap(),
        format!("{expected}\n")
    );

    let list = Command::new(BIN)
        .args(["ctl", "--admin", &admin, "clients", "list"])
        .output()
        .unwrap();
    assert!(list.status.success());
    assert_eq!(
        String::from_utf8(list.stdout).unwrap(),
        format!("{expected}\n")
    );

    let missing = Command::new(BIN)
        .args(["ctl", "--admin", &admin, "clients", "show", "nobody"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(String::from_utf8(missing.stdout).unwrap(), "Not Found.\n");

    let _ = sub.kill();
    let _ = sub.wait();

    // No broker behind the address: a clear error and exit code 2.
    drop(broker);
    let down = Command::new(BIN)
        .args(["ctl", "--admin", &admin, "clients", "list"])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(2));
    assert!(
        String::from_utf8(down.stderr)
            .unwrap()
            .contains("cannot reach the admin API")
    );
}

#[test]
fn a_silent_client_is_dropped_after_one_and_a_half_keepalives_and_a_pinging_one_stays() {
    let broker = BrokerProcess::start(&[]);
    let mut silent = RawClient::connect_from("127.0.0.104", broker.tcp(), b"");
    assert_eq!(silent.handshake(connect_packet("silent", 1)), 0);
    let mut pinging = RawClient::connect_from("127.0.0.105", broker.tcp(), b"");
    assert_eq!(pinging.handshake(connect_packet("pinging", 1)), 0);

    let start = Instant::now();
    let pinger = std::thread::spawn(move || {
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(500));
            pinging.ping();
        }
        pinging
    });
    assert!(silent.recv().is_none(), "the silent client was not closed");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1300) && elapsed < Duration::from_secs(4),
        "closed after {elapsed:?}, expected about 1.5 s"
    );
    let mut pinging = pinger.join().unwrap();
    pinging.ping();
    assert_eq!(broker.client("pinging")["clientid"], "pinging");
    let logs = broker.wait_log("keepalive timeout");
    assert!(logs.contains("client=silent"), "{logs}");
}

#[test]
fn takeover_closes_the_first_connection_and_wills_fire_only_on_abnormal_ends() {
    let broker = BrokerProcess::start(&[]);
    let mut watcher = RawClient::connect_from("127.0.0.106", broker.tcp(), b"");
    assert_eq!(watcher.handshake(connect_packet("watcher", 60)), 0);
    watcher.subscribe("wills/#", QoS::AtLeastOnce);

    let with_will = |id: &str| {
        let mut connect = connect_packet(id, 60);
        connect.last_will = Some(LastWill::new(
            format!("wills/{id}"),
            format!("{id} gone"),
            QoS::AtLeastOnce,
            false,
        ));
        connect
    };

    let mut first = RawClient::connect_from("127.0.0.107", broker.tcp(), b"");
    assert_eq!(first.handshake(with_will("dup")), 0);
    let mut second = RawClient::connect_from("127.0.0.108", broker.tcp(), b"");
    assert_eq!(second.handshake(with_will("dup")), 0);
    assert!(
        first.recv().is_none(),
        "the first connection survived the takeover"
    );
    let will = watcher.next_publish();
    assert_eq!(
        (will.topic.as_str(), &will.payload[..]),
        ("wills/dup", &b"dup gone"[..])
    );

    second.ping();
    let record = broker.client("dup");
    assert_eq!(record["socket_peer"], second.local_addr().to_string());
    assert_eq!(record["ip_address"], "127.0.0.108");
    broker.wait_log("reason=takenover");

    // A clean DISCONNECT sends no will...
    second.send(rumqttc::mqttbytes::v4::Packet::Disconnect);
    assert!(second.recv().is_none());
    // ...an abrupt close does.
    let mut abrupt = RawClient::connect_from("127.0.0.109", broker.tcp(), b"");
    assert_eq!(abrupt.handshake(with_will("abrupt")), 0);
    abrupt.stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(abrupt);
    let will = watcher.next_publish();
    assert_eq!(
        will.topic, "wills/abrupt",
        "the only will after dup's must be abrupt's"
    );
}

#[test]
fn a_malformed_packet_closes_that_client_only() {
    let broker = BrokerProcess::start(&[]);
    let mut watcher = RawClient::connect_from("127.0.0.110", broker.tcp(), b"");
    assert_eq!(watcher.handshake(connect_packet("iso-watcher", 60)), 0);
    watcher.subscribe("iso/#", QoS::AtMostOnce);

    // Reserved packet type 15 after a valid CONNECT.
    let mut bad = RawClient::connect_from("127.0.0.111", broker.tcp(), b"");
    assert_eq!(bad.handshake(connect_packet("iso-bad", 60)), 0);
    bad.send_bytes(&[0xF0, 0x00]);
    assert!(bad.recv().is_none());
    // Not MQTT at all.
    let mut http = RawClient::connect_from(
        "127.0.0.112",
        broker.tcp(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(http.recv().is_none());
    // A remaining length that never ends.
    let mut endless = RawClient::connect_from("127.0.0.113", broker.tcp(), b"");
    assert_eq!(endless.handshake(connect_packet("iso-endless", 60)), 0);
    endless.send_bytes(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]);
    assert!(endless.recv().is_none());

    let logs = broker.wait_log("malformed packet");
    assert!(
        logs.lines()
            .any(|l| l.contains("client=iso-bad") && l.contains("malformed packet")),
        "{logs}"
    );

    let mut publisher = RawClient::connect_from("127.0.0.114", broker.tcp(), b"");
    assert_eq!(publisher.handshake(connect_packet("iso-pub", 60)), 0);
    publisher.publish("iso/ok", b"still here", QoS::AtLeastOnce, false);
    let got = watcher.next_publish();
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("iso/ok", &b"still here"[..])
    );
    watcher.ping();
}

#[test]
fn deny_and_allow_use_the_real_address_and_refuse_with_connack_5() {
    let broker = BrokerProcess::start(&["--deny", "127.0.0.66/32"]);
    let mut denied = RawClient::connect_from("127.0.0.66", broker.tcp(), b"");
    assert_eq!(denied.handshake(connect_packet("denied-66", 60)), 5);
    assert!(
        denied.recv().is_none(),
        "a denied client must be disconnected"
    );
    let mut fine = RawClient::connect_from("127.0.0.67", broker.tcp(), b"");
    assert_eq!(fine.handshake(connect_packet("fine-67", 60)), 0);
    let logs = broker.wait_log("client denied");
    let line = logs.lines().find(|l| l.contains("client denied")).unwrap();
    assert!(
        line.contains("client=denied-66") && line.contains("peername=127.0.0.66:"),
        "{line}"
    );
    assert!(line.contains("--deny"), "{line}");
    assert_eq!(broker.get("/api/v5/clients/denied-66").0, 404);

    if have_mosquitto() {
        let out = mosquitto(
            "mosquitto_pub",
            &broker,
            &["-A", "127.0.0.66", "-t", "t", "-m", "m"],
        )
        .output()
        .unwrap();
        assert!(
            !out.status.success(),
            "mosquitto_pub from a denied address succeeded"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not authori"),
            "{out:?}"
        );
    }

    let allow = BrokerProcess::start(&["--allow", "127.0.0.70/31"]);
    let mut inside = RawClient::connect_from("127.0.0.71", allow.tcp(), b"");
    assert_eq!(inside.handshake(connect_packet("inside", 60)), 0);
    let mut outside = RawClient::connect_from("127.0.0.72", allow.tcp(), b"");
    assert_eq!(outside.handshake(connect_packet("outside", 60)), 5);
    assert!(
        allow
            .wait_log("client denied")
            .contains("is not in --allow")
    );
}

#[test]
fn config_file_is_read_and_the_command_line_overrides_it() {
    let dir = std::env::temp_dir().join(format!("realip-broker-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broker.toml");
    std::fs::write(
        &file,
        "tcp = \"127.0.0.1:0\"\nws = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndeny = [\"127.0.0.0/8\"]\n",
    )
    .unwrap();
    let mut command = Command::new(BIN);
    command.args([
        "--config",
        file.to_str().unwrap(),
        "--ws",
        "off",
        "--deny",
        "127.0.0.80",
    ]);
    let broker = BrokerProcess::spawn(command);
    assert!(broker.ws.is_none(), "--ws off on the command line must win");
    // The command line's --deny replaced the file's list.
    let mut client = RawClient::connect_from("127.0.0.81", broker.tcp(), b"");
    assert_eq!(client.handshake(connect_packet("from-81", 60)), 0);
    let mut client = RawClient::connect_from("127.0.0.80", broker.tcp(), b"");
    assert_eq!(client.handshake(connect_packet("from-80", 60)), 5);

    let bad = Command::new(BIN)
        .args([
            "--config",
            file.to_str().unwrap(),
            "--tcp",
            "not-an-address",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8(bad.stderr)
            .unwrap()
            .contains("not-an-address")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_and_sigint_close_clients_and_exit_zero() {
    for signal in ["TERM", "INT"] {
        let broker = BrokerProcess::start(&[]);
        let mut client = RawClient::connect_from("127.0.0.90", broker.tcp(), b"");
        assert_eq!(client.handshake(connect_packet("bye", 60)), 0);
        let mut ws = WsClient::connect("127.0.0.91", broker.ws(), b"", "");
        let mut connect = bytes::BytesMut::new();
        connect_packet("bye-ws", 60).write(&mut connect).unwrap();
        ws.send(&connect);
        assert_eq!(ws.recv(), [0x20, 0x02, 0x00, 0x00]);
        broker.client("bye-ws");
        let start = Instant::now();
        let status = broker.signal_and_wait(signal);
        assert!(
            status.success(),
            "exit status after SIG{signal}: {status:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "shutdown took {:?}",
            start.elapsed()
        );
        assert!(client.recv().is_none());
        // The WebSocket client gets a close frame (or the connection ends).
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut ws.stream, &mut rest);
        assert!(
            rest.is_empty() || rest[0] == 0x88,
            "unexpected bytes after shutdown: {rest:?}"
        );
    }
}

#[test]
fn mqtt_5_clients_are_served_and_3_1_clients_refused() {
    if !have_mosquitto() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    let v5 = |args: &[&'static str]| [&["-V", "mqttv5"][..], args].concat();
    let pub5 = |args: &[&'static str]| {
        let status = mosquitto("mosquitto_pub", &broker, &v5(args))
            .status()
            .unwrap();
        assert!(status.success(), "mosquitto_pub -V mqttv5 {args:?}");
    };
    pub5(&[
        "-A",
        "127.0.0.131",
        "-t",
        "five/retained",
        "-m",
        "kept",
        "-r",
        "-q",
        "1",
    ]);
    let sub = mosquitto(
        "mosquitto_sub",
        &broker,
        &v5(&[
            "-A",
            "127.0.0.130",
            "-i",
            "v5-sub",
            "-q",
            "1",
            "-t",
            "five/#",
            "-C",
            "4",
            "-W",
            "20",
            "-F",
            "%r %q %t %p",
        ]),
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    wait_subscriptions(&broker, "v5-sub", 1);
    let record = broker.client("v5-sub");
    assert_eq!(record["proto_ver"], 5);
    assert_eq!(record["ip_address"], "127.0.0.130");
    for (topic, message, qos) in [
        ("five/0", "zero", "0"),
        ("five/1", "one", "1"),
        ("five/2", "two", "2"),
    ] {
        pub5(&["-A", "127.0.0.131", "-t", topic, "-m", message, "-q", qos]);
    }
    let out = sub.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_sub -V mqttv5 failed; logs:\n{}",
        broker.logs()
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "1 1 five/retained kept\n0 0 five/0 zero\n0 1 five/1 one\n0 1 five/2 two\n"
    );

    // MQTT 3.1 (protocol level 3) is not served.
    let out = mosquitto(
        "mosquitto_pub",
        &broker,
        &["-V", "mqttv31", "-t", "t", "-m", "m"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success(), "MQTT 3.1 was accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_ascii_lowercase()
            .contains("unacceptable protocol version")
    );
    broker.wait_log("protocol_level=3");
}

#[test]
fn persistent_sessions_with_mosquitto_sub_and_kick_from_the_admin_api() {
    if !have_mosquitto() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    // clean session = 0 (-c): subscribe, then leave.
    let first = mosquitto(
        "mosquitto_sub",
        &broker,
        &["-i", "durable", "-c", "-q", "1", "-t", "durable/#", "-E"],
    )
    .output()
    .unwrap();
    assert!(first.status.success(), "{first:?}");
    // Still listed, as a disconnected session (once the broker has seen it leave).
    common::wait_for(Duration::from_secs(10), || {
        let (status, record) = broker.get("/api/v5/clients/durable");
        (status == 200 && record["connected"] == false).then_some(())
    })
    .expect("the disconnected session is listed");

    // Published while it is away, at QoS 1: queued.
    let status = mosquitto(
        "mosquitto_pub",
        &broker,
        &["-t", "durable/x", "-m", "while away", "-q", "1"],
    )
    .status()
    .unwrap();
    assert!(status.success());

    let again = mosquitto(
        "mosquitto_sub",
        &broker,
        &[
            "-i",
            "durable",
            "-c",
            "-q",
            "1",
            "-t",
            "durable/#",
            "-C",
            "1",
            "-W",
            "10",
            "-v",
        ],
    )
    .output()
    .unwrap();
    assert!(again.status.success(), "{again:?}");
    assert_eq!(
        String::from_utf8(again.stdout).unwrap(),
        "durable/x while away\n"
    );

    // DELETE /api/v5/clients/{id} disconnects the client.
    let mut client = RawClient::connect_from("127.0.0.95", broker.tcp(), b"");
    assert_eq!(client.handshake(connect_packet("to-kick", 60)), 0);
    assert_eq!(
        common::http(broker.admin, "DELETE", "/api/v5/clients/to-kick").0,
        204
    );
    assert!(client.recv().is_none());
    broker.wait_log("reason=kicked");
    assert_eq!(
        common::http(broker.admin, "DELETE", "/api/v5/clients/to-kick").0,
        404
    );
}

#[test]
fn unsubscribe_retained_clear_and_qos2_publish() {
    let broker = BrokerProcess::start(&[]);
    let mut sub = RawClient::connect_from("127.0.0.96", broker.tcp(), b"");
    assert_eq!(sub.handshake(connect_packet("unsub", 60)), 0);
    sub.subscribe("u/a", QoS::AtLeastOnce);
    sub.subscribe("u/+", QoS::AtMostOnce);

    let mut publisher = RawClient::connect_from("127.0.0.97", broker.tcp(), b"");
    assert_eq!(publisher.handshake(connect_packet("unsub-pub", 60)), 0);
    publisher.publish("u/a", b"1", QoS::AtLeastOnce, true);
    // Two matching filters, one copy, at the highest granted QoS.
    let got = sub.next_publish();
    assert_eq!((got.qos, &got.payload[..]), (QoS::AtLeastOnce, &b"1"[..]));

    let mut unsubscribe = rumqttc::mqttbytes::v4::Unsubscribe::new("u/a");
    unsubscribe.pkid = 77;
    let mut out = bytes::BytesMut::new();
    unsubscribe.write(&mut out).unwrap();
    sub.send_bytes(&out);
    assert!(
        matches!(sub.recv(), Some(rumqttc::mqttbytes::v4::Packet::UnsubAck(ack)) if ack.pkid == 77)
    );
    publisher.publish("u/a", b"2", QoS::AtLeastOnce, false);
    let got = sub.next_publish();
    assert_eq!(
        (got.qos, &got.payload[..]),
        (QoS::AtMostOnce, &b"2"[..]),
        "only u/+ is left"
    );

    // An empty retained payload clears the retained message.
    publisher.publish("u/a", b"", QoS::AtMostOnce, true);
    assert_eq!(&sub.next_publish().payload[..], b"");
    let mut late = RawClient::connect_from("127.0.0.98", broker.tcp(), b"");
    assert_eq!(late.handshake(connect_packet("late", 60)), 0);
    late.subscribe("u/#", QoS::AtLeastOnce);
    late.ping(); // a PINGRESP, not a retained PUBLISH, comes next

    if have_mosquitto() {
        // QoS 2 from a real client: PUBREC/PUBREL/PUBCOMP, delivered at QoS 1.
        let status = mosquitto(
            "mosquitto_pub",
            &broker,
            &["-t", "u/q2", "-m", "two", "-q", "2"],
        )
        .status()
        .unwrap();
        assert!(status.success());
        let got = late.next_publish();
        assert_eq!(
            (got.topic.as_str(), got.qos, &got.payload[..]),
            ("u/q2", QoS::AtLeastOnce, &b"two"[..])
        );
    }
}
