//! `--backlog`: every listener of the broker queues that many connections (by default the
//! system's maximum), as `ss` shows for a listening socket (its `Send-Q` column).

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::{BrokerProcess, have};

/// The listen backlog of the listening socket on `addr`.
fn backlog_of(addr: SocketAddr) -> u32 {
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", addr.port())])
        .output()
        .expect("run ss");
    let text = String::from_utf8(out.stdout).unwrap();
    // State Recv-Q Send-Q Local Peer
    let send_q = text
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no listening socket on {addr} in `ss` output {text:?}"));
    send_q.parse().unwrap()
}

#[test]
fn every_listener_gets_the_backlog() {
    if !have(
        "ss (iproute2)",
        Command::new("ss").arg("-V").output().is_ok(),
    ) {
        return;
    }
    let broker = BrokerProcess::start(&["--backlog", "777"]);
    for addr in [broker.tcp(), broker.ws(), broker.admin] {
        assert_eq!(backlog_of(addr), 777, "listener on {addr}");
    }

    let broker = BrokerProcess::start(&[]);
    let default = realip_listener::default_backlog();
    for addr in [broker.tcp(), broker.ws(), broker.admin] {
        assert_eq!(backlog_of(addr), default, "listener on {addr}");
    }
}
