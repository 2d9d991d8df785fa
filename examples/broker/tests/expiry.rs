//! MQTT 5 expiry: a session is gone after its Session Expiry Interval (and at once after a
//! DISCONNECT that sets it to 0) [MQTT-3.1.2-23], [MQTT-3.14.2-2]; queued and retained messages
//! are not delivered after their Message Expiry Interval [MQTT-3.3.2-5]; a will waits for its
//! Will Delay Interval, or the end of its session if that comes first, and a reconnection
//! cancels it [MQTT-3.1.2-8], [MQTT-3.1.3-9]. With mosquitto_pub/mosquitto_sub `-V mqttv5`.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{BrokerProcess, have_mosquitto, mosquitto_cmd};

fn sub(broker: &BrokerProcess, args: &[&str]) -> Command {
    let mut command = mosquitto_cmd("mosquitto_sub", broker, "mqttv5");
    command.args(["-F", "%t %p %E"]).args(args);
    command
}

fn publish(broker: &BrokerProcess, args: &[&str]) {
    let status = mosquitto_cmd("mosquitto_pub", broker, "mqttv5")
        .args(["-q", "1"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "mosquitto_pub {args:?}");
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A persistent subscriber that subscribes and leaves at once (`-E`), with `expiry` seconds.
fn leave_session(broker: &BrokerProcess, id: &str, topic: &str, expiry: &str, extra: &[&str]) {
    let out = sub(
        broker,
        &["-i", id, "-c", "-x", expiry, "-q", "1", "-t", topic, "-E"],
    )
    .args(extra)
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn sessions_expire_after_their_interval_and_at_once_when_disconnect_says_0() {
    if !have_mosquitto() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    leave_session(&broker, "se-a", "se/#", "2", &[]);
    publish(&broker, &["-t", "se/1", "-m", "kept"]);
    // Within the interval: the session is there, with the queued message.
    let out = sub(
        &broker,
        &["-i", "se-a", "-c", "-x", "2", "-q", "1", "-t", "se/#"],
    )
    .args(["-C", "1", "-W", "5"])
    .output()
    .unwrap();
    assert_eq!(stdout(&out).trim_end(), "se/1 kept", "{out:?}");

    // After the interval: gone; the message published meanwhile is lost with it.
    publish(&broker, &["-t", "se/2", "-m", "late"]);
    std::thread::sleep(Duration::from_millis(3000));
    let out = sub(
        &broker,
        &["-i", "se-a", "-c", "-x", "2", "-q", "1", "-t", "other/#"],
    )
    .args(["-W", "2", "-d"])
    .output()
    .unwrap();
    let text = stdout(&out);
    assert!(text.contains("received CONNACK (0)"), "{text}");
    assert!(
        !text.contains("se/2"),
        "an expired session delivered: {text}"
    );

    // DISCONNECT with Session Expiry Interval 0 ends a 60 s session at once.
    leave_session(
        &broker,
        "se-b",
        "se/#",
        "60",
        &["-D", "disconnect", "session-expiry-interval", "0"],
    );
    publish(&broker, &["-t", "se/3", "-m", "nobody"]);
    let out = sub(
        &broker,
        &["-i", "se-b", "-c", "-x", "60", "-q", "1", "-t", "other/#"],
    )
    .args(["-W", "2"])
    .output()
    .unwrap();
    assert!(!stdout(&out).contains("se/3"), "{out:?}");
}

#[test]
fn expired_messages_are_not_delivered_from_the_queue_nor_as_retained() {
    if !have_mosquitto() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    leave_session(&broker, "me-a", "me/#", "60", &[]);
    publish(
        &broker,
        &[
            "-t",
            "me/short",
            "-m",
            "gone",
            "-D",
            "publish",
            "message-expiry-interval",
            "1",
        ],
    );
    publish(
        &broker,
        &[
            "-t",
            "me/long",
            "-m",
            "here",
            "-D",
            "publish",
            "message-expiry-interval",
            "60",
        ],
    );
    publish(
        &broker,
        &[
            "-t",
            "me/kept",
            "-m",
            "old",
            "-r",
            "-D",
            "publish",
            "message-expiry-interval",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(2200));
    let out = sub(
        &broker,
        &["-i", "me-a", "-c", "-x", "60", "-q", "1", "-t", "me/#"],
    )
    .args(["-W", "2"])
    .output()
    .unwrap();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let (head, expiry) = lines[0].rsplit_once(' ').unwrap();
    assert_eq!(head, "me/long here");
    let expiry: u32 = expiry.parse().unwrap();
    assert!((55..=58).contains(&expiry), "remaining expiry {expiry}");
}

fn dying_client(broker: &BrokerProcess, id: &str, will_delay: &str, expiry: &str) -> Child {
    let child = sub(
        broker,
        &["-i", id, "-c", "-x", expiry, "-t", "nothing/here"],
    )
    .args([
        "--will-topic",
        &format!("will/{id}"),
        "--will-payload",
        "bye",
    ])
    .args(["-D", "will", "will-delay-interval", will_delay])
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    broker.wait_subscriptions(id, 1);
    child
}

fn watcher(broker: &BrokerProcess, id: &str, topic: &str, wait: &str) -> Child {
    let child = sub(broker, &["-i", id, "-t", topic, "-C", "1", "-W", wait])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    broker.wait_subscriptions(id, 1);
    child
}

/// Kills a client with a will (`will_delay` s, session `expiry` s) and returns how long after
/// the kill a watcher received the will.
fn will_after_kill(broker: &BrokerProcess, id: &str, will_delay: &str, expiry: &str) -> Duration {
    let topic = format!("will/{id}");
    let watch = watcher(broker, &format!("watch-{id}"), &topic, "10");
    let mut dying = dying_client(broker, id, will_delay, expiry);
    dying.kill().unwrap();
    let died = Instant::now();
    let _ = dying.wait();
    let out = watch.wait_with_output().unwrap();
    let waited = died.elapsed();
    assert!(stdout(&out).starts_with(&format!("{topic} bye")), "{out:?}");
    waited
}

#[test]
fn a_will_waits_for_its_delay_or_the_session_end_and_a_reconnection_cancels_it() {
    if !have_mosquitto() {
        return;
    }
    let broker = BrokerProcess::start(&[]);

    // Delay 2 s within a 60 s session: published about 2 s after the client died.
    let waited = will_after_kill(&broker, "wd-1", "2", "60");
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // Delay 30 s but a 1 s session: published when the session ends.
    let waited = will_after_kill(&broker, "wd-2", "30", "1");
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    // Delay 3 s; the client is back after 1 s: no will.
    let watch = watcher(&broker, "w-watch-3", "will/wd-3", "5");
    let mut dying = dying_client(&broker, "wd-3", "3", "60");
    dying.kill().unwrap();
    let _ = dying.wait();
    std::thread::sleep(Duration::from_millis(1000));
    let back = sub(
        &broker,
        &[
            "-i",
            "wd-3",
            "-c",
            "-x",
            "60",
            "-t",
            "nothing/here",
            "-W",
            "5",
        ],
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let out = watch.wait_with_output().unwrap();
    assert!(
        !stdout(&out).contains("will/wd-3"),
        "a cancelled will was published: {out:?}"
    );
    let _ = back.wait_with_output();
}
