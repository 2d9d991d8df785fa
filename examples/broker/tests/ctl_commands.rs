//! `realip-broker ctl` as an operator types it: options before or after the subcommand,
//! `clients kick`, `subscriptions list`, "No clients." for an empty list, and the exit codes.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{BIN, BrokerProcess, RawClient, connect_packet, wait_for};
use rumqttc::mqttbytes::QoS;

fn ctl(args: &[&str]) -> Output {
    Command::new(BIN).arg("ctl").args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn list_show_kick_and_subscriptions() {
    let broker = BrokerProcess::start(&[]);
    let admin = broker.admin.to_string();

    let empty = ctl(&["clients", "list", "--admin", &admin]);
    assert_eq!(empty.status.code(), Some(0));
    assert_eq!(stdout(&empty), "No clients.\n");
    let empty = ctl(&["--admin", &admin, "subscriptions", "list"]);
    assert_eq!(stdout(&empty), "No subscriptions.\n");

    let mut client = RawClient::connect_from("127.0.0.161", broker.tcp(), b"");
    assert_eq!(client.handshake(connect_packet("ctl-1", 60)), 0);
    client.subscribe("plant/+/temp", QoS::AtLeastOnce);
    let peer = client.local_addr();

    let list = ctl(&["clients", "list", "--admin", &admin]);
    assert_eq!(list.status.code(), Some(0));
    let line = stdout(&list);
    assert!(
        line.starts_with(&format!(
            "Client(ctl-1, listener=tcp:default, peername={peer}, "
        )),
        "{line}"
    );
    let subs = ctl(&["subscriptions", "--admin", &admin, "list"]);
    assert_eq!(stdout(&subs), "ctl-1 -> topic:plant/+/temp qos:1\n");

    let kick = ctl(&["clients", "kick", "ctl-1", "--admin", &admin]);
    assert_eq!(kick.status.code(), Some(0), "{kick:?}");
    assert_eq!(stdout(&kick), "ok\n");
    // The client's connection is closed.
    assert!(common::read_to_close(&mut client).len() < 64);
    wait_for(Duration::from_secs(10), || {
        (broker.get("/api/v5/clients/ctl-1").0 == 404).then_some(())
    })
    .expect("kicked client gone");

    let again = ctl(&["clients", "kick", "ctl-1", "--admin", &admin]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(stdout(&again), "Not Found.\n");
    let show = ctl(&["--admin", &admin, "clients", "show", "ctl-1"]);
    assert_eq!(show.status.code(), Some(1));
}

#[test]
fn an_unreachable_admin_api_is_exit_code_2() {
    // A port nothing listens on: bind one, then free it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = ctl(&["clients", "list", "--admin", &addr.to_string()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach the admin API"), "{stderr}");
}
