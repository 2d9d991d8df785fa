//! Shared broker state: sessions by client id, subscriptions, retained messages.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use realip_core::{ClientAddr, Live, PeerAddr};
use rumqttc::mqttbytes::QoS;
use tokio::sync::{Notify, watch};

use crate::acl::Acl;

/// Messages queued for one session (connected or not) before the oldest is dropped.
pub(crate) const SESSION_QUEUE: usize = 1000;

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
    /// What the TLS handshake established (TLS listeners only), as JSON.
    pub(crate) tls: Option<serde_json::Value>,
    /// The client-certificate CN that the proxy verified (PROXY v2 SSL TLV), or why there is
    /// none; what `--tls-identity cn-as-username` makes the username.
    pub(crate) verified_cn: Result<String, Cow<'static, str>>,
}

/// What the admin API and the audit log show of a connection's [`ConnMeta`], kept for as
/// long as the client is connected: the addresses inline, the JSON records (PROXY header,
/// forwarded headers, TLS), which many connections do not have, in one box.
#[derive(Clone, Debug)]
pub(crate) struct ClientMeta {
    /// `tcp:default` or `ws:default`.
    pub(crate) listener: &'static str,
    /// The real client (PROXY header, forwarded header, or the socket peer).
    pub(crate) client: ClientAddr,
    /// The TCP peer of the socket (the proxy, when there is one).
    pub(crate) socket_peer: PeerAddr,
    /// The address the client connected to.
    pub(crate) sockname: Option<SocketAddr>,
    records: Option<Box<MetaRecords>>,
}

/// The JSON records of [`ConnMeta`] (at least one of them set).
#[derive(Clone, Debug)]
struct MetaRecords {
    proxy: Option<serde_json::Value>,
    forwarded: Option<serde_json::Value>,
    tls: Option<serde_json::Value>,
}

impl ClientMeta {
    /// The PROXY header, as JSON, when one was used.
    pub(crate) fn proxy(&self) -> Option<&serde_json::Value> {
        self.records.as_ref()?.proxy.as_ref()
    }

    /// The forwarded header lines that decided `client`, when they did, as JSON.
    pub(crate) fn forwarded(&self) -> Option<&serde_json::Value> {
        self.records.as_ref()?.forwarded.as_ref()
    }

    /// What the TLS handshake established (TLS listeners only), as JSON.
    pub(crate) fn tls(&self) -> Option<&serde_json::Value> {
        self.records.as_ref()?.tls.as_ref()
    }
}

impl From<ConnMeta> for ClientMeta {
    fn from(meta: ConnMeta) -> Self {
        let ConnMeta {
            listener,
            client,
            socket_peer,
            sockname,
            proxy,
            forwarded,
            tls,
            verified_cn: _,
        } = meta;
        let records = (proxy.is_some() || forwarded.is_some() || tls.is_some()).then(|| {
            Box::new(MetaRecords {
                proxy,
                forwarded,
                tls,
            })
        });
        Self {
            listener,
            client,
            socket_peer,
            sockname,
            records,
        }
    }
}

/// A connected client, as the admin API shows it.
#[derive(Clone, Debug)]
pub(crate) struct ClientInfo {
    pub(crate) clientid: String,
    /// The CONNECT User Name.
    pub(crate) username: Option<String>,
    /// Messages and bytes of this connection.
    pub(crate) counters: Arc<crate::metrics::Counters>,
    pub(crate) meta: ClientMeta,
    pub(crate) proto_ver: u8,
    pub(crate) keepalive: u16,
    /// 3.1.1 clean session / MQTT 5 clean start: discard any previous session.
    pub(crate) clean_start: bool,
    /// Whether the session outlives the connection (3.1.1 clean session = 0, MQTT 5 session
    /// expiry interval > 0).
    pub(crate) persistent: bool,
    /// How long the session outlives the connection.
    pub(crate) expiry: Expiry,
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
    /// MQTT 5 Subscription Identifier, sent with every message this subscription matches.
    pub(crate) id: Option<u32>,
}

impl SubOptions {
    pub(crate) const fn qos(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            id: None,
        }
    }
}

/// How long a session outlives its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// It ends with the connection (3.1.1 clean session = 1, MQTT 5 interval 0).
    Now,
    /// MQTT 5 Session Expiry Interval.
    After(Duration),
    /// 3.1.1 clean session = 0, MQTT 5 interval 0xFFFFFFFF: until the broker stops.
    Never,
}

impl Expiry {
    /// The interval in seconds (`None`: never expires).
    pub(crate) fn secs(self) -> Option<u64> {
        match self {
            Self::Now => Some(0),
            Self::After(d) => Some(d.as_secs()),
            Self::Never => None,
        }
    }

    /// From an MQTT 5 Session Expiry Interval (absent = 0) [MQTT-3.1.2-23].
    pub(crate) fn from_interval(secs: Option<u32>) -> Self {
        match secs {
            None | Some(0) => Self::Now,
            Some(u32::MAX) => Self::Never,
            Some(secs) => Self::After(Duration::from_secs(u64::from(secs))),
        }
    }
}

/// A will message waiting for its Will Delay Interval (or the end of its session).
#[derive(Clone, Debug)]
pub(crate) struct PendingWill {
    pub(crate) msg: Delivery,
    pub(crate) delay: Duration,
    /// Its Message Expiry Interval, counted from when it is published.
    pub(crate) message_expiry: Option<u32>,
}

impl PendingWill {
    /// The message as published now.
    fn release(self) -> Delivery {
        let mut props = (*self.msg.props).clone();
        props.expire_after(self.message_expiry);
        Delivery {
            props: Arc::new(props),
            ..self.msg
        }
    }
}

/// The MQTT 5 properties a message carries from its publisher to its subscribers
/// [MQTT-3.3.2-4], [MQTT-3.3.2-15], [MQTT-3.3.2-17], [MQTT-3.3.2-18], [MQTT-3.3.2-20].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MessageProps {
    pub(crate) payload_format_indicator: Option<u8>,
    pub(crate) content_type: Option<String>,
    pub(crate) response_topic: Option<String>,
    pub(crate) correlation_data: Option<Bytes>,
    pub(crate) user_properties: Vec<(String, String)>,
    /// The end of the Message Expiry Interval, counted from when the broker received it.
    pub(crate) expires_at: Option<Instant>,
}

impl MessageProps {
    /// Sets the expiry from a Message Expiry Interval received now.
    pub(crate) fn expire_after(&mut self, secs: Option<u32>) {
        self.expires_at = secs.map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
    }

    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The Message Expiry Interval to send: the received one minus the time the message
    /// waited in the broker, in whole seconds rounded up [MQTT-3.3.2-6].
    pub(crate) fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }
}

/// A message on its way to subscribers.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub(crate) topic: Arc<str>,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) props: Arc<MessageProps>,
    /// The Subscription Identifiers of the subscriber's matching subscriptions
    /// [MQTT-3.3.4-3] (empty on the way in).
    pub(crate) sub_ids: Vec<u32>,
}

impl Delivery {
    #[cfg(test)]
    pub(crate) fn new(topic: &str, payload: Bytes, qos: QoS, retain: bool) -> Self {
        Self {
            topic: Arc::from(topic),
            payload,
            qos,
            retain,
            props: Arc::default(),
            sub_ids: Vec::new(),
        }
    }
}

/// An outgoing QoS 1 or 2 PUBLISH that is not complete yet.
#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    pub(crate) pkid: u16,
    pub(crate) msg: Delivery,
    /// QoS 2: PUBREC received and PUBREL sent; PUBCOMP is awaited.
    pub(crate) released: bool,
}

/// A message taken from a session's queue for sending.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The packet identifier (QoS 1 and 2), already in the session's in-flight list.
    pub(crate) pkid: u16,
    pub(crate) msg: Delivery,
}

/// Why the broker closes a connection from the outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Another connection CONNECTed with the same client id.
    TakenOver,
    /// The admin API kicked the client out.
    Kicked,
    /// The broker is shutting down.
    Shutdown,
}

impl CloseReason {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::TakenOver => "takenover",
            Self::Kicked => "kicked",
            Self::Shutdown => "shutdown",
        }
    }
}

/// What the broker tells a connection's task: messages are waiting, or the connection must
/// close and why. One allocation per connection, shared by its session and its task.
#[derive(Debug, Default)]
pub(crate) struct ConnSignal {
    wake: Notify,
    /// 0 while the connection may stay, else 1 + the [`CloseReason`] (the first one stays).
    close: AtomicU8,
}

impl ConnSignal {
    /// Wakes the task: the session's queue has messages.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Asks the task to close the connection, and wakes it.
    pub(crate) fn close(&self, reason: CloseReason) {
        let code = match reason {
            CloseReason::TakenOver => 1,
            CloseReason::Kicked => 2,
            CloseReason::Shutdown => 3,
        };
        let _ = self
            .close
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.wake.notify_one();
    }

    /// Why the connection must close, once it must.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        match self.close.load(Ordering::Acquire) {
            0 => None,
            1 => Some(CloseReason::TakenOver),
            2 => Some(CloseReason::Kicked),
            _ => Some(CloseReason::Shutdown),
        }
    }

    /// Completes at the next [`wake`](Self::wake) or [`close`](Self::close), or at once if
    /// one came since the last time this completed.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }
}

/// What a successful registration hands to the connection task.
#[derive(Debug)]
pub(crate) struct Registration {
    pub(crate) conn_id: u64,
    pub(crate) session_present: bool,
    /// Woken when the session's queue has messages or the connection must close.
    pub(crate) signal: Arc<ConnSignal>,
    /// A resumed session's incomplete outgoing messages, to re-send first and in order
    /// [MQTT-4.4.0-1], [MQTT-4.6.0-1].
    pub(crate) resend: Vec<InFlight>,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    signal: Arc<ConnSignal>,
    info: Arc<ClientInfo>,
}

#[derive(Debug, Default)]
struct Session {
    subs: BTreeMap<String, SubOptions>,
    persistent: bool,
    conn: Option<Conn>,
    /// Messages not sent yet, oldest first.
    queue: VecDeque<Delivery>,
    /// Sent QoS 1/2 messages not completed yet, in the order they were sent.
    inflight: Vec<InFlight>,
    /// The last packet identifier given to an outgoing message.
    last_pkid: u16,
    /// Inbound QoS 2 packet identifiers whose PUBLISH was received and not yet released.
    inbound_qos2: BTreeSet<u16>,
    expiry: Option<Expiry>,
    /// The last connection, once it has ended (`None` while connected).
    disconnected: Option<Box<Disconnected>>,
    /// A will message waiting to be published, and when.
    will: Option<Box<(PendingWill, Instant)>>,
    /// Messages the full queue dropped, once it has dropped one (most sessions never do).
    drops: Option<Box<crate::metrics::DropLog>>,
}

/// A session's last connection, kept while the session outlives it.
#[derive(Debug)]
struct Disconnected {
    /// When it ended.
    at: Instant,
    /// The same, as wall-clock time for the admin API.
    at_wall: SystemTime,
    /// Its record.
    info: Arc<ClientInfo>,
}

impl Session {
    /// Queues a message; a full queue drops its oldest message.
    fn enqueue(&mut self, clientid: &str, delivery: Delivery) {
        if self.queue.len() >= SESSION_QUEUE {
            if let Some(dropped) = self.queue.pop_front() {
                self.drops.get_or_insert_with(Box::default).record(
                    clientid,
                    &dropped.topic,
                    SESSION_QUEUE,
                    Instant::now(),
                );
            }
        }
        self.queue.push_back(delivery);
        if let Some(conn) = &self.conn {
            conn.signal.wake();
        }
    }

    fn view(&self, now: Instant) -> Option<SessionView> {
        let info = match &self.conn {
            Some(conn) => Arc::clone(&conn.info),
            None => Arc::clone(&self.disconnected.as_ref()?.info),
        };
        Some(SessionView {
            info,
            connected: self.conn.is_some(),
            subscriptions: self
                .subs
                .iter()
                .map(|(filter, opts)| (filter.clone(), opts.qos))
                .collect(),
            queued: self.queue.len(),
            dropped: self.drops.as_ref().map_or(0, |d| d.total()),
            inflight: self.inflight.len(),
            expiry: self.expiry.unwrap_or(Expiry::Now),
            disconnected_at: self.disconnected.as_ref().map(|d| d.at_wall),
            expires_in: match (self.disconnected_at(), self.expiry) {
                (Some(at), Some(Expiry::After(d))) => Some((at + d).saturating_duration_since(now)),
                _ => None,
            },
        })
    }

    /// When the last connection ended (`None` while connected).
    fn disconnected_at(&self) -> Option<Instant> {
        self.disconnected.as_ref().map(|d| d.at)
    }

    /// Whether a disconnected session's expiry interval has passed.
    fn expired(&self, now: Instant) -> bool {
        match (self.disconnected_at(), self.expiry) {
            (Some(at), Some(Expiry::After(d))) => at + d <= now,
            (Some(_), Some(Expiry::Now)) => true,
            _ => false,
        }
    }

    fn next_pkid(&mut self) -> Option<u16> {
        if self.inflight.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            self.last_pkid = self.last_pkid.wrapping_add(1).max(1);
            let pkid = self.last_pkid;
            if !self.inflight.iter().any(|f| f.pkid == pkid) {
                return Some(pkid);
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Boxed: the table holds a pointer per client, not a whole session per slot (and
    /// growing it moves pointers).
    sessions: HashMap<String, Box<Session>>,
    /// The client ids of the sessions without a connection (persistent ones, and those
    /// with a will waiting), which the sweep looks at; connected sessions cost it nothing.
    disconnected: HashSet<String>,
    retained: BTreeMap<String, Delivery>,
    index: Index,
}

impl State {
    /// Removes a session, and its subscriptions from the index.
    fn remove_session(&mut self, clientid: &str) {
        if let Some(session) = self.sessions.remove(clientid) {
            self.index.leave_all(clientid, &session.subs);
        }
        self.disconnected.remove(clientid);
    }
}

/// Replaces a session with an empty one, removing its subscriptions from the index.
fn reset_session(clientid: &str, session: &mut Session, index: &mut Index) {
    index.leave_all(clientid, &session.subs);
    *session = Session::default();
}

/// Who subscribes to what, beside the sessions, so that a message is matched against the
/// sessions it may concern rather than against every session: the sessions with each exact
/// filter, and those with a wildcard or shared filter (matched one by one). Every entry lives
/// exactly as long as the subscriptions it counts.
#[derive(Debug, Default)]
struct Index {
    /// Filters without wildcards (and not shared) → the client ids subscribed to them.
    exact: HashMap<String, HashSet<String>>,
    /// Client id → how many wildcard or shared filters it has.
    scanned: HashMap<String, usize>,
    shared: SharedGroups,
}

impl Index {
    /// `clientid` subscribed to `filter` (a new subscription, not a replaced one).
    fn join(&mut self, clientid: &str, filter: &str) {
        self.shared.join(filter);
        if is_exact(filter) {
            let ids = self.exact.entry(filter.to_owned()).or_default();
            ids.insert(clientid.to_owned());
        } else {
            *self.scanned.entry(clientid.to_owned()).or_default() += 1;
        }
    }

    /// `clientid`'s subscription to `filter` ended.
    fn leave(&mut self, clientid: &str, filter: &str) {
        self.shared.leave(filter);
        if is_exact(filter) {
            if let Some(ids) = self.exact.get_mut(filter) {
                ids.remove(clientid);
                if ids.is_empty() {
                    self.exact.remove(filter);
                }
            }
        } else if let Some(n) = self.scanned.get_mut(clientid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.scanned.remove(clientid);
            }
        }
    }

    fn leave_all(&mut self, clientid: &str, subs: &BTreeMap<String, SubOptions>) {
        for filter in subs.keys() {
            self.leave(clientid, filter);
        }
    }

    /// The client ids whose subscriptions may match `topic`: those with `topic` as an exact
    /// filter and those with a wildcard or shared filter, each once.
    fn candidates(&self, topic: &str) -> HashSet<&str> {
        let mut ids: HashSet<&str> = self.scanned.keys().map(String::as_str).collect();
        if let Some(exact) = self.exact.get(topic) {
            ids.extend(exact.iter().map(String::as_str));
        }
        ids
    }
}

/// A filter without wildcards, not shared: it matches exactly the topic of the same name.
fn is_exact(filter: &str) -> bool {
    !filter.contains(['+', '#']) && shared_filter(filter).is_none()
}

/// The shared subscriptions (`group`, `filter`) that have members: how many, and whose turn
/// is next. An entry lives exactly as long as its subscription has a member, so the groups
/// clients used and left take no memory.
#[derive(Debug, Default)]
struct SharedGroups(HashMap<(String, String), SharedGroup>);

#[derive(Debug, Default)]
struct SharedGroup {
    members: usize,
    next: usize,
}

impl SharedGroups {
    /// A session subscribed to `filter` (a new subscription, not a replaced one).
    fn join(&mut self, filter: &str) {
        if let Some((group, filter)) = shared_filter(filter) {
            let key = (group.to_owned(), filter.to_owned());
            self.0.entry(key).or_default().members += 1;
        }
    }

    /// A session's subscription to `filter` ended.
    fn leave(&mut self, filter: &str) {
        let Some((group, filter)) = shared_filter(filter) else {
            return;
        };
        let key = (group.to_owned(), filter.to_owned());
        if let Some(g) = self.0.get_mut(&key) {
            g.members = g.members.saturating_sub(1);
            if g.members == 0 {
                self.0.remove(&key);
            }
        }
    }

    /// The position of the member whose turn it is in `key`'s group, then the next one's.
    fn turn(&mut self, key: &(String, String)) -> usize {
        self.0.get_mut(key).map_or(0, |g| {
            let turn = g.next;
            g.next = g.next.wrapping_add(1);
            turn
        })
    }
}

/// A session as the admin API shows it.
#[derive(Clone, Debug)]
pub(crate) struct SessionView {
    /// The current connection's record, or the last one's.
    pub(crate) info: Arc<ClientInfo>,
    pub(crate) connected: bool,
    /// Topic filters and granted QoS.
    pub(crate) subscriptions: Vec<(String, QoS)>,
    /// Messages waiting to be sent.
    pub(crate) queued: usize,
    /// Messages the full queue dropped.
    pub(crate) dropped: u64,
    /// QoS 1/2 messages sent and not completed.
    pub(crate) inflight: usize,
    pub(crate) expiry: Expiry,
    pub(crate) disconnected_at: Option<SystemTime>,
    /// Time left before a disconnected session expires.
    pub(crate) expires_in: Option<Duration>,
}

/// What an acknowledgement from the client did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acked {
    /// It completed (PUBACK, PUBCOMP) or advanced (PUBREC) a message in flight.
    Known,
    /// No message in flight has this packet identifier in the state the ack needs.
    Unknown,
}

/// The limits the broker sets, advertised to MQTT 5 clients in CONNACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Largest packet accepted, fixed header included (MQTT 5 Maximum Packet Size).
    pub(crate) max_packet_size: u32,
    /// Highest QoS granted and accepted (MQTT 5 Maximum QoS).
    pub(crate) max_qos: QoS,
    /// Inbound QoS 2 messages a client may have unreleased (MQTT 5 Receive Maximum).
    pub(crate) receive_maximum: u16,
    /// Topic aliases a client may set (MQTT 5 Topic Alias Maximum; 0: none).
    pub(crate) topic_alias_maximum: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            max_qos: QoS::ExactlyOnce,
            receive_maximum: DEFAULT_RECEIVE_MAXIMUM,
            topic_alias_maximum: DEFAULT_TOPIC_ALIAS_MAXIMUM,
        }
    }
}

/// 1 MiB + 64 KiB: a 1 MiB payload with room for its topic and properties.
pub(crate) const DEFAULT_MAX_PACKET_SIZE: u32 = 1024 * 1024 + 64 * 1024;
/// Default Receive Maximum the broker advertises.
pub(crate) const DEFAULT_RECEIVE_MAXIMUM: u16 = 1024;
/// Default Topic Alias Maximum the broker advertises.
pub(crate) const DEFAULT_TOPIC_ALIAS_MAXIMUM: u16 = 64;

/// The broker: shared by every connection task and the admin API.
#[derive(Debug)]
pub(crate) struct Broker {
    state: Mutex<State>,
    /// `--allow` / `--deny`, replaced by a reload.
    acl: Live<Acl>,
    limits: Limits,
    /// `--tls-identity cn-as-username`.
    cn_as_username: bool,
    next_conn: AtomicU64,
    active: AtomicUsize,
    idle: Notify,
    shutdown: watch::Sender<bool>,
}

impl Broker {
    #[cfg(test)]
    pub(crate) fn new(acl: Acl, limits: Limits) -> Arc<Self> {
        Self::with_identity(acl, limits, false)
    }

    /// A broker that takes the MQTT username from the verified client certificate's CN
    /// when `cn_as_username` (`--tls-identity cn-as-username`).
    pub(crate) fn with_identity(acl: Acl, limits: Limits, cn_as_username: bool) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            acl: Live::new(acl),
            limits,
            cn_as_username,
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

    /// The allow and deny lists in force now.
    pub(crate) fn acl(&self) -> Arc<Acl> {
        self.acl.load_full()
    }

    /// The handle a reload stores new lists in.
    pub(crate) fn live_acl(&self) -> Live<Acl> {
        self.acl.clone()
    }

    /// `--tls-identity cn-as-username`.
    pub(crate) const fn cn_as_username(&self) -> bool {
        self.cn_as_username
    }

    pub(crate) const fn limits(&self) -> &Limits {
        &self.limits
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
        // Connections that have not CONNECTed yet watch `shutdown`; the others are told
        // here (and `register` tells those it registers from now on).
        for session in self.lock().sessions.values() {
            if let Some(conn) = &session.conn {
                conn.signal.close(CloseReason::Shutdown);
            }
        }
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
    pub(crate) fn register(&self, info: Arc<ClientInfo>) -> Registration {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(ConnSignal::default());
        let clientid = info.clientid.clone();
        let (clean_start, persistent, expiry) = (info.clean_start, info.persistent, info.expiry);
        let now = Instant::now();
        let mut wills = Vec::new();
        let mut guard = self.lock();
        let state = &mut *guard;
        if !state.disconnected.is_empty() {
            state.disconnected.remove(&clientid);
        }
        let session = state.sessions.entry(clientid).or_default();
        if session.expired(now) {
            // Expired before the periodic sweep saw it: gone, and its will is due.
            if let Some(will) = session.will.take() {
                wills.push(will.0.release());
            }
            reset_session(&info.clientid, session, &mut state.index);
        }
        // A will still waiting for its delay is cancelled by the reconnection [MQTT-3.1.3-9].
        if session.will.take().is_some() {
            tracing::debug!(client = %info.clientid, "delayed will message cancelled: the client is back");
        }
        if let Some(old) = session.conn.take() {
            old.signal.close(CloseReason::TakenOver);
        }
        let session_present = if clean_start {
            reset_session(&info.clientid, session, &mut state.index);
            false
        } else {
            // A previous session exists if it was persistent and had state.
            session.persistent
                && (!session.subs.is_empty()
                    || !session.queue.is_empty()
                    || !session.inflight.is_empty())
        };
        if !session_present {
            reset_session(&info.clientid, session, &mut state.index);
        }
        session.persistent = persistent;
        session.expiry = Some(expiry);
        session.disconnected = None;
        if !session.queue.is_empty() {
            signal.wake();
        }
        if *self.shutdown.borrow() {
            // `shutdown` closed every connection it found under this lock; not this one.
            signal.close(CloseReason::Shutdown);
        }
        session.conn = Some(Conn {
            id: conn_id,
            signal: Arc::clone(&signal),
            info,
        });
        let resend = session.inflight.clone();
        drop(guard);
        for will in wills {
            self.publish(None, will);
        }
        Registration {
            conn_id,
            session_present,
            signal,
            resend,
        }
    }

    /// Forgets a connection (if it is still the current one for its client id). A session
    /// that ends with the connection is dropped; another keeps its subscriptions, its queue
    /// and its messages in flight until it expires. `expiry` replaces the session's own
    /// (MQTT 5 DISCONNECT); `will` is published after its delay or when the session ends,
    /// whichever comes first [MQTT-3.1.2-8], [MQTT-3.1.3-9].
    pub(crate) fn unregister(
        &self,
        clientid: &str,
        conn_id: u64,
        expiry: Option<Expiry>,
        will: Option<PendingWill>,
    ) {
        let now = Instant::now();
        let mut publish_now = None;
        {
            let mut state = self.lock();
            let Some(session) = state.sessions.get_mut(clientid) else {
                return;
            };
            if session.conn.as_ref().is_none_or(|c| c.id != conn_id) {
                // Taken over: the new connection owns the session, and a delayed will is
                // cancelled by it [MQTT-3.1.3-9].
                publish_now = will.filter(|w| w.delay.is_zero()).map(PendingWill::release);
            } else {
                session.disconnected = session.conn.take().map(|c| {
                    Box::new(Disconnected {
                        at: now,
                        at_wall: SystemTime::now(),
                        info: c.info,
                    })
                });
                if let Some(expiry) = expiry {
                    session.expiry = Some(expiry);
                }
                let ends = match session.expiry {
                    Some(Expiry::Now) | None => Some(now),
                    Some(Expiry::After(d)) => Some(now + d),
                    Some(Expiry::Never) => None,
                };
                if let Some(w) = will {
                    let due = ends.map_or(now + w.delay, |end| end.min(now + w.delay));
                    if due <= now {
                        publish_now = Some(w.release());
                    } else {
                        session.will = Some(Box::new((w, due)));
                    }
                }
                if ends.is_some_and(|end| end <= now) {
                    state.remove_session(clientid);
                } else {
                    state.disconnected.insert(clientid.to_owned());
                }
            }
        }
        if let Some(msg) = publish_now {
            self.publish(Some(clientid), msg);
        }
    }

    /// Publishes wills whose delay has passed, ends sessions whose expiry interval has
    /// passed (publishing their pending will) [MQTT-3.1.2-23], and drops retained messages
    /// whose Message Expiry Interval has passed [MQTT-3.3.2-5].
    pub(crate) fn sweep(&self, now: Instant) {
        let mut due = Vec::new();
        {
            let mut state = self.lock();
            let State {
                sessions,
                disconnected,
                retained,
                index,
            } = &mut *state;
            disconnected.retain(|clientid| {
                let Some(session) = sessions.get_mut(clientid) else {
                    return false;
                };
                if session.conn.is_some() {
                    return false;
                }
                let expired = session.expired(now);
                if session
                    .will
                    .as_ref()
                    .is_some_and(|will| will.1 <= now || expired)
                {
                    if let Some(will) = session.will.take() {
                        tracing::debug!(client = %clientid, "publishing delayed will message");
                        due.push(will.0.release());
                    }
                }
                if expired {
                    tracing::info!(client = %clientid, "session expired");
                    index.leave_all(clientid, &session.subs);
                    sessions.remove(clientid);
                }
                !expired
            });
            retained.retain(|_, msg| !msg.props.expired(now));
        }
        for will in due {
            self.publish(None, will);
        }
    }

    /// Runs `f` on the session of `clientid` if `conn_id` is its current connection.
    fn with_own<T>(
        &self,
        clientid: &str,
        conn_id: u64,
        f: impl FnOnce(&mut Session) -> T,
    ) -> Option<T> {
        let mut state = self.lock();
        let session = state.sessions.get_mut(clientid)?;
        if session.conn.as_ref().is_some_and(|c| c.id == conn_id) {
            Some(f(session))
        } else {
            None
        }
    }

    /// Takes queued messages to send, oldest first: QoS 0 ones, and QoS 1/2 ones while
    /// fewer than `receive_max` are in flight (each gets a packet identifier and joins the
    /// in-flight list). Expired messages are dropped [MQTT-3.3.2-5].
    pub(crate) fn take(
        &self,
        clientid: &str,
        conn_id: u64,
        receive_max: u16,
        max: usize,
    ) -> Vec<Outgoing> {
        let now = Instant::now();
        self.with_own(clientid, conn_id, |session| {
            let mut out = Vec::new();
            while out.len() < max {
                let Some(front) = session.queue.front() else {
                    break;
                };
                if front.props.expired(now) {
                    session.queue.pop_front();
                    continue;
                }
                if front.qos == QoS::AtMostOnce {
                    let msg = session.queue.pop_front().unwrap_or_else(|| unreachable!());
                    out.push(Outgoing { pkid: 0, msg });
                    continue;
                }
                if session.inflight.len() >= usize::from(receive_max) {
                    break;
                }
                let Some(pkid) = session.next_pkid() else {
                    break;
                };
                let msg = session.queue.pop_front().unwrap_or_else(|| unreachable!());
                session.inflight.push(InFlight {
                    pkid,
                    msg: msg.clone(),
                    released: false,
                });
                out.push(Outgoing { pkid, msg });
            }
            out
        })
        .unwrap_or_default()
    }

    /// PUBACK: completes a QoS 1 message.
    pub(crate) fn puback(&self, clientid: &str, conn_id: u64, pkid: u16) -> Acked {
        self.complete(clientid, conn_id, pkid, |f| f.msg.qos == QoS::AtLeastOnce)
    }

    /// PUBCOMP: completes a released QoS 2 message.
    pub(crate) fn pubcomp(&self, clientid: &str, conn_id: u64, pkid: u16) -> Acked {
        self.complete(clientid, conn_id, pkid, |f| {
            f.msg.qos == QoS::ExactlyOnce && f.released
        })
    }

    /// Drops a message in flight whatever its state (a message the client cannot take).
    pub(crate) fn discard(&self, clientid: &str, conn_id: u64, pkid: u16) {
        self.complete(clientid, conn_id, pkid, |_| true);
    }

    fn complete(
        &self,
        clientid: &str,
        conn_id: u64,
        pkid: u16,
        matches: impl Fn(&InFlight) -> bool,
    ) -> Acked {
        self.with_own(clientid, conn_id, |session| {
            match session
                .inflight
                .iter()
                .position(|f| f.pkid == pkid && matches(f))
            {
                Some(i) => {
                    session.inflight.remove(i);
                    if let Some(conn) = &session.conn {
                        conn.signal.wake();
                    }
                    Acked::Known
                }
                None => Acked::Unknown,
            }
        })
        .unwrap_or(Acked::Unknown)
    }

    /// PUBREC: a QoS 2 message is received by the client; `failed` (an MQTT 5 reason code
    /// of 0x80 or more) ends its flow instead.
    pub(crate) fn pubrec(&self, clientid: &str, conn_id: u64, pkid: u16, failed: bool) -> Acked {
        if failed {
            return self.complete(clientid, conn_id, pkid, |f| {
                f.msg.qos == QoS::ExactlyOnce && !f.released
            });
        }
        self.with_own(clientid, conn_id, |session| {
            match session
                .inflight
                .iter_mut()
                .find(|f| f.pkid == pkid && f.msg.qos == QoS::ExactlyOnce)
            {
                Some(f) => {
                    f.released = true;
                    Acked::Known
                }
                None => Acked::Unknown,
            }
        })
        .unwrap_or(Acked::Unknown)
    }

    /// An inbound QoS 2 PUBLISH: `true` when its packet identifier is new (deliver it),
    /// `false` for a re-sent one whose first copy was delivered already (exactly once);
    /// and how many are now unreleased.
    pub(crate) fn inbound_qos2(&self, clientid: &str, conn_id: u64, pkid: u16) -> (bool, usize) {
        self.with_own(clientid, conn_id, |s| {
            (s.inbound_qos2.insert(pkid), s.inbound_qos2.len())
        })
        .unwrap_or((false, 0))
    }

    /// PUBREL: the inbound QoS 2 packet identifier may be used again.
    pub(crate) fn inbound_release(&self, clientid: &str, conn_id: u64, pkid: u16) {
        self.with_own(clientid, conn_id, |s| s.inbound_qos2.remove(&pkid));
    }

    /// The admin API's kick: closes a client's connection, or discards a disconnected
    /// session (as EMQX does). Returns whether there was one.
    pub(crate) fn kick(&self, clientid: &str) -> bool {
        let mut state = self.lock();
        let Some(session) = state.sessions.get_mut(clientid) else {
            return false;
        };
        match session.conn.as_mut() {
            Some(conn) => conn.signal.close(CloseReason::Kicked),
            None => {
                state.remove_session(clientid);
            }
        }
        true
    }

    /// Adds (or replaces) subscriptions and queues the retained messages to send for them.
    pub(crate) fn subscribe(&self, clientid: &str, filters: &[(String, SubOptions)]) {
        let now = Instant::now();
        let mut state = self.lock();
        let state = &mut *state;
        let Some(session) = state.sessions.get_mut(clientid) else {
            return;
        };
        for (filter, opts) in filters {
            let existed = session.subs.insert(filter.clone(), *opts).is_some();
            if !existed {
                state.index.join(clientid, filter);
            }
            let send = match opts.retain_handling {
                0 => true,
                1 => !existed,
                _ => false,
            };
            // Retained messages are not sent for a shared subscription (MQTT 5 §4.8.2).
            if !send || shared_filter(filter).is_some() {
                continue;
            }
            for (topic, msg) in &state.retained {
                if topic_matches(topic, filter) && !msg.props.expired(now) {
                    session.enqueue(
                        clientid,
                        Delivery {
                            qos: min_qos(msg.qos, opts.qos),
                            retain: true,
                            sub_ids: opts.id.into_iter().collect(),
                            ..msg.clone()
                        },
                    );
                }
            }
        }
    }

    pub(crate) fn unsubscribe(&self, clientid: &str, filters: &[String]) {
        let mut state = self.lock();
        let state = &mut *state;
        if let Some(session) = state.sessions.get_mut(clientid) {
            for filter in filters {
                if session.subs.remove(filter).is_some() {
                    state.index.leave(clientid, filter);
                }
            }
        }
    }

    /// Stores or clears a retained message (when `retain`) and fans out to subscribers;
    /// `from` is the publishing client, for no-local subscriptions.
    pub(crate) fn publish(&self, from: Option<&str>, msg: Delivery) {
        let mut state = self.lock();
        let state = &mut *state;
        if msg.retain {
            if msg.payload.is_empty() {
                state.retained.remove(&*msg.topic);
            } else {
                state.retained.insert(msg.topic.to_string(), msg.clone());
            }
        }
        // Members of each matching shared subscription: (client id, options, connected).
        let mut shared: BTreeMap<(String, String), Vec<SharedMember>> = BTreeMap::new();
        for clientid in state.index.candidates(&msg.topic) {
            let Some(session) = state.sessions.get_mut(clientid) else {
                continue;
            };
            let own = from == Some(clientid);
            let mut granted: Option<QoS> = None;
            let mut keep_retain = false;
            let mut sub_ids = Vec::new();
            for (filter, opts) in &session.subs {
                if let Some((group, filter)) = shared_filter(filter) {
                    if topic_matches(&msg.topic, filter) {
                        shared
                            .entry((group.to_owned(), filter.to_owned()))
                            .or_default()
                            .push((clientid.to_owned(), *opts, session.conn.is_some()));
                    }
                    continue;
                }
                if (own && opts.no_local) || !topic_matches(&msg.topic, filter) {
                    continue;
                }
                if granted.is_none_or(|g| (opts.qos as u8) > (g as u8)) {
                    granted = Some(opts.qos);
                }
                keep_retain |= opts.retain_as_published;
                sub_ids.extend(opts.id);
            }
            let Some(granted) = granted else { continue };
            let delivery = Delivery {
                qos: min_qos(msg.qos, granted),
                retain: msg.retain && keep_retain,
                sub_ids,
                ..msg.clone()
            };
            if session.conn.is_none() && delivery.qos == QoS::AtMostOnce {
                // QoS 0 messages are not kept for an offline session.
                continue;
            }
            session.enqueue(clientid, delivery);
        }
        // One member of each shared subscription gets the message, in turn (connected
        // members first) (MQTT 5 §4.8.2).
        for (key, mut members) in shared {
            members.sort_by(|a, b| a.0.cmp(&b.0));
            if members.iter().any(|m| m.2) {
                members.retain(|m| m.2);
            }
            let turn = state.index.shared.turn(&key);
            let (clientid, opts, connected) = &members[turn % members.len()];
            let delivery = Delivery {
                qos: min_qos(msg.qos, opts.qos),
                retain: msg.retain && opts.retain_as_published,
                sub_ids: opts.id.into_iter().collect(),
                ..msg.clone()
            };
            if !connected && delivery.qos == QoS::AtMostOnce {
                continue;
            }
            if let Some(session) = state.sessions.get_mut(clientid) {
                session.enqueue(clientid, delivery);
            }
        }
    }

    /// Every session, connected or not, sorted by client id.
    pub(crate) fn clients(&self) -> Vec<SessionView> {
        let now = Instant::now();
        let state = self.lock();
        let mut clients: Vec<_> = state
            .sessions
            .values()
            .filter(|s| !s.expired(now))
            .filter_map(|s| s.view(now))
            .collect();
        clients.sort_by(|a, b| a.info.clientid.cmp(&b.info.clientid));
        clients
    }

    /// One session, connected or not.
    /// How many retained messages are stored (expired ones included until the next sweep).
    pub(crate) fn retained_count(&self) -> usize {
        self.lock().retained.len()
    }

    /// How many entries each of the broker's tables holds, expired sessions included.
    #[cfg(test)]
    fn entries(&self) -> Entries {
        let state = self.lock();
        Entries {
            sessions: state.sessions.len(),
            disconnected: state.disconnected.len(),
            subscriptions: state.sessions.values().map(|s| s.subs.len()).sum(),
            exact_filters: state.index.exact.len(),
            scanned_sessions: state.index.scanned.len(),
            shared_groups: state.index.shared.0.len(),
            retained: state.retained.len(),
        }
    }

    pub(crate) fn client(&self, clientid: &str) -> Option<SessionView> {
        let now = Instant::now();
        let state = self.lock();
        let session = state.sessions.get(clientid)?;
        if session.expired(now) {
            return None;
        }
        session.view(now)
    }
}

/// The sizes of the broker's tables (tests).
#[cfg(test)]
#[derive(Debug, Default, PartialEq, Eq)]
struct Entries {
    sessions: usize,
    /// Sessions without a connection.
    disconnected: usize,
    subscriptions: usize,
    exact_filters: usize,
    scanned_sessions: usize,
    shared_groups: usize,
    retained: usize,
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

/// A member of a shared subscription a message matches: client id, options, connected.
type SharedMember = (String, SubOptions, bool);

/// A shared subscription `$share/{group}/{filter}`: its group and filter, when well formed
/// (a non-empty group without `/`, `+`, `#`; a valid filter) (MQTT 5 §4.8.2).
pub(crate) fn shared_filter(filter: &str) -> Option<(&str, &str)> {
    let (group, filter) = filter.strip_prefix("$share/")?.split_once('/')?;
    (!group.is_empty() && !group.contains(['+', '#']) && valid_filter(filter))
        .then_some((group, filter))
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

    fn info(id: &str, clean: bool) -> Arc<ClientInfo> {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        Arc::new(ClientInfo {
            clientid: id.to_owned(),
            username: None,
            counters: Arc::default(),
            meta: ConnMeta {
                listener: "tcp:default",
                client: ClientAddr::from_socket_addr(peer, realip_core::AddrSource::Socket),
                socket_peer: peer.into(),
                sockname: None,
                proxy: None,
                forwarded: None,
                tls: None,
                verified_cn: Err(Cow::Borrowed("no PROXY header")),
            }
            .into(),
            proto_ver: 4,
            keepalive: 60,
            clean_start: clean,
            persistent: !clean,
            expiry: if clean { Expiry::Now } else { Expiry::Never },
            connected_at: SystemTime::now(),
        })
    }

    fn msg(topic: &str, payload: &'static [u8], qos: QoS, retain: bool) -> Delivery {
        Delivery::new(topic, Bytes::from_static(payload), qos, retain)
    }

    fn take(broker: &Broker, id: &str, reg: &Registration) -> Vec<Outgoing> {
        broker.take(id, reg.conn_id, u16::MAX, 100)
    }

    #[tokio::test]
    async fn shutdown_closes_connections_registered_before_and_after_it() {
        let broker = Broker::new(Acl::default(), Limits::default());
        let before = broker.register(info("a", true));
        assert_eq!(before.signal.close_reason(), None);
        broker.shutdown(Duration::from_millis(10)).await;
        assert_eq!(before.signal.close_reason(), Some(CloseReason::Shutdown));
        // Woken: the permit is stored for a task that was not waiting.
        tokio::time::timeout(Duration::from_secs(1), before.signal.notified())
            .await
            .unwrap();
        let after = broker.register(info("b", true));
        assert_eq!(after.signal.close_reason(), Some(CloseReason::Shutdown));
    }

    #[test]
    fn kick_closes_the_connection_once_with_the_first_reason() {
        let broker = Broker::new(Acl::default(), Limits::default());
        let reg = broker.register(info("k", true));
        assert!(broker.kick("k"));
        assert!(broker.kick("k"));
        assert_eq!(reg.signal.close_reason(), Some(CloseReason::Kicked));
        // A later takeover does not change why this connection was closed.
        let _second = broker.register(info("k", true));
        assert_eq!(reg.signal.close_reason(), Some(CloseReason::Kicked));
    }

    #[tokio::test]
    async fn takeover_closes_the_first_connection_and_fanout_picks_the_best_qos() {
        let broker = Broker::new(Acl::default(), Limits::default());
        let first = broker.register(info("c", true));
        let second = broker.register(info("c", true));
        assert_eq!(first.signal.close_reason(), Some(CloseReason::TakenOver));
        // The first connection's cleanup must not remove the second one.
        broker.unregister("c", first.conn_id, None, None);
        assert_eq!(broker.clients().len(), 1);

        broker.subscribe(
            "c",
            &[
                ("a/+".into(), SubOptions::qos(QoS::AtMostOnce)),
                ("a/#".into(), SubOptions::qos(QoS::ExactlyOnce)),
            ],
        );
        broker.publish(None, msg("a/b", b"x", QoS::ExactlyOnce, true));
        let got = take(&broker, "c", &second);
        // Exactly one copy per subscriber, even with two matching filters.
        assert_eq!(got.len(), 1);
        assert_eq!(
            (
                &*got[0].msg.topic,
                got[0].msg.qos,
                got[0].msg.retain,
                got[0].pkid
            ),
            ("a/b", QoS::ExactlyOnce, false, 1)
        );

        broker.subscribe("c", &[("a/b".into(), SubOptions::qos(QoS::AtMostOnce))]);
        let retained = take(&broker, "c", &second);
        assert_eq!(retained.len(), 1);
        assert!(retained[0].msg.retain && retained[0].msg.qos == QoS::AtMostOnce);
        broker.publish(None, msg("a/b", b"", QoS::AtMostOnce, true));
        // The empty retained message clears the topic (and is delivered as any message).
        let _ = take(&broker, "c", &second);
        broker.subscribe("c", &[("a/b".into(), SubOptions::qos(QoS::AtMostOnce))]);
        assert!(take(&broker, "c", &second).is_empty());
    }

    #[tokio::test]
    async fn no_local_retain_as_published_and_retain_handling() {
        let broker = Broker::new(Acl::default(), Limits::default());
        let me = broker.register(info("me", true));
        let opts = |no_local, retain_as_published, retain_handling| SubOptions {
            qos: QoS::AtLeastOnce,
            no_local,
            retain_as_published,
            retain_handling,
            id: None,
        };
        broker.subscribe("me", &[("own/#".into(), opts(true, false, 0))]);
        broker.publish(Some("me"), msg("own/x", b"mine", QoS::AtMostOnce, false));
        broker.publish(
            Some("other"),
            msg("own/x", b"theirs", QoS::AtMostOnce, true),
        );
        let got = take(&broker, "me", &me);
        assert_eq!(got.len(), 1, "no-local: own publish not delivered");
        assert_eq!(&got[0].msg.payload[..], b"theirs");
        assert!(
            !got[0].msg.retain,
            "retain is cleared unless retain-as-published"
        );

        // Retain handling: 1 sends retained messages only for a new subscription, 2 never.
        broker.subscribe("me", &[("own/x".into(), opts(false, true, 1))]);
        assert_eq!(take(&broker, "me", &me).len(), 1);
        broker.subscribe("me", &[("own/x".into(), opts(false, true, 1))]);
        assert!(take(&broker, "me", &me).is_empty());
        broker.subscribe("me", &[("own/+".into(), opts(false, true, 2))]);
        assert!(take(&broker, "me", &me).is_empty());
        broker.publish(Some("other"), msg("own/x", b"kept", QoS::AtMostOnce, true));
        assert!(
            take(&broker, "me", &me)[0].msg.retain,
            "retain-as-published keeps the flag"
        );
    }

    #[tokio::test]
    async fn persistent_sessions_keep_subscriptions_queue_and_messages_in_flight() {
        let broker = Broker::new(Acl::default(), Limits::default());
        let first = broker.register(info("p", false));
        assert!(!first.session_present);
        broker.subscribe("p", &[("t".into(), SubOptions::qos(QoS::ExactlyOnce))]);
        broker.publish(None, msg("t", b"a", QoS::AtLeastOnce, false));
        broker.publish(None, msg("t", b"b", QoS::ExactlyOnce, false));
        let sent = take(&broker, "p", &first);
        assert_eq!(sent.iter().map(|o| o.pkid).collect::<Vec<_>>(), [1, 2]);
        // b reached PUBREC; a is unacknowledged.
        assert_eq!(broker.pubrec("p", first.conn_id, 2, false), Acked::Known);
        broker.unregister("p", first.conn_id, None, None);
        broker.publish(None, msg("t", b"0", QoS::AtMostOnce, false));
        broker.publish(None, msg("t", b"c", QoS::AtLeastOnce, false));

        let again = broker.register(info("p", false));
        assert!(again.session_present);
        let resend: Vec<_> = again
            .resend
            .iter()
            .map(|f| (f.pkid, &f.msg.payload[..], f.released))
            .collect();
        assert_eq!(resend, [(1, &b"a"[..], false), (2, &b"b"[..], true)]);
        // The offline QoS 0 message is not kept; the QoS 1 one follows, with a new id.
        let next = take(&broker, "p", &again);
        assert_eq!(next.len(), 1);
        assert_eq!((&next[0].msg.payload[..], next[0].pkid), (&b"c"[..], 3));
        assert_eq!(broker.puback("p", again.conn_id, 1), Acked::Known);
        assert_eq!(broker.pubcomp("p", again.conn_id, 2), Acked::Known);
        assert_eq!(broker.pubcomp("p", again.conn_id, 2), Acked::Unknown);
        // A clean session discards the old state.
        let clean = broker.register(info("p", true));
        assert!(!clean.session_present && clean.resend.is_empty());
        broker.unregister("p", clean.conn_id, None, None);
        assert!(broker.client("p").is_none());
        assert!(broker.clients().is_empty());
    }

    #[tokio::test]
    async fn receive_maximum_limits_messages_in_flight_and_order_is_kept() {
        let broker = Broker::new(Acl::default(), Limits::default());
        let c = broker.register(info("r", true));
        broker.subscribe("r", &[("t".into(), SubOptions::qos(QoS::AtLeastOnce))]);
        for payload in [b"1", b"2", b"3"] {
            broker.publish(None, msg("t", payload, QoS::AtLeastOnce, false));
        }
        let first = broker.take("r", c.conn_id, 2, 100);
        assert_eq!(first.len(), 2);
        assert!(broker.take("r", c.conn_id, 2, 100).is_empty());
        broker.puback("r", c.conn_id, first[0].pkid);
        let third = broker.take("r", c.conn_id, 2, 100);
        assert_eq!(&third[0].msg.payload[..], b"3");
    }

    /// Clients that subscribed to topics of their own (plainly and in a shared group of their
    /// own), published, and then left in every way a session ends: nothing of them is kept.
    #[tokio::test]
    async fn nothing_is_kept_for_clients_that_left() {
        const N: usize = 100;
        let broker = Broker::new(Acl::default(), Limits::default());
        let qos1 = SubOptions::qos(QoS::AtLeastOnce);
        let mut regs = Vec::new();
        for i in 0..N {
            let id = format!("c{i}");
            // Every other client keeps its session after its connection (until it expires,
            // is discarded or replaced below).
            let reg = broker.register(info(&id, i % 2 == 0));
            broker.subscribe(
                &id,
                &[
                    (format!("t/{i}"), qos1),
                    (format!("$share/g{i}/t/{i}"), qos1),
                    (format!("$share/all/t/{i}"), qos1),
                ],
            );
            broker.publish(None, msg(&format!("t/{i}"), b"m", QoS::AtLeastOnce, true));
            // One copy per subscription: the plain one and each shared group's.
            assert_eq!(take(&broker, &id, &reg).len(), 3, "{id}");
            regs.push((id, reg));
        }
        assert_eq!(
            broker.entries(),
            Entries {
                sessions: N,
                disconnected: 0,
                subscriptions: 3 * N,
                exact_filters: N,
                scanned_sessions: N,
                shared_groups: 2 * N,
                retained: N,
            }
        );

        let now = Instant::now();
        for (i, (id, reg)) in regs.into_iter().enumerate() {
            broker.publish(None, msg(&format!("t/{i}"), b"", QoS::AtMostOnce, true));
            if i % 2 == 0 {
                // A clean session, after unsubscribing from one filter or from none.
                if i % 4 == 0 {
                    broker.unsubscribe(&id, &[format!("$share/g{i}/t/{i}")]);
                }
                broker.unregister(&id, reg.conn_id, None, None);
                continue;
            }
            match i % 6 {
                // Expires (MQTT 5 DISCONNECT with an expiry interval): the sweep ends it.
                1 => broker.unregister(
                    &id,
                    reg.conn_id,
                    Some(Expiry::After(Duration::from_secs(1))),
                    None,
                ),
                // Kept, then discarded through the admin API.
                3 => {
                    broker.unregister(&id, reg.conn_id, None, None);
                    assert!(broker.kick(&id));
                }
                // Kept, then replaced by a clean session that leaves.
                _ => {
                    broker.unregister(&id, reg.conn_id, None, None);
                    let clean = broker.register(info(&id, true));
                    broker.unregister(&id, clean.conn_id, None, None);
                }
            }
        }
        // Left: the sessions that expire (i % 6 == 1), which only the sweep ends.
        let expiring = (0..N).filter(|i| i % 6 == 1).count();
        assert_eq!(broker.entries().disconnected, expiring);
        broker.sweep(now + Duration::from_secs(2));
        assert!(broker.clients().is_empty());
        assert_eq!(broker.entries(), Entries::default());
    }

    #[test]
    fn expiry_counts_down_and_rounds_up() {
        let mut props = MessageProps::default();
        props.expire_after(Some(60));
        let now = Instant::now();
        assert_eq!(props.remaining_expiry(now), Some(60));
        assert_eq!(
            props.remaining_expiry(now + Duration::from_millis(1500)),
            Some(59)
        );
        assert!(props.expired(now + Duration::from_secs(61)));
        assert!(!MessageProps::default().expired(now));
    }
}
