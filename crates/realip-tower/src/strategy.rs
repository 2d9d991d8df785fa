//! [`Strategy`]: how the client address is chosen from the configured header.

use http::{HeaderName, header};

/// How the client address is chosen from the configured header.
///
/// NGINX's `real_ip_recursive` applies to the strategies that walk over trusted proxies,
/// and only those carry it. See the [crate documentation](crate) for the proxy
/// configuration each strategy matches and its spoofing risk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// NGINX realip: `set_real_ip_from` + `real_ip_header` + `real_ip_recursive`.
    ///
    /// The header (a comma-separated list such as `X-Forwarded-For`) is honoured only when
    /// the transport peer is trusted. Non-recursive: the rightmost entry. Recursive: walk
    /// right to left, skip trusted entries, return the first untrusted one.
    ///
    /// Short header: with no entry at all, the transport peer
    /// ([`Fallback::NoHeader`](crate::Fallback::NoHeader)); when the recursive walk runs
    /// out of entries because every one is trusted, the leftmost (as NGINX does): an
    /// address a trusted proxy wrote, never one from an untrusted client, whose own entries
    /// always lie left of its untrusted address.
    TrustedProxies {
        /// NGINX `real_ip_recursive on`: skip trusted entries from the right.
        recursive: bool,
    },
    /// Envoy `xff_num_trusted_hops` (with `use_remote_address`): `N` proxies in front of
    /// this server each append the address they saw; the client is the `N`th non-empty
    /// entry from the right. `0` ignores the header.
    ///
    /// Short header: with fewer than `N` non-empty entries the request did not pass every
    /// trusted hop, so nothing in the header is believed and the client is the transport
    /// peer ([`Fallback::TooFewHops`](crate::Fallback::TooFewHops), as Envoy uses the
    /// downstream connection's address).
    TrustedHops(usize),
    /// A header holding exactly one address (`X-Real-IP`, `CF-Connecting-IP`, …), written
    /// by the trusted proxy in front of this server. More than one line is an error.
    ///
    /// Short header: an empty value is an absent header, the transport peer
    /// ([`Fallback::NoHeader`](crate::Fallback::NoHeader)).
    SingleValue,
    /// EMQX `proxy_address_header`: the leftmost entry. Safe only when the outermost proxy
    /// overwrites the header; never use it when a proxy appends to a client-sent header.
    ///
    /// Short header: with no entry at all, the transport peer
    /// ([`Fallback::NoHeader`](crate::Fallback::NoHeader)).
    Leftmost,
    /// RFC 7239 `Forwarded`: the `for=` node of each element, walked like
    /// [`TrustedProxies`](Self::TrustedProxies) (short headers included). `unknown` and
    /// obfuscated nodes stop the walk.
    Forwarded {
        /// Skip elements whose node is a trusted proxy, from the right.
        recursive: bool,
    },
}

impl Strategy {
    /// The header this strategy reads unless another is configured.
    pub const fn default_header(self) -> HeaderName {
        match self {
            Self::TrustedProxies { .. } | Self::TrustedHops(_) | Self::Leftmost => {
                HeaderName::from_static("x-forwarded-for")
            }
            Self::SingleValue => HeaderName::from_static("x-real-ip"),
            Self::Forwarded { .. } => header::FORWARDED,
        }
    }

    /// Whether the walk skips trusted entries (`false` for strategies without that walk).
    pub const fn is_recursive(self) -> bool {
        matches!(
            self,
            Self::TrustedProxies { recursive: true } | Self::Forwarded { recursive: true }
        )
    }

    /// The same strategy with `recursive` set, for command lines that take the strategy
    /// and a `--recursive` flag apart: `None` when `recursive` is `true` and the strategy
    /// has no walk over trusted proxies.
    ///
    /// ```
    /// use realip_tower::Strategy;
    /// let xff = Strategy::TrustedProxies { recursive: false };
    /// assert_eq!(xff.with_recursive(true), Some(Strategy::TrustedProxies { recursive: true }));
    /// assert_eq!(Strategy::Leftmost.with_recursive(true), None);
    /// assert_eq!(Strategy::Leftmost.with_recursive(false), Some(Strategy::Leftmost));
    /// ```
    pub const fn with_recursive(self, recursive: bool) -> Option<Self> {
        match self {
            Self::TrustedProxies { .. } => Some(Self::TrustedProxies { recursive }),
            Self::Forwarded { .. } => Some(Self::Forwarded { recursive }),
            other if !recursive => Some(other),
            _ => None,
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = ParseStrategyError;

    /// Parses `trusted`, `trusted-recursive`, `hops:N`, `single`, `leftmost`, `forwarded`
    /// or `forwarded-recursive`.
    ///
    /// ```
    /// use realip_tower::Strategy;
    /// assert_eq!("hops:2".parse::<Strategy>().unwrap(), Strategy::TrustedHops(2));
    /// assert_eq!(
    ///     "forwarded-recursive".parse::<Strategy>().unwrap(),
    ///     Strategy::Forwarded { recursive: true }
    /// );
    /// assert_eq!(Strategy::TrustedHops(2).to_string(), "hops:2");
    /// assert!("rightmost".parse::<Strategy>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "trusted" => Ok(Self::TrustedProxies { recursive: false }),
            "trusted-recursive" => Ok(Self::TrustedProxies { recursive: true }),
            "single" => Ok(Self::SingleValue),
            "leftmost" => Ok(Self::Leftmost),
            "forwarded" => Ok(Self::Forwarded { recursive: false }),
            "forwarded-recursive" => Ok(Self::Forwarded { recursive: true }),
            _ => match s.strip_prefix("hops:").map(str::parse::<usize>) {
                Some(Ok(hops)) => Ok(Self::TrustedHops(hops)),
                _ => Err(ParseStrategyError(s.to_owned())),
            },
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TrustedProxies { recursive: false } => f.write_str("trusted"),
            Self::TrustedProxies { recursive: true } => f.write_str("trusted-recursive"),
            Self::TrustedHops(hops) => write!(f, "hops:{hops}"),
            Self::SingleValue => f.write_str("single"),
            Self::Leftmost => f.write_str("leftmost"),
            Self::Forwarded { recursive: false } => f.write_str("forwarded"),
            Self::Forwarded { recursive: true } => f.write_str("forwarded-recursive"),
        }
    }
}

/// The error of parsing a [`Strategy`] name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown strategy {0:?}: expected trusted, trusted-recursive, hops:N, single, leftmost, forwarded or forwarded-recursive"
)]
pub struct ParseStrategyError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for strategy in [
            Strategy::TrustedProxies { recursive: false },
            Strategy::TrustedProxies { recursive: true },
            Strategy::TrustedHops(0),
            Strategy::TrustedHops(3),
            Strategy::SingleValue,
            Strategy::Leftmost,
            Strategy::Forwarded { recursive: false },
            Strategy::Forwarded { recursive: true },
        ] {
            assert_eq!(strategy.to_string().parse::<Strategy>(), Ok(strategy));
        }
        let err = "hops:x".parse::<Strategy>().unwrap_err();
        assert!(err.to_string().contains("\"hops:x\""));
    }
}
