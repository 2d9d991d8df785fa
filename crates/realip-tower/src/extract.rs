//! axum extractors for the resolved client address (feature `axum`).

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use realip_core::{ClientAddr, PeerAddr};

use crate::resolution::{Fallback, Outcome, Resolution};

/// Extracts the [`ClientAddr`] resolved by [`RealIpLayer`](crate::RealIpLayer).
///
/// `ClientAddr` lives in `realip-core`, so this crate cannot implement axum's
/// `FromRequestParts` for it directly (orphan rule); this newtype is the extractor.
/// `Option<RealClient>` is also an extractor, giving `None` instead of a rejection.
///
/// When it cannot extract, the rejection is a `500` whose body says why: the layer is not
/// installed, no transport peer is known (serve with `into_make_service_with_connect_info`),
/// or the peer is a Unix socket and no header gave an address. See [`RealClientRejection`].
///
/// ```
/// use std::net::SocketAddr;
///
/// use axum::body::{Body, to_bytes};
/// use axum::extract::connect_info::MockConnectInfo;
/// use axum::{Router, routing::get};
/// use http::{Request, StatusCode};
/// use realip_core::TrustedProxies;
/// use realip_tower::{RealClient, RealIpLayer};
/// use tower::ServiceExt;
///
/// async fn whoami(RealClient(client): RealClient) -> String {
///     format!("{} via {}", client, client.source())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let app = Router::new()
///     .route("/", get(whoami))
///     .layer(RealIpLayer::x_forwarded_for(TrustedProxies::loopback()));
/// let request = || {
///     Request::get("/")
///         .header("x-forwarded-for", "203.0.113.7")
///         .body(Body::empty())
///         .unwrap()
/// };
///
/// // Served with `into_make_service_with_connect_info::<SocketAddr>()`, behind a proxy on
/// // 127.0.0.1 (mocked here).
/// let served = app
///     .clone()
///     .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 41000))));
/// let response = served.oneshot(request()).await.unwrap();
/// let body = to_bytes(response.into_body(), 1024).await.unwrap();
/// assert_eq!(body, "203.0.113.7 via x-forwarded-for");
///
/// // Served without connect info: the rejection says what is missing.
/// let response = app.oneshot(request()).await.unwrap();
/// assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
/// let body = to_bytes(response.into_body(), 1024).await.unwrap();
/// assert!(std::str::from_utf8(&body).unwrap().contains("into_make_service_with_connect_info"));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RealClient(pub ClientAddr);

impl std::ops::Deref for RealClient {
    type Target = ClientAddr;

    fn deref(&self) -> &ClientAddr {
        &self.0
    }
}

impl From<RealClient> for ClientAddr {
    fn from(client: RealClient) -> Self {
        client.0
    }
}

/// Why [`RealClient`] could not be extracted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RealClientRejection {
    /// No [`RealIpLayer`](crate::RealIpLayer) ran for this request.
    #[error(
        "no client address: `RealIpLayer` is not installed on this route (add `.layer(RealIpLayer::...)` to the router)"
    )]
    MissingLayer,
    /// The layer ran but found no transport peer in the request extensions, and no header
    /// applied.
    #[error(
        "no client address: `RealIpLayer` found no transport peer ({0}); serve the app with `into_make_service_with_connect_info::<SocketAddr>()`, or `::<ProxiedAddr>()` with the `realip-listener` PROXY listener"
    )]
    NoTransportPeer(Fallback),
    /// The transport peer is a Unix domain socket (it has no IP address) and no header
    /// gave one.
    #[error(
        "no client address: the peer is a Unix socket and no forwarded header gave an address ({0}); have the proxy send a PROXY header or a forwarded header, and trust `unix:`"
    )]
    UnixPeer(Fallback),
}

impl IntoResponse for RealClientRejection {
    fn into_response(self) -> Response {
        tracing::error!(reason = %self, "realip: client address extraction failed");
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

fn from_parts(parts: &Parts) -> Result<RealClient, RealClientRejection> {
    if let Some(client) = parts.extensions.get::<ClientAddr>() {
        return Ok(RealClient(client.clone()));
    }
    let Some(resolution) = parts.extensions.get::<Resolution>() else {
        return Err(RealClientRejection::MissingLayer);
    };
    let reason = match resolution.outcome() {
        Outcome::Fallback(fallback) => *fallback,
        // A header decision always carries an address, and the layer inserts it.
        _ => Fallback::NoTransportPeer,
    };
    if resolution.peer().is_some_and(PeerAddr::is_unix) {
        Err(RealClientRejection::UnixPeer(reason))
    } else {
        Err(RealClientRejection::NoTransportPeer(reason))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RealClient {
    type Rejection = RealClientRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        from_parts(parts)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for RealClient {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(from_parts(parts).ok())
    }
}

/// Extracts the [`Resolution`] (how the client was decided); rejects with
/// [`RealClientRejection::MissingLayer`] when the layer did not run.
impl<S: Send + Sync> FromRequestParts<S> for Resolution {
    type Rejection = RealClientRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Resolution>()
            .cloned()
            .ok_or(RealClientRejection::MissingLayer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> Parts {
        http::Request::new(()).into_parts().0
    }

    #[test]
    fn rejections_name_the_missing_piece() {
        let p = parts();
        let err = from_parts(&p).unwrap_err();
        assert_eq!(err, RealClientRejection::MissingLayer);
        assert!(err.to_string().contains("`RealIpLayer` is not installed"));

        let mut p = parts();
        p.extensions
            .insert(Resolution::fallback(None, Fallback::NoTransportPeer));
        let err = from_parts(&p).unwrap_err();
        assert_eq!(
            err,
            RealClientRejection::NoTransportPeer(Fallback::NoTransportPeer)
        );
        assert!(
            err.to_string()
                .contains("into_make_service_with_connect_info")
        );

        let mut p = parts();
        let unix = crate::peer::Peer::socket(std::borrow::Cow::Owned(PeerAddr::Unix(None)));
        p.extensions
            .insert(Resolution::fallback(Some(&unix), Fallback::NoHeader));
        let err = from_parts(&p).unwrap_err();
        assert_eq!(err, RealClientRejection::UnixPeer(Fallback::NoHeader));
        assert!(err.to_string().contains("Unix socket"));

        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

        let mut p = parts();
        let client = ClientAddr::new(
            "192.0.2.1".parse().unwrap(),
            None,
            realip_core::AddrSource::Socket,
        );
        p.extensions.insert(client.clone());
        assert_eq!(from_parts(&p).unwrap(), RealClient(client));
    }
}
