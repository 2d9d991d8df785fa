//! Shared broker state: sessions by client id, subscriptions, retained messages.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use realip_core::{ClientAddr, PeerAddr};
use rumqttc::mqttbytes::QoS;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::acl::Acl;

/// Messages queued for one connection before it is considered a slow consumer.
const CONNECTION_QUEUE: usize = 1024;
/// QoS 1 messages kept for an offline persistent session (3.1.1 clean session = 0, or MQTT 5
/// session expiry interval > 0).
const OFFLINE_QUEUE: usize = 1000;

/// What is known about a connection when it is accepted, before CONNECT.
#[derive(Clone, Debug)]
pub(crate) struct ConnMeta {
    /// `tcp:default` or `ws:default`.
    pub(crate) listener: &'static str,
    /// The real client (PROXY header, forwarded header, or the socket peer).
    pub(crate) client: ClientAddr,
    /// The TCP peer of the socket (the proxy, when there is one).
    pub(crate) socket_peer: PeerAddr,
    /// The address the client connected to: the PROXY destination when a header was used,
    /// else the socket's local address.
    pub(crate) sockname: Option<SocketAddr>,
    /// The PROXY header, as JSON, when one was used.
    pub(crate) proxy: Option<serde_json::Value>,
    /// The forwarded header lines that decided `client`, when they did, as JSON.
    pub(crate) forwarded: Option<serde_json::Value>,
}

/// A connected client, as the admin API shows it.
#[derive(Clone, Debug)]
pub(crate) struct ClientInfo {
    pub(crate) clientid: String,
    pub(crate) meta: ConnMeta,
    pub(crate) proto_ver: u8,
    pub(crate) keepalive: u16,
    /// 3.1.1 clean session / MQTT 5 clean start: discard any previous session.
    pub(crate) clean_start: bool,
    /// Whether the session outlives the connection (3.1.1 clean session = 0, MQTT 5 session
    /// expiry interval > 0; expiry itself is not enforced: the session lives until the broker
    /// stops or a clean start replaces it).
    pub(crate) persistent: bool,
    pub(crate) connected_at: SystemTime,
}

/// Subscription options (MQTT 5; 3.1.1 subscriptions use the defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SubOptions {
    /// Granted QoS.
    pub(crate) qos: QoS,
    /// Do not deliver the client's own publishes.
    pub(crate) no_local: bool,
    /// Keep the RETAIN flag of forwarded publishes.
    pub(crate) retain_as_published: bool,
    /// 0: send retained messages on subscribe, 1: only for a new subscription, 2: never.
    pub(crate) retain_handling: u8,
}

impl SubOptions {
    pub(crate) const fn qos(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }
}

/// A message on its way to one subscriber.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub(crate) topic: Arc<str>,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
}

/// Why the broker closes a connection from the outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Another connection CONNECTed with the same client id.
    TakenOver,
    /// The admin API kicked the client out.
    Kicked,
}

impl CloseReason {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::TakenOver => "takenover",
            Self::Kicked => "kicked",
        }
    }
}

/// What a successful registration hands to the connection task.
#[derive(Debug)]
pub(crate) struct Registration {
    pub(crate) conn_id: u64,
    pub(crate) session_present: bool,
    pub(crate) rx: mpsc::Receiver<Delivery>,
    pub(crate) close: oneshot::Receiver<CloseReason>,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    tx: mpsc::Sender<Delivery>,
    close: Option<oneshot::Sender<CloseReason>>,
    info: Arc<ClientInfo>,
}

#[derive(Debug, Default)]
struct Session {
    subs: BTreeMap<String, SubOptions>,
    persistent: bool,
    conn: Option<Conn>,
    pending: VecDeque<Delivery>,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<String, Session>,
    retained: BTreeMap<String, Delivery>,
}

/// The broker: shared by every connection task and the admin API.
#[derive(Debug)]
pub(crate) struct Broker {
    state: Mutex<State>,
    acl: Acl,
    next_conn: AtomicU64,
    active: AtomicUsize,
    idle: Notify,
    shutdown: watch::Sender<bool>,
}

impl Broker {
    pub(crate) fn new(acl: Acl) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            acl,
            next_conn: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            shutdown: watch::Sender::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in another task while holding the lock leaves consistent maps behind:
        // every critical section below completes its updates before anything can panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn acl(&self) -> &Acl {
        &self.acl
    }

    /// A receiver that changes to `true` when the broker shuts down.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Counts a connection task for graceful shutdown; drop the guard when it ends.
    pub(crate) fn track(self: &Arc<Self>) -> ConnGuard {
        self.active.fetch_add(1, Ordering::SeqCst);
        ConnGuard {
            broker: Arc::clone(self),
        }
    }

    /// Asks every connection to close and waits (up to `grace`) until they have.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        self.shutdown.send_replace(true);
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.active.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!(
                remaining = self.active.load(Ordering::SeqCst),
                "connections still open after the shutdown grace period"
            );
        }
    }

    /// Registers a CONNECTed client; an existing connection with the same id is closed.
    pub(crate) fn register(&self, info: ClientInfo) -> Registration {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
        let (close_tx, close) = oneshot::channel();
        let clientid = info.clientid.clone();
        let (clean_start, persistent) = (info.clean_start, info.persistent);
        let mut state = self.lock();
        let session = state.sessions.entry(clientid).or_default();
        if let Some(old) = session.conn.take() {
            if let Some(close) = old.close {
                let _ = close.send(CloseReason::TakenOver);
            }
        }
        let session_present = if clean_start {
            *session = Session::default();
            false
        } else {
            // A previous session exists if it was persistent and had state.
            session.persistent && (!session.subs.is_empty() || !session.pending.is_empty())
        };
        session.persistent = persistent;
        for delivery in session.pending.drain(..) {
            let _ = tx.try_send(delivery);
        }
        session.conn = Some(Conn {
            id: conn_id,
            tx,
            close: Some(close_tx),
            info: Arc::new(info),
        });
        Registration {
            conn_id,
            session_present,
            rx,
            close,
        }
    }

    /// Forgets a connection (if it is still the current one for its client id). A clean
    /// session is dropped with it; a persistent one keeps its subscriptions.
    pub(crate) fn unregister(&self, clientid: &str, conn_id: u64) {
        let mut state = self.lock();
        let Some(session) = state.sessions.get_mut(clientid) else {
            return;
        };
        if session.conn.as_ref().is_some_and(|c| c.id == conn_id) {
            session.conn = None;
            if !session.persistent {
                state.sessions.remove(clientid);
            }
        }
    }

    /// Closes a client's connection from the admin API. Returns whether it was connected.
    pub(crate) fn kick(&self, clientid: &str) -> bool {
        let mut state = self.lock();
        match state
            .sessions
            .get_mut(clientid)
            .and_then(|s| s.conn.as_mut())
        {
            Some(conn) => {
                if let Some(close) = conn.close.take() {
                    let _ = close.send(CloseReason::Kicked);
                }
                true
            }
            None => false,
        }
    }

    /// Adds (or replaces) subscriptions; returns the retained messages to send for them.
    pub(crate) fn subscribe(
        &self,
        clientid: &str,
        filters: &[(String, SubOptions)],
    ) -> Vec<Delivery> {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(session) = state.sessions.get_mut(clientid) else {
            return Vec::new();
        };
        let mut retained = Vec::new();
        for (filter, opts) in filters {
            let existed = session.subs.insert(filter.clone(), *opts).is_some();
            let send = match opts.retain_handling {
                0 => true,
                1 => !existed,
                _ => false,
            };
            if !send {
                continue;
            }
            for (topic, msg) in &state.retained {
                if topic_matches(topic, filter) {
                    retained.push(Delivery {
                        qos: min_qos(msg.qos, opts.qos),
                        retain: true,
                        ..msg.clone()
                    });
                }
            }
        }
        retained
    }

    pub(crate) fn unsubscribe(&self, clientid: &str, filters: &[String]) {
        let mut state = self.lock();
        if let Some(session) = state.sessions.get_mut(clientid) {
            for filter in filters {
                session.subs.remove(filter);
            }
        }
    }

    /// Stores or clears a retained message (when `retain`) and fans out to subscribers;
    /// `from` is the publishing client, for no-local subscriptions.
    pub(crate) fn publish(
        &self,
        from: Option<&str>,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) {
        let topic: Arc<str> = Arc::from(topic);
        let mut state = self.lock();
        if retain {
            if payload.is_empty() {
                state.retained.remove(&*topic);
            } else {
                state.retained.insert(
                    topic.to_string(),
                    Delivery {
                        topic: Arc::clone(&topic),
                        payload: payload.clone(),
                        qos,
                        retain: true,
                    },
                );
            }
        }
        for (clientid, session) in &mut state.sessions {
            let own = from == Some(clientid.as_str());
            let mut granted: Option<QoS> = None;
            let mut keep_retain = false;
            for (filter, opts) in &session.subs {
                if (own && opts.no_local) || !topic_matches(&topic, filter) {
                    continue;
                }
                if granted.is_none_or(|g| (opts.qos as u8) > (g as u8)) {
                    granted = Some(opts.qos);
                }
                keep_retain |= opts.retain_as_published;
            }
            let Some(granted) = granted else { continue };
            let delivery = Delivery {
                topic: Arc::clone(&topic),
                payload: payload.clone(),
                qos: min_qos(qos, granted),
                retain: retain && keep_retain,
            };
            let Some(conn) = &session.conn else {
                if session.persistent && delivery.qos != QoS::AtMostOnce {
                    if session.pending.len() >= OFFLINE_QUEUE {
                        session.pending.pop_front();
                    }
                    session.pending.push_back(delivery);
                }
                continue;
            };
            if conn.tx.try_send(delivery).is_err() {
                tracing::warn!(client = %clientid, topic = %topic, "slow subscriber: message dropped");
            }
        }
    }

    /// Connected clients with their subscription counts, sorted by client id.
    pub(crate) fn clients(&self) -> Vec<(Arc<ClientInfo>, usize)> {
        let state = self.lock();
        let mut clients: Vec<_> = state
            .sessions
            .values()
            .filter_map(|s| s.conn.as_ref().map(|c| (Arc::clone(&c.info), s.subs.len())))
            .collect();
        clients.sort_by(|a, b| a.0.clientid.cmp(&b.0.clientid));
        clients
    }

    /// One connected client.
    pub(crate) fn client(&self, clientid: &str) -> Option<(Arc<ClientInfo>, usize)> {
        let state = self.lock();
        let session = state.sessions.get(clientid)?;
        session
            .conn
            .as_ref()
            .map(|c| (Arc::clone(&c.info), session.subs.len()))
    }
}

/// Decrements the broker's connection count when a connection task ends.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    broker: Arc<Broker>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.broker.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.broker.idle.notify_waiters();
        }
    }
}

pub(crate) fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

/// Whether a topic name is valid for PUBLISH: not empty, no wildcards, no NUL.
pub(crate) fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Whether a topic filter is valid for SUBSCRIBE: `+` fills a whole level, `#` is a whole,
/// last level.
pub(crate) fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// MQTT topic matching: `+` matches one level, a trailing `#` any number (including zero) of
/// levels; filters starting with a wildcard do not match topics starting with `$`.
///
/// Not the codec's `rumqttc::mqttbytes::matches` (0.25): it slices the topic's first byte,
/// which panics on a topic starting with a multi-byte character, and it refuses every topic
/// starting with `$`, even for a filter such as `$SYS/#`.
pub(crate) fn topic_matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match levels.next() {
            Some(level) if f == "+" || f == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_matching() {
        for (topic, filter) in [
            ("a/b/c", "a/b/c"),
            ("a/b/c", "a/+/c"),
            ("a/b/c", "a/#"),
            ("a", "a/#"),
            ("a/b/c", "#"),
            ("a//c", "a/+/c"),
            ("/a", "+/a"),
            ("$SYS/x", "$SYS/#"),
            ("ä/ö", "+/ö"),
        ] {
            assert!(topic_matches(topic, filter), "{topic} {filter}");
        }
        for (topic, filter) in [
            ("a/b/c", "a/b"),
            ("a/b", "a/b/c"),
            ("a/b/c", "a/+"),
            ("$SYS/x", "#"),
            ("$SYS/x", "+/x"),
            ("b", "a/#"),
        ] {
            assert!(!topic_matches(topic, filter), "{topic} {filter}");
        }
    }

    #[test]
    fn filter_and_topic_validation() {
        for ok in ["a", "#", "+", "a/+/b", "a/#", "+/+", "/"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+/b", "#/a", "a/b#"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        assert!(
            valid_topic("a/b") && !valid_topic("a/+") && !valid_topic("") && !valid_topic("a/#")
        );
    }

    fn info(id: &str, clean: bool) -> ClientInfo {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        ClientInfo {
            clientid: id.to_owned(),
            meta: ConnMeta {
                listener: "tcp:default",
                client: ClientAddr::from_socket_addr(peer, realip_core::AddrSource::Socket),
                socket_peer: peer.into(),
                sockname: None,
                proxy: None,
                forwarded: None,
            },
            proto_ver: 4,
            keepalive: 60,
            clean_start: clean,
            persistent: !clean,
            connected_at: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn takeover_closes_the_first_connection_and_fanout_picks_the_best_qos() {
        let broker = Broker::new(Acl::default());
        let first = broker.register(info("c", true));
        let mut second = broker.register(info("c", true));
        assert_eq!(first.close.await.unwrap(), CloseReason::TakenOver);
        // The first connection's cleanup must not remove the second one.
        broker.unregister("c", first.conn_id);
        assert_eq!(broker.clients().len(), 1);

        broker.subscribe(
            "c",
            &[
                ("a/+".into(), SubOptions::qos(QoS::AtMostOnce)),
                ("a/#".into(), SubOptions::qos(QoS::AtLeastOnce)),
            ],
        );
        broker.publish(
            None,
            "a/b",
            Bytes::from_static(b"x"),
            QoS::AtLeastOnce,
            true,
        );
        let got = second.rx.recv().await.unwrap();
        assert_eq!(
            (&*got.topic, got.qos, got.retain),
            ("a/b", QoS::AtLeastOnce, false)
        );
        // Exactly one copy per subscriber, even with two matching filters.
        assert!(second.rx.try_recv().is_err());

        let retained = broker.subscribe("c", &[("a/b".into(), SubOptions::qos(QoS::AtMostOnce))]);
        assert_eq!(retained.len(), 1);
        assert!(retained[0].retain && retained[0].qos == QoS::AtMostOnce);
        broker.publish(None, "a/b", Bytes::new(), QoS::AtMostOnce, true);
        assert!(
            broker
                .subscribe("c", &[("a/b".into(), SubOptions::qos(QoS::AtMostOnce))])
                .is_empty()
        );
    }

    #[tokio::test]
    async fn no_local_retain_as_published_and_retain_handling() {
        let broker = Broker::new(Acl::default());
        let mut me = broker.register(info("me", true));
        let opts = |no_local, retain_as_published, retain_handling| SubOptions {
            qos: QoS::AtLeastOnce,
            no_local,
            retain_as_published,
            retain_handling,
        };
        broker.subscribe("me", &[("own/#".into(), opts(true, false, 0))]);
        broker.publish(
            Some("me"),
            "own/x",
            Bytes::from_static(b"mine"),
            QoS::AtMostOnce,
            false,
        );
        broker.publish(
            Some("other"),
            "own/x",
            Bytes::from_static(b"theirs"),
            QoS::AtMostOnce,
            true,
        );
        let got = me.rx.recv().await.unwrap();
        assert_eq!(&got.payload[..], b"theirs");
        assert!(!got.retain, "retain is cleared unless retain-as-published");
        assert!(
            me.rx.try_recv().is_err(),
            "no-local: own publish not delivered"
        );

        // Retain handling: 1 sends retained messages only for a new subscription, 2 never.
        assert_eq!(
            broker
                .subscribe("me", &[("own/x".into(), opts(false, true, 1))])
                .len(),
            1
        );
        assert!(
            broker
                .subscribe("me", &[("own/x".into(), opts(false, true, 1))])
                .is_empty()
        );
        assert!(
            broker
                .subscribe("me", &[("own/+".into(), opts(false, true, 2))])
                .is_empty()
        );
        broker.publish(
            Some("other"),
            "own/x",
            Bytes::from_static(b"kept"),
            QoS::AtMostOnce,
            true,
        );
        assert!(
            me.rx.recv().await.unwrap().retain,
            "retain-as-published keeps the flag"
        );
    }

    #[tokio::test]
    async fn persistent_sessions_keep_subscriptions_and_queue_qos1() {
        let broker = Broker::new(Acl::default());
        let first = broker.register(info("p", false));
        assert!(!first.session_present);
        broker.subscribe("p", &[("t".into(), SubOptions::qos(QoS::AtLeastOnce))]);
        broker.unregister("p", first.conn_id);
        broker.publish(None, "t", Bytes::from_static(b"0"), QoS::AtMostOnce, false);
        broker.publish(None, "t", Bytes::from_static(b"1"), QoS::AtLeastOnce, false);
        let mut again = broker.register(info("p", false));
        assert!(again.session_present);
        assert_eq!(&again.rx.recv().await.unwrap().payload[..], b"1");
        assert!(again.rx.try_recv().is_err());
        // A clean session discards the old state.
        let clean = broker.register(info("p", true));
        assert!(!clean.session_present);
        broker.unregister("p", clean.conn_id);
        assert!(broker.client("p").is_none());
    }
}
