//! A tower layer that resolves the real client address from forwarded-request headers.
//!
//! [`RealIpLayer`] works with any service of `http::Request` (axum, hyper, tonic). For each
//! request it finds the [transport peer](#transport-peer), decides whether the configured
//! header may be believed, and inserts the client as a [`ClientAddr`] (IP, optional port,
//! and its [`AddrSource`]: socket, PROXY protocol, or the header's name) plus the
//! [`Resolution`] that records how it was decided. A `ClientAddr` already in the
//! extensions is never overridden.
//!
//! # Example
//!
//! ```
//! use http::Request;
//! use realip_core::{AddrSource, ClientAddr, PeerAddr, TrustedProxies};
//! use realip_tower::RealIpLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(RealIpLayer::x_forwarded_for_recursive("10.0.0.0/8".parse::<TrustedProxies>().unwrap()))
//!     .service(service_fn(|req: Request<()>| async move {
//!         Ok::<_, std::convert::Infallible>(req.extensions().get::<ClientAddr>().cloned())
//!     }));
//!
//! // The request came from the proxy 10.0.0.2, which appended to a client-sent header.
//! let mut req = Request::new(());
//! req.headers_mut().insert("x-forwarded-for", "127.0.0.1, 203.0.113.7, 10.0.0.1".parse().unwrap());
//! req.extensions_mut().insert(PeerAddr::Inet("10.0.0.2:41000".parse().unwrap()));
//!
//! let client = svc.oneshot(req).await.unwrap().unwrap();
//! assert_eq!(client.ip().to_string(), "203.0.113.7");
//! assert_eq!(client.source(), &AddrSource::header("x-forwarded-for"));
//! # }
//! ```
//!
//! # Strategies
//!
//! Nothing is guessed: there is no default list of headers to try. Pick the strategy that
//! matches the proxies in front of the server. Every strategy except
//! [`trust_headers_unconditionally`](RealIpLayer::trust_headers_unconditionally) honours
//! the header only when the transport peer is in the [`TrustedProxies`] set; otherwise the
//! header is ignored (logged at `warn`) and the client is the transport peer: a client that
//! connects directly and sends its own `X-Forwarded-For` gets its socket address.
//!
//! | Strategy | Constructor | Matches |
//! |---|---|---|
//! | [`Strategy::TrustedProxies`] | [`RealIpLayer::x_forwarded_for`], [`x_forwarded_for_recursive`](RealIpLayer::x_forwarded_for_recursive) | NGINX `set_real_ip_from` + `real_ip_header X-Forwarded-For` (+ `real_ip_recursive`) |
//! | [`Strategy::TrustedHops`] | [`RealIpLayer::trusted_hops`] | Envoy `xff_num_trusted_hops` |
//! | [`Strategy::SingleValue`] | [`RealIpLayer::x_real_ip`], [`cf_connecting_ip`](RealIpLayer::cf_connecting_ip), … | `proxy_set_header X-Real-IP $remote_addr`, CDNs |
//! | [`Strategy::Leftmost`] | [`RealIpLayer::leftmost`] | EMQX `proxy_address_header` |
//! | [`Strategy::Forwarded`] | [`RealIpLayer::forwarded`], [`forwarded_recursive`](RealIpLayer::forwarded_recursive) | RFC 7239 `Forwarded: for=…` |
//!
//! ## Trusted proxies (NGINX realip)
//!
//! ```nginx
//! # Every proxy appends: client → LB1 → LB2 → this server
//! proxy_set_header X-Forwarded-For  $proxy_add_x_forwarded_for;
//! proxy_set_header X-Forwarded-Port "$http_x_forwarded_port, $remote_port";
//! ```
//!
//! `RealIpLayer::x_forwarded_for_recursive("10.0.0.0/8".parse()?)` is NGINX's
//! `set_real_ip_from 10.0.0.0/8; real_ip_header X-Forwarded-For; real_ip_recursive on;`.
//! HAProxy's `option forwardfor` (which adds its own header line) needs nothing else.
//! Non-recursive takes the rightmost entry, which the trusted peer wrote. Recursive walks
//! from the right, skips entries that are trusted proxies and returns the first untrusted
//! one; when every entry is trusted, the leftmost (NGINX does the same), which a trusted
//! address wrote. Whatever a client writes ends up to the left of the first untrusted
//! address and is never reached. A header without any entry is an absent one: the client is
//! the transport peer.
//!
//! *Risk*: a trusted set that is too wide (a whole cloud range shared with other tenants)
//! lets those tenants vouch for any address. Without recursion, a chain of several proxies
//! yields the address of the second-nearest proxy, not the client.
//!
//! ## Trusted hops (Envoy `xff_num_trusted_hops`)
//!
//! `RealIpLayer::trusted_hops(2)`: two load balancers sit in front of the server, each
//! appending the address it saw, and their addresses are not known in advance (cloud load
//! balancers). The client is the 2nd non-empty entry from the right. With fewer entries the
//! request did not pass every hop (it reached a load balancer from inside, or the server
//! directly), so nothing in the header is believed: the client is the transport peer
//! ([`Fallback::TooFewHops`], logged at `warn`), as Envoy uses the downstream connection's
//! address. Hop counting is not offered for `Forwarded`.
//! `trusted_hops(0)` ignores the header from every peer (Envoy with `use_remote_address`
//! and no trusted hops): the client is the transport peer, and nothing is logged as
//! rejected.
//!
//! ```text
//! # Envoy (HTTP connection manager)     # the same with this crate
//! use_remote_address: true              RealIpLayer::trusted_hops(2)
//! xff_num_trusted_hops: 2
//! ```
//!
//! *Risk*: if the server can be reached without passing all the hops (a public address,
//! a second load balancer with fewer hops), the client chooses its own address. Restrict the
//! peers with [`trusted_proxies`](RealIpLayer::trusted_proxies) or with the network.
//!
//! ## Single value (`X-Real-IP`, `CF-Connecting-IP`, `True-Client-IP`, `Fly-Client-IP`)
//!
//! ```nginx
//! # The last proxy resolved the client itself (NGINX realip)
//! proxy_set_header X-Real-IP $remote_addr;
//! ```
//!
//! `RealIpLayer::x_real_ip(lb_range)`, or [`single_value`](RealIpLayer::single_value) for
//! any name. The trusted proxy writes exactly one address. Several header lines mean
//! someone else added one: the header is rejected ([`Fallback::MultipleLines`]), never
//! "first wins"; a comma-separated list in one line is malformed, and an empty value is an
//! absent header (the transport peer).
//!
//! *Risk*: the proxy must **set** the header, never pass a client's value through; CDN
//! headers are only meaningful when the trusted set is exactly the CDN's published ranges.
//!
//! ## Leftmost (EMQX `proxy_address_header`, compatibility only)
//!
//! ```nginx
//! # The outermost proxy overwrites, inner ones append
//! proxy_set_header X-Forwarded-For  $remote_addr;            # LB1
//! proxy_set_header X-Forwarded-For  $proxy_add_x_forwarded_for; # LB2
//! ```
//!
//! `RealIpLayer::leftmost(lb_range)` takes the leftmost entry, as EMQX does. It is correct
//! only when the outermost proxy **overwrites** the header with `$remote_addr`. If any proxy
//! lets a client-sent header through (an outermost proxy that appends), the client picks its
//! own address. Never the default; prefer the recursive walk, which gives the same answer
//! behind an overwriting outermost proxy and stays correct when it appends. A header without any entry is an absent one
//! (the transport peer).
//!
//! ## Forwarded (RFC 7239)
//!
//! Written by proxies such as HAProxy 2.8+ (`option forwarded`), or NGINX with a `map`
//! that quotes and brackets IPv6 nodes (a bare `for=$remote_addr` is invalid for IPv6).
//!
//! `RealIpLayer::forwarded_recursive(lb_range)`: the `for=` node of each element,
//! walked like trusted proxies (short headers included). Parameter names are
//! case-insensitive tokens; values are tokens or quoted-strings (RFC 7230 §3.2.6), whose
//! quoted-pairs are unescaped (`for="192.0.2.\3"` is `192.0.2.3`); `proto=ws`/`wss` is
//! fine. The node follows RFC 7239 §6 exactly:
//!
//! ```text
//! node      = nodename [ ":" node-port ]
//! nodename  = IPv4address / "[" IPv6address "]" / "unknown" / obfnode
//! node-port = port / obfport
//! ```
//!
//! IPv6 is therefore only `for="[2001:db8::1]"` or `for="[2001:db8::1]:443"` (quoted, since
//! `:` and `[` are not token characters). `for="2001:db8::1:8080"` (whose sender meant
//! `[2001:db8::1]:8080`), `for="2001:db8::1"`, unquoted `for=2001:db8::1` or
//! `for=192.0.2.1:80` are malformed nodes. A zone inside the brackets is dropped;
//! obfuscated ports (`:_p1`) are dropped, keeping the address.
//!
//! Malformed nodes, `for=unknown`, obfuscated nodes (`for=_hidden`), and elements without
//! exactly one `for` **stop** the walk; they are never skipped (skipping them lets a forged
//! entry further left win). Elements are split from the right of each line, outside quoted
//! strings, so a malformed element (an unclosed quote) only affects itself and what lies to
//! its left.
//!
//! *Risk*: as for trusted proxies; in addition, a proxy that writes `for=unknown` makes the
//! result the address of the proxy to its right.
//!
//! # Parsing
//!
//! All lines of the header are combined in order (reading only the first or the last line
//! is exploitable or breaks with HAProxy), as RFC 9110 §5.3 combines field lines, then split
//! on `,` into items, which are trimmed. Empty items are passed over by the walks (as NGINX
//! does) but keep their position (see [Ports](#ports)). An entry is `ip`, `ip:port`, `[v6]`,
//! `[v6]:port`, `v6%zone` or `[v6%zone]:port` (IPv4-mapped IPv6 becomes IPv4).
//!
//! A zone is everything after `%` up to `]` (bracketed) or the end of the entry, whatever
//! its bytes, and is dropped: Windows names interfaces like
//! `[fe80::d806:a55d:eb1b:49cc%vEthernet (vmxnet3 Ethernet Adapter - Virtual Switch)]:64692`,
//! which is `fe80::d806:a55d:eb1b:49cc` port 64692. An unbracketed zone runs to the end of
//! the entry, so `fe80::1%eth0:80` has no port. The same holds in single-value headers and
//! in `Forwarded` nodes.
//!
//! Anything else — a host name, `unknown`, a port out of range — stops the walk (fail
//! closed): the result is the last good address reached (a trusted proxy's, as NGINX does;
//! the walk is recorded as [`HeaderChoice::stopped_by`] and logged at `warn`), or the
//! transport peer when the first entry examined is bad ([`Fallback::Invalid`]). A non-IP is
//! never returned. Parsing does not allocate, except to unescape a quoted `Forwarded` node
//! that holds a quoted-pair.
//!
//! # Ports
//!
//! A port written in the chosen entry (`1.2.3.4:5678`, `"[v6]:443"`) wins. Otherwise the
//! port header (default `X-Forwarded-Port`, see [`RealIpLayer::port_header`]) supplies it
//! from the **same position** as the chosen entry, counted from the right over all lines of
//! both headers, empty items included: NGINX chains
//! `X-Forwarded-Port "$http_x_forwarded_port, $remote_port"` next to
//! `$proxy_add_x_forwarded_for`, and writes `, 42342` when the previous hop sent no port.
//! An empty, missing or malformed item at that position means the port is unknown; it is
//! never taken from a neighbouring position. This holds for every strategy: recursive and
//! not, hops, leftmost, `Forwarded` (when a port header is configured).
//!
//! Example: client `127.0.0.101` → LB1 (`X-Forwarded-For $remote_addr`, no port header) →
//! LB2 (appends to both). The server receives `X-Forwarded-For: 127.0.0.101, 127.0.0.13`
//! and `X-Forwarded-Port: , 42342`; the client is `127.0.0.101` at position 1, whose port
//! item is empty: port unknown (42342 is LB1's port on the LB1 → LB2 hop).
//!
//! A single-value header (`X-Real-IP`) is set, not appended, so its port is taken only from
//! a port header that holds a single item too; a list there describes the hops. A port of
//! `0` counts as unknown.
//!
//! When every proxy appends to both headers, entries a client adds on the left of either
//! list do not move the positions on the right, where the proxies write. The port header
//! is believed from trusted peers only, like the address header, but it is only as good as
//! the proxies make it: a proxy that passes a client's `X-Forwarded-Port` through unchanged
//! lets the client pick the port it is reported with (never the address). Have every proxy
//! set or append it, or use [`without_port_header`](RealIpLayer::without_port_header).
//!
//! # Transport peer
//!
//! The peer whose headers are judged is read from the request extensions, in this order:
//!
//! 1. `realip-listener`'s `ProxiedAddr`, directly (hyper-util users insert it per
//!    connection) or as axum's `ConnectInfo<ProxiedAddr>` (feature `listener`, which the
//!    `realip` facade turns on with both of its features): with PROXY protocol on the
//!    port, the peer is the PROXY header's source, so PROXY protocol and forwarded headers
//!    compose;
//! 2. axum's `ConnectInfo<SocketAddr>`, then `MockConnectInfo` of either type (feature
//!    `axum`);
//! 3. a [`PeerAddr`] the application inserted (tonic exposes the peer in its own
//!    extension; copy it into a `PeerAddr` in an outer layer).
//!
//! Without the `listener` feature this crate does not depend on `realip-listener` (nor on
//! tokio). Every trust check goes through [`TrustedProxies::contains_peer`]: an IP in the
//! set, or a Unix socket peer when the set trusts `unix:`. With no
//! peer known, headers are not believed unless
//! [`trust_headers_unconditionally`](RealIpLayer::trust_headers_unconditionally) is set, and
//! no `ClientAddr` is inserted when no header applies. When no header applies, the client is
//! the transport peer itself (source `socket` or `proxy-protocol`).
//!
//! # WebSocket
//!
//! [`websocket_only(true)`](RealIpLayer::websocket_only) resolves headers only on WebSocket
//! handshakes, as EMQX does; other requests get the transport peer. The layer runs before
//! the upgrade, so the address is in the handshake request's extensions for axum's
//! `WebSocketUpgrade` handlers (and `RealClient` extracts it). A tokio-tungstenite server
//! has no tower stack: call [`RealIpLayer::resolve`] with the handshake request's headers
//! and the accepted stream's peer as a [`PeerAddr`] inside the `accept_hdr_async` callback.
//!
//! # Decision record
//!
//! Next to the `ClientAddr`, the middleware inserts the [`Resolution`]: the transport peer,
//! and either the [`HeaderChoice`] that decided (header name, position of the entry from
//! the right, number of entries, where the port came from, whether the walk stopped at a
//! malformed entry) or the [`Fallback`] reason the transport peer was used (header absent,
//! untrusted peer, invalid header, …). Admin pages and audit logs can show it;
//! [`RealIpLayer::resolve`] computes the same thing without the middleware.
//!
//! # axum and tracing
//!
//! With the `axum` feature, `RealClient` extracts the client and rejects with a message
//! that names the missing piece (layer or connect info). The middleware records the client
//! into the current span's `client` field when the span has one, emits a `debug` event
//! for each resolution, and a `warn` event when a header is rejected (untrusted peer,
//! malformed entry, several lines of a single-value header).
//!
//! The `warn` is per request (per handshake for WebSocket): whoever can reach the server
//! directly decides how many there are, and clients behind their own forward proxy send
//! `X-Forwarded-For` in good faith. It stays a `warn` because a forged or broken header is
//! what an operator must be able to see, and it is safe to emit: its fields are the peer,
//! the client, the configured header name and a fixed reason, never bytes from the header,
//! so a request cannot inject text into the logs. Where the volume is a problem, filter the
//! `realip_tower` target (`RUST_LOG=info,realip_tower=error`) or rate-limit in the
//! subscriber; every request's decision is still in its [`Resolution`].

// In data-flow order: the layer takes the request, finds the peer, splits the header
// lines, walks them, and inserts the resolution.
#[cfg(feature = "axum")]
mod extract;
mod forwarded;
mod layer;
mod lines;
pub mod metrics;
mod parse;
mod peer;
mod resolution;
mod strategy;
mod walk;
mod websocket;

#[cfg(feature = "axum")]
pub use extract::{RealClient, RealClientRejection};
pub use layer::{RealIp, RealIpLayer};
pub use parse::StopReason;
pub use realip_core::{AddrSource, ClientAddr, HeaderSource, Live, PeerAddr, TrustedProxies};
pub use resolution::{Fallback, HeaderChoice, Outcome, PortSource, Resolution};
pub use strategy::{ParseStrategyError, Strategy};
pub use websocket::is_websocket_upgrade;
