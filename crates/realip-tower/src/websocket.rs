//! WebSocket handshake detection, for [`websocket_only`](crate::RealIpLayer::websocket_only).

use http::{HeaderMap, HeaderName, Method, Version, header};

use crate::parse::trim_ows;

/// Whether a request is a WebSocket handshake: an HTTP/1.x `Upgrade: websocket` with
/// `Connection: upgrade` (tokens case-insensitive, in any line and position, as in
/// `Connection: keep-alive, Upgrade`), or an HTTP/2 or HTTP/3 `CONNECT`.
///
/// For HTTP/2 and later, WebSockets use the extended `CONNECT` of RFC 8441, whose
/// `:protocol` pseudo-header is not part of [`HeaderMap`] (hyper keeps it in an extension),
/// so every `CONNECT` counts as a handshake there.
///
/// ```
/// use http::{HeaderMap, Method, Version};
/// use realip_tower::is_websocket_upgrade;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("connection", "keep-alive, Upgrade".parse().unwrap());
/// headers.insert("upgrade", "WebSocket".parse().unwrap());
/// assert!(is_websocket_upgrade(&Method::GET, Version::HTTP_11, &headers));
/// headers.insert("upgrade", "h2c".parse().unwrap());
/// assert!(!is_websocket_upgrade(&Method::GET, Version::HTTP_11, &headers));
/// ```
pub fn is_websocket_upgrade(method: &Method, version: Version, headers: &HeaderMap) -> bool {
    if version >= Version::HTTP_2 {
        return method == Method::CONNECT;
    }
    let has_token = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|line| {
            line.as_bytes()
                .split(|&b| b == b',')
                .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn websocket_upgrade_detection() {
        let get = Method::GET;
        let h11 = Version::HTTP_11;
        let yes = [
            headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]),
            headers(&[
                ("connection", "keep-alive, upgrade"),
                ("upgrade", "WebSocket"),
            ]),
            headers(&[
                ("connection", "keep-alive"),
                ("connection", "Upgrade"),
                ("upgrade", "h2c, websocket"),
            ]),
        ];
        for map in &yes {
            assert!(is_websocket_upgrade(&get, h11, map), "{map:?}");
        }
        let no = [
            headers(&[]),
            headers(&[("upgrade", "websocket")]),
            headers(&[("connection", "upgrade")]),
            headers(&[("connection", "upgrade"), ("upgrade", "h2c")]),
            headers(&[("connection", "upgraded"), ("upgrade", "websocket")]),
        ];
        for map in &no {
            assert!(!is_websocket_upgrade(&get, h11, map), "{map:?}");
        }
        // HTTP/2 extended CONNECT (RFC 8441).
        assert!(is_websocket_upgrade(
            &Method::CONNECT,
            Version::HTTP_2,
            &HeaderMap::new()
        ));
        assert!(!is_websocket_upgrade(&get, Version::HTTP_2, &yes[0]));
    }
}
