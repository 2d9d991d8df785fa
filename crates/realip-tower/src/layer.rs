//! [`RealIpLayer`] and the [`RealIp`] middleware.

use std::borrow::Cow;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, Request};
use realip_core::{ClientAddr, Live, PeerAddr, TrustedProxies};
use tower_layer::Layer;
use tower_service::Service;

use crate::metrics;
use crate::peer::Peer;
use crate::resolution::{Fallback, Outcome, Resolution};
use crate::strategy::Strategy;
use crate::walk::{Config, resolve};
use crate::websocket::is_websocket_upgrade;

/// Configuration of the real-client-address middleware; a
/// [`Layer`](https://docs.rs/tower-layer/0.3/tower_layer/trait.Layer.html) producing [`RealIp`].
///
/// Start from a preset that names the proxy setup, then adjust:
///
/// ```
/// use realip_core::TrustedProxies;
/// use realip_tower::RealIpLayer;
///
/// // NGINX `set_real_ip_from 10.0.0.0/8; real_ip_header X-Forwarded-For; real_ip_recursive on;`
/// let layer = RealIpLayer::x_forwarded_for_recursive("10.0.0.0/8".parse::<TrustedProxies>().unwrap())
///     .websocket_only(true);
/// assert!(layer.strategy().is_recursive());
/// assert_eq!(layer.header_name().as_str(), "x-forwarded-for");
/// assert_eq!(layer.port_header_name().map(|h| h.as_str()), Some("x-forwarded-port"));
/// ```
///
/// Cloning is cheap: the configuration is shared through an `Arc`.
#[derive(Clone, Debug)]
pub struct RealIpLayer {
    config: Arc<Config>,
}

impl RealIpLayer {
    /// A layer with `strategy`, its default header ([`Strategy::default_header`]), the
    /// `X-Forwarded-Port` port header (none for [`Strategy::Forwarded`]), resolving every
    /// request, and headers honoured only from peers in `trusted`.
    pub fn new(strategy: Strategy, trusted: TrustedProxies) -> Self {
        Self {
            config: Arc::new(Config::new(strategy, trusted)),
        }
    }

    /// `X-Forwarded-For` from the proxies in `trusted`, rightmost entry (NGINX
    /// `set_real_ip_from` + `real_ip_header X-Forwarded-For`).
    pub fn x_forwarded_for(trusted: TrustedProxies) -> Self {
        Self::new(Strategy::TrustedProxies { recursive: false }, trusted)
    }

    /// `X-Forwarded-For` from the proxies in `trusted`, walked from the right past every
    /// trusted entry (NGINX `set_real_ip_from` + `real_ip_header X-Forwarded-For` +
    /// `real_ip_recursive on`).
    pub fn x_forwarded_for_recursive(trusted: TrustedProxies) -> Self {
        Self::new(Strategy::TrustedProxies { recursive: true }, trusted)
    }

    /// RFC 7239 `Forwarded` (`for=` nodes) from the proxies in `trusted`, rightmost element.
    pub fn forwarded(trusted: TrustedProxies) -> Self {
        Self::new(Strategy::Forwarded { recursive: false }, trusted)
    }

    /// RFC 7239 `Forwarded` from the proxies in `trusted`, walked from the right past every
    /// element whose node is a trusted proxy.
    pub fn forwarded_recursive(trusted: TrustedProxies) -> Self {
        Self::new(Strategy::Forwarded { recursive: true }, trusted)
    }

    /// `X-Real-IP` (NGINX `proxy_set_header X-Real-IP $remote_addr`) from the proxies in
    /// `trusted`.
    pub fn x_real_ip(trusted: TrustedProxies) -> Self {
        Self::new(Strategy::SingleValue, trusted)
    }

    /// Cloudflare's `CF-Connecting-IP` from the proxies in `trusted` (Cloudflare's ranges).
    pub fn cf_connecting_ip(trusted: TrustedProxies) -> Self {
        Self::single_value(HeaderName::from_static("cf-connecting-ip"), trusted)
    }

    /// Akamai's and Cloudflare Enterprise's `True-Client-IP` from the proxies in `trusted`.
    pub fn true_client_ip(trusted: TrustedProxies) -> Self {
        Self::single_value(HeaderName::from_static("true-client-ip"), trusted)
    }

    /// Fly.io's `Fly-Client-IP` from the proxies in `trusted`.
    pub fn fly_client_ip(trusted: TrustedProxies) -> Self {
        Self::single_value(HeaderName::from_static("fly-client-ip"), trusted)
    }

    /// Any single-value header from the proxies in `trusted`.
    pub fn single_value(header: HeaderName, trusted: TrustedProxies) -> Self {
        Self::new(Strategy::SingleValue, trusted).header(header)
    }

    /// `X-Forwarded-For` with `hops` trusted proxies in front of this server, whatever
    /// their addresses (Envoy `xff_num_trusted_hops`). Any peer is trusted to send the
    /// header; restrict that with [`trusted_proxies`](Self::trusted_proxies) when you can.
    /// A header with fewer than `hops` entries is not believed: the client is the
    /// transport peer ([`Fallback::TooFewHops`]).
    pub fn trusted_hops(hops: usize) -> Self {
        Self::new(Strategy::TrustedHops(hops), TrustedProxies::any())
    }

    /// The leftmost `X-Forwarded-For` entry from the proxies in `trusted` (EMQX's
    /// `proxy_address_header`). Safe only when the outermost proxy **overwrites** the
    /// header (`proxy_set_header X-Forwarded-For $remote_addr`); when any proxy appends to
    /// a client-sent header the leftmost entry is whatever the client wrote.
    ///
    /// Ports follow the crate's rule (the port header's item at the same position from the
    /// right, else unknown); EMQX takes the leftmost port whatever the lengths.
    pub fn leftmost(trusted: TrustedProxies) -> Self {
        Self::new(Strategy::Leftmost, trusted)
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// How many requests whose forwarded header was rejected (untrusted peer, bad syntax,
    /// ...) are logged at `warn`, and, separately, how many walks stopped at an entry that is
    /// not an address: at most `burst` per `interval`, counted from the first; by default 10
    /// per 5 seconds, the Linux kernel's `printk_ratelimit`
    /// ([`LogThrottle`](realip_core::LogThrottle)). Beyond that they are logged at `debug`,
    /// and the next `warn` line carries their count as `suppressed`: any client can send a
    /// forged header with every request. [`Duration::ZERO`](std::time::Duration::ZERO) logs
    /// each at `warn`. Clones of the layer share the count; the `metrics` feature counts
    /// every request whatever this says.
    #[must_use]
    pub fn rejection_log(mut self, interval: std::time::Duration, burst: u32) -> Self {
        let config = self.config_mut();
        config.rejected_log = realip_core::LogThrottle::new(interval, burst);
        config.stopped_log = realip_core::LogThrottle::new(interval, burst);
        self
    }

    /// Reads the address from `header` instead of the strategy's default (EMQX
    /// `proxy_address_header`). Header names are case-insensitive.
    #[must_use]
    pub fn header(mut self, header: HeaderName) -> Self {
        self.config_mut().set_header(header);
        self
    }

    /// Reads ports from `header` (EMQX `proxy_port_header`; default `X-Forwarded-Port`).
    ///
    /// A port written in the address entry wins. Otherwise the port header's item at the
    /// chosen address's position, counted from the right with empty items included, is
    /// used (NGINX's `"$http_x_forwarded_port, $remote_port"` chains); an empty or missing
    /// item means the port is unknown. For a single-value header, the port header must hold
    /// a single item. See the [crate documentation](crate#ports).
    #[must_use]
    pub fn port_header(mut self, header: HeaderName) -> Self {
        self.config_mut().port_header = Some(header);
        self
    }

    /// Reads no port header: ports come only from the address entries.
    #[must_use]
    pub fn without_port_header(mut self) -> Self {
        self.config_mut().port_header = None;
        self
    }

    /// Replaces the set of proxies whose headers are honoured (and, when recursive, whose
    /// entries are skipped).
    #[must_use]
    pub fn trusted_proxies(mut self, trusted: TrustedProxies) -> Self {
        let config = self.config_mut();
        config.trusted = Arc::new(trusted);
        config.live_trusted = None;
        self
    }

    /// Reads the set of trusted proxies from `live` for each request, without a lock, in
    /// place of the fixed set: storing a new set (a reload) applies to the requests resolved
    /// from then on.
    ///
    /// ```
    /// use realip_core::{Live, PeerAddr, TrustedProxies};
    /// use realip_tower::RealIpLayer;
    ///
    /// let trusted = Live::new(TrustedProxies::new());
    /// let layer = RealIpLayer::x_forwarded_for(TrustedProxies::new()).live_trusted_proxies(trusted.clone());
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
    /// let lb = PeerAddr::Inet("10.0.0.2:41000".parse().unwrap());
    /// assert_eq!(layer.resolve(&headers, Some(&lb)).client().unwrap().ip().to_string(), "10.0.0.2");
    /// trusted.store("10.0.0.0/8".parse().unwrap());
    /// assert_eq!(layer.resolve(&headers, Some(&lb)).client().unwrap().ip().to_string(), "203.0.113.7");
    /// ```
    #[must_use]
    pub fn live_trusted_proxies(mut self, live: Live<TrustedProxies>) -> Self {
        self.config_mut().live_trusted = Some(live);
        self
    }

    /// Resolves headers only on WebSocket upgrade requests, as EMQX does (default: every
    /// request). Other requests get the transport peer.
    #[must_use]
    pub fn websocket_only(mut self, websocket_only: bool) -> Self {
        self.config_mut().websocket_only = websocket_only;
        self
    }

    /// Honours the header even when the transport peer is unknown or not trusted.
    ///
    /// Only for servers that nothing but your proxies can reach (a port bound to a private
    /// interface, a Unix socket). Anyone who can connect directly can then claim any address.
    #[must_use]
    pub fn trust_headers_unconditionally(mut self) -> Self {
        self.config_mut().unconditional = true;
        self
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.config.strategy
    }

    /// The address header.
    pub fn header_name(&self) -> &HeaderName {
        &self.config.header
    }

    /// The port header, if any.
    pub fn port_header_name(&self) -> Option<&HeaderName> {
        self.config.port_header.as_ref()
    }

    /// The set of trusted proxies the next request is resolved with: the current value of
    /// the [live set](Self::live_trusted_proxies) when one is configured, else the fixed set.
    /// It is a snapshot: a later reload of the live set does not change it.
    ///
    /// ```
    /// use realip_core::{Live, TrustedProxies};
    /// use realip_tower::RealIpLayer;
    ///
    /// let layer = RealIpLayer::x_forwarded_for("10.0.0.0/8".parse().unwrap());
    /// assert!(layer.trusted().contains("10.1.2.3".parse().unwrap()));
    ///
    /// let live = Live::new(TrustedProxies::new());
    /// let layer = layer.live_trusted_proxies(live.clone());
    /// assert!(layer.trusted().is_empty());
    /// live.store("192.0.2.0/24".parse().unwrap());
    /// assert!(layer.trusted().contains("192.0.2.1".parse().unwrap()));
    /// ```
    pub fn trusted(&self) -> Arc<TrustedProxies> {
        match &self.config.live_trusted {
            Some(live) => live.load_full(),
            None => Arc::clone(&self.config.trusted),
        }
    }

    /// The live set of trusted proxies, if one is configured.
    pub fn live_trusted(&self) -> Option<&Live<TrustedProxies>> {
        self.config.live_trusted.as_ref()
    }

    /// Whether only WebSocket upgrades are resolved.
    pub fn is_websocket_only(&self) -> bool {
        self.config.websocket_only
    }

    /// Resolves a client from `headers` and the transport socket's `peer`, ignoring the
    /// WebSocket-only setting. This is what the middleware does per request once it has
    /// found the peer (for a tokio-tungstenite server: the accepted stream's peer address).
    pub fn resolve(&self, headers: &HeaderMap, peer: Option<&PeerAddr>) -> Resolution {
        let peer = peer.map(|peer| Peer::socket(Cow::Borrowed(peer)));
        resolve(&self.config, headers, peer.as_ref())
    }

    /// Resolves the client of a request: the transport peer from its extensions (see the
    /// [crate documentation](crate#transport-peer)), then [`resolve`](Self::resolve),
    /// honouring the WebSocket-only setting.
    pub fn resolve_request<B>(&self, request: &Request<B>) -> Resolution {
        self.resolve_parts(
            request.method(),
            request.version(),
            request.headers(),
            request.extensions(),
        )
    }

    fn resolve_parts(
        &self,
        method: &http::Method,
        version: http::Version,
        headers: &HeaderMap,
        extensions: &http::Extensions,
    ) -> Resolution {
        let peer = Peer::from_extensions(extensions);
        if self.config.websocket_only && !is_websocket_upgrade(method, version, headers) {
            return Resolution::fallback(peer.as_ref(), Fallback::NotWebSocket);
        }
        resolve(&self.config, headers, peer.as_ref())
    }
}

impl<S> Layer<S> for RealIpLayer {
    type Service = RealIp<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RealIp {
            inner,
            layer: self.clone(),
        }
    }
}

/// Middleware that inserts the real client's [`ClientAddr`] and the [`Resolution`] into
/// request extensions. Created by [`RealIpLayer`].
///
/// A `ClientAddr` already present (set by an outer layer) is never overridden.
#[derive(Clone, Debug)]
pub struct RealIp<S> {
    inner: S,
    layer: RealIpLayer,
}

impl<S> RealIp<S> {
    /// Wraps `inner` with the configuration of `layer`.
    pub fn new(inner: S, layer: RealIpLayer) -> Self {
        Self { inner, layer }
    }

    /// Returns a [`RealIpLayer`] with `strategy` and `trusted` (see [`RealIpLayer::new`]).
    pub fn layer(strategy: Strategy, trusted: TrustedProxies) -> RealIpLayer {
        RealIpLayer::new(strategy, trusted)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the middleware, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for RealIp<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if request.extensions().get::<ClientAddr>().is_none() {
            let resolution = self.layer.resolve_request(&request);
            trace_resolution(&self.layer, &resolution);
            metrics::resolved(&resolution);
            if let Some(client) = resolution.client() {
                request.extensions_mut().insert(client.clone());
            }
            request.extensions_mut().insert(resolution);
        } else {
            tracing::trace!("realip: client address already set by an outer layer; left unchanged");
        }
        self.inner.call(request)
    }
}

fn trace_resolution(layer: &RealIpLayer, resolution: &Resolution) {
    let span = tracing::Span::current();
    if let Some(client) = resolution.client() {
        span.record("client", tracing::field::display(client));
    }
    let peer = resolution.peer().map(tracing::field::display);
    let client = resolution.client().map(tracing::field::display);
    match resolution.outcome() {
        Outcome::Header(choice) => {
            if let Some(reason) = choice.stopped_by() {
                match layer.config.stopped_log.admit(std::time::Instant::now()) {
                    Some(suppressed) => tracing::warn!(
                        client,
                        peer,
                        header = %choice.header(),
                        %reason,
                        suppressed,
                        "realip: walk stopped at an entry that is not an address; kept the last good one"
                    ),
                    None => tracing::debug!(
                        client,
                        peer,
                        header = %choice.header(),
                        %reason,
                        "realip: walk stopped at an entry that is not an address; kept the last good one"
                    ),
                }
            } else {
                tracing::debug!(
                    client,
                    peer,
                    header = %choice.header(),
                    position = choice.position_from_right(),
                    "realip: client resolved from header"
                );
            }
        }
        Outcome::Fallback(fallback) if fallback.is_rejection() => {
            match layer.config.rejected_log.admit(std::time::Instant::now()) {
                Some(suppressed) => tracing::warn!(
                    client,
                    peer,
                    header = %layer.header_name(),
                    reason = %fallback,
                    suppressed,
                    "realip: header rejected; using the transport peer"
                ),
                None => tracing::debug!(
                    client,
                    peer,
                    header = %layer.header_name(),
                    reason = %fallback,
                    "realip: header rejected; using the transport peer"
                ),
            }
        }
        Outcome::Fallback(fallback) => {
            tracing::debug!(client, peer, reason = %fallback, "realip: client is the transport peer");
        }
    }
}
