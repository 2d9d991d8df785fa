//! Who must, may, or must not send a PROXY protocol header: `--proxy-from`,
//! `--proxy-optional` and `--proxy-default`, as a `realip_listener::PolicyTable` plus what
//! the broker does with a connection without a header from everyone else.

use std::fmt;

use realip_core::{PeerAddr, TrustedProxies};
use realip_listener::{Policy, PolicyTable};

/// What happens to a connection from a peer in neither `--proxy-from` nor `--proxy-optional`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ProxyDefault {
    /// `reject`: the connection is closed, with a PROXY header or without one.
    #[default]
    Reject,
    /// `none`: served with its socket address when it sends no header; a header from it
    /// closes the connection (it is not a proxy whose headers are believed).
    None,
}

impl ProxyDefault {
    /// `--proxy-default VALUE`.
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "reject" => Ok(Self::Reject),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "invalid --proxy-default {value:?}: expected reject (close connections from \
                 every other peer) or none (other peers connect without a PROXY header)"
            )),
        }
    }

    const fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::None => "none",
        }
    }
}

/// The PROXY policy of the listeners with PROXY protocol on, by socket peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProxyRules {
    /// What `realip-listener` applies while reading the header.
    table: PolicyTable,
    /// For peers outside every range: `--proxy-default`.
    default: ProxyDefault,
}

impl Default for ProxyRules {
    /// No ranges: a header is required from every peer.
    fn default() -> Self {
        Self {
            table: PolicyTable::new(Policy::Require),
            default: ProxyDefault::Reject,
        }
    }
}

impl ProxyRules {
    /// A header required from `require` (`--proxy-from`), optional from `optional`
    /// (`--proxy-optional`: health checkers that cannot send one), and `default` for every
    /// other peer. Without ranges a header is required from every peer.
    pub(crate) fn new(
        require: Option<TrustedProxies>,
        optional: Option<TrustedProxies>,
        default: ProxyDefault,
    ) -> Self {
        if require.is_none() && optional.is_none() {
            return Self::default();
        }
        // Peers outside the ranges must not send a header (`Policy::Reject`); under
        // `--proxy-default reject` the broker also closes their connections without one.
        let mut table = PolicyTable::new(Policy::Reject);
        if let Some(require) = require {
            table = table.rule(require, Policy::Require);
        }
        if let Some(optional) = optional {
            table = table.rule(optional, Policy::Optional);
        }
        Self { table, default }
    }

    /// The listener's policy for a connection from `peer`.
    pub(crate) fn policy_for(&self, peer: &PeerAddr) -> Policy {
        self.table.policy_for(peer)
    }

    /// Whether a connection from `peer` that sent no header is closed: a peer outside every
    /// range under `--proxy-default reject`. (Peers that must send one are closed by the
    /// listener; peers in `--proxy-optional` are served.)
    pub(crate) fn refuses_without_header(&self, peer: &PeerAddr) -> bool {
        self.default == ProxyDefault::Reject && self.policy_for(peer) == Policy::Reject
    }
}

/// The table as `realip_listener::PolicyTable` prints it, then the default:
/// `10.0.0.0/24=require; 10.0.9.0/24=optional; *=reject; default=none`.
impl fmt::Display for ProxyRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; default={}", self.table, self.default.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> PeerAddr {
        PeerAddr::Inet(s.parse().unwrap())
    }

    #[test]
    fn without_ranges_every_peer_must_send_a_header() {
        let rules = ProxyRules::new(None, None, ProxyDefault::Reject);
        assert_eq!(rules.policy_for(&peer("192.0.2.1:1")), Policy::Require);
        assert!(!rules.refuses_without_header(&peer("192.0.2.1:1")));
    }

    #[test]
    fn load_balancers_health_checkers_and_everyone_else() {
        let rules = ProxyRules::new(
            Some("10.0.0.0/24".parse().unwrap()),
            Some("10.0.9.0/24".parse().unwrap()),
            ProxyDefault::Reject,
        );
        assert_eq!(rules.policy_for(&peer("10.0.0.7:1")), Policy::Require);
        assert_eq!(rules.policy_for(&peer("10.0.9.7:1")), Policy::Optional);
        assert_eq!(rules.policy_for(&peer("192.0.2.1:1")), Policy::Reject);
        assert!(rules.refuses_without_header(&peer("192.0.2.1:1")));
        assert!(!rules.refuses_without_header(&peer("10.0.9.7:1")));
        let open = ProxyRules::new(
            Some("10.0.0.0/24".parse().unwrap()),
            None,
            ProxyDefault::None,
        );
        assert!(!open.refuses_without_header(&peer("192.0.2.1:1")));
        assert_eq!(open.policy_for(&peer("192.0.2.1:1")), Policy::Reject);
        assert_eq!(
            rules.to_string(),
            "10.0.0.0/24=require; 10.0.9.0/24=optional; *=reject; default=reject"
        );
        assert!(ProxyDefault::parse("sometimes").is_err());
        assert_eq!(ProxyDefault::parse(" None").unwrap(), ProxyDefault::None);
    }
}
