//! A declarative table of address ranges → [`Policy`], with a default: for ports that serve
//! both a load balancer and its health checker (which cannot send a PROXY header), and
//! nobody else.
//!
//! The most specific range containing the peer wins (the longest prefix, as in NGINX's
//! `geo` module), so the order of the rules does not matter; between rules with equally
//! specific matching ranges the first one wins. A Unix-socket peer matches the first rule
//! whose ranges include `unix:`. Everyone else gets the default.
//!
//! # Example
//!
//! ```
//! use realip_core::PeerAddr;
//! use realip_listener::{Policy, PolicySource, PolicyTable};
//!
//! // Headers required from the load balancers, optional from the health checkers,
//! // refused from everybody else.
//! let table: PolicyTable = "10.0.0.0/24=require; 10.0.9.0/24=optional; *=reject".parse().unwrap();
//! let peer = |s: &str| PeerAddr::from(s.parse::<std::net::SocketAddr>().unwrap());
//! assert_eq!(table.policy_for(&peer("10.0.0.7:5000")), Policy::Require);
//! assert_eq!(table.policy_for(&peer("10.0.9.3:5000")), Policy::Optional);
//! assert_eq!(table.policy_for(&peer("192.0.2.1:5000")), Policy::Reject);
//!
//! // What the listener's builder takes.
//! let source = PolicySource::from(table);
//! assert_eq!(source.policy_for(&peer("10.0.9.3:5000")), Policy::Optional);
//! ```

use std::fmt;
use std::str::FromStr;

use realip_core::{ParseTrustedProxiesError, PeerAddr, TrustedProxies};

use crate::policy::{ParsePolicyError, Policy, PolicySource};

/// Address ranges → [`Policy`], with a default for peers in none of them.
///
/// Built with [`new`](Self::new) and [`rule`](Self::rule), or parsed from
/// `RANGES=POLICY; …; *=POLICY` (see [`FromStr`](#impl-FromStr-for-PolicyTable)); turned
/// into a [`PolicySource`] with `From`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyTable {
    rules: Vec<(TrustedProxies, Policy)>,
    default: Policy,
}

impl PolicyTable {
    /// A table without rules: every peer gets `default`.
    pub const fn new(default: Policy) -> Self {
        Self {
            rules: Vec::new(),
            default,
        }
    }

    /// Adds a rule: `policy` for peers in `ranges` (networks, and `unix:` peers if the set
    /// trusts them).
    #[must_use]
    pub fn rule(mut self, ranges: TrustedProxies, policy: Policy) -> Self {
        self.rules.push((ranges, policy));
        self
    }

    /// The policy for peers in no rule.
    pub const fn default_policy(&self) -> Policy {
        self.default
    }

    /// The rules, in the order they were added.
    pub fn rules(&self) -> &[(TrustedProxies, Policy)] {
        &self.rules
    }

    /// The policy for a connection from `peer`: the rule with the most specific range that
    /// contains it, or the default.
    pub fn policy_for(&self, peer: &PeerAddr) -> Policy {
        let Some(ip) = peer.ip() else {
            return self
                .rules
                .iter()
                .find(|(ranges, _)| ranges.contains_unix())
                .map_or(self.default, |(_, policy)| *policy);
        };
        let mut best: Option<(u8, Policy)> = None;
        for (ranges, policy) in &self.rules {
            let prefix = ranges
                .networks()
                .iter()
                .filter(|net| net.contains(&ip))
                .map(|net| net.prefix_len())
                .max();
            if let Some(prefix) = prefix {
                if best.is_none_or(|(len, _)| prefix > len) {
                    best = Some((prefix, *policy));
                }
            }
        }
        best.map_or(self.default, |(_, policy)| policy)
    }
}

impl From<PolicyTable> for PolicySource {
    fn from(table: PolicyTable) -> Self {
        PolicySource::from_fn(move |peer| table.policy_for(peer))
    }
}

/// The error of parsing a [`PolicyTable`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParsePolicyTableError {
    /// A rule is not `RANGES=POLICY`.
    #[error("policy table rule {0:?} is not RANGES=POLICY")]
    Rule(String),
    /// The ranges of a rule do not parse.
    #[error("policy table rule {rule:?}: {source}")]
    Ranges {
        /// The rule as written.
        rule: String,
        /// Why its ranges do not parse.
        #[source]
        source: ParseTrustedProxiesError,
    },
    /// The policy of a rule is unknown.
    #[error("policy table rule {rule:?}: {source}")]
    Policy {
        /// The rule as written.
        rule: String,
        /// Why its policy does not parse.
        #[source]
        source: ParsePolicyError,
    },
    /// The default (`*=POLICY`) is given more than once.
    #[error("policy table: the default (*=POLICY) is given more than once")]
    DuplicateDefault,
}

/// Parses `RANGES=POLICY` rules separated by `;` (or newlines). `RANGES` is what
/// [`TrustedProxies`] parses (CIDRs, addresses and `unix:`, separated by
/// commas or spaces); `POLICY` is a [`Policy`] name; `*=POLICY` sets the default, which is
/// [`Policy::Reject`] when not given.
///
/// ```
/// use realip_listener::{Policy, PolicyTable};
/// let table: PolicyTable = "10.0.0.0/8 = require\n35.191.0.0/16, 130.211.0.0/22 = optional"
///     .parse()
///     .unwrap();
/// assert_eq!(table.default_policy(), Policy::Reject);
/// assert_eq!(table.rules().len(), 2);
/// assert!("10.0.0.0/8=sometimes".parse::<PolicyTable>().is_err());
/// ```
impl FromStr for PolicyTable {
    type Err = ParsePolicyTableError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut table = Self::new(Policy::Reject);
        let mut default_seen = false;
        for rule in s
            .split([';', '\n'])
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            let (ranges, policy) = rule
                .rsplit_once('=')
                .ok_or_else(|| ParsePolicyTableError::Rule(rule.to_owned()))?;
            let policy: Policy =
                policy
                    .trim()
                    .parse()
                    .map_err(|source| ParsePolicyTableError::Policy {
                        rule: rule.to_owned(),
                        source,
                    })?;
            let ranges = ranges.trim();
            if ranges == "*" {
                if std::mem::replace(&mut default_seen, true) {
                    return Err(ParsePolicyTableError::DuplicateDefault);
                }
                table.default = policy;
                continue;
            }
            let ranges: TrustedProxies =
                ranges
                    .parse()
                    .map_err(|source| ParsePolicyTableError::Ranges {
                        rule: rule.to_owned(),
                        source,
                    })?;
            if ranges.is_empty() {
                return Err(ParsePolicyTableError::Rule(rule.to_owned()));
            }
            table.rules.push((ranges, policy));
        }
        Ok(table)
    }
}

/// The table in the form [`FromStr`] reads, default last.
impl fmt::Display for PolicyTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (ranges, policy) in &self.rules {
            let mut first = true;
            for net in ranges.networks() {
                f.write_str(if first { "" } else { "," })?;
                write!(f, "{net}")?;
                first = false;
            }
            if ranges.contains_unix() {
                f.write_str(if first { "unix:" } else { ",unix:" })?;
            }
            write!(f, "={policy}; ")?;
        }
        write!(f, "*={}", self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> PeerAddr {
        PeerAddr::from(s.parse::<std::net::SocketAddr>().unwrap())
    }

    #[test]
    fn the_most_specific_range_wins_whatever_the_order() {
        for text in [
            "10.0.0.0/8=require; 10.9.0.0/16=optional; *=reject",
            "10.9.0.0/16=optional; 10.0.0.0/8=require; *=reject",
        ] {
            let table: PolicyTable = text.parse().unwrap();
            assert_eq!(table.policy_for(&peer("10.9.1.1:1")), Policy::Optional);
            assert_eq!(table.policy_for(&peer("10.8.1.1:1")), Policy::Require);
            assert_eq!(table.policy_for(&peer("11.0.0.1:1")), Policy::Reject);
        }
    }

    #[test]
    fn ipv4_mapped_and_ipv6_peers_match_their_ranges() {
        let table: PolicyTable = "192.0.2.0/24=require; 2001:db8::/32=skip; *=ignore"
            .parse()
            .unwrap();
        assert_eq!(
            table.policy_for(&peer("[::ffff:192.0.2.9]:1")),
            Policy::Require
        );
        assert_eq!(table.policy_for(&peer("[2001:db8::1]:1")), Policy::Skip);
        assert_eq!(table.policy_for(&peer("[2001:db9::1]:1")), Policy::Ignore);
    }

    #[test]
    fn unix_peers_match_a_unix_rule_or_get_the_default() {
        let unix = PeerAddr::Unix(None);
        let with: PolicyTable = "unix:=skip; 10.0.0.0/8=require".parse().unwrap();
        assert_eq!(with.policy_for(&unix), Policy::Skip);
        let without: PolicyTable = "10.0.0.0/8=require; *=optional".parse().unwrap();
        assert_eq!(without.policy_for(&unix), Policy::Optional);
    }

    #[test]
    fn bad_tables_are_errors_that_name_the_rule() {
        let err = "10.0.0.0/8".parse::<PolicyTable>().unwrap_err();
        assert_eq!(err, ParsePolicyTableError::Rule("10.0.0.0/8".into()));
        let err = "10.0.0.300/8=require".parse::<PolicyTable>().unwrap_err();
        assert!(err.to_string().contains("10.0.0.300/8=require"), "{err}");
        let err = "10.0.0.0/8=maybe".parse::<PolicyTable>().unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
        assert_eq!(
            "*=skip; *=reject".parse::<PolicyTable>().unwrap_err(),
            ParsePolicyTableError::DuplicateDefault
        );
        assert!(matches!(
            " =require".parse::<PolicyTable>().unwrap_err(),
            ParsePolicyTableError::Rule(_)
        ));
    }

    #[test]
    fn display_reads_back_as_the_same_table() {
        let table = PolicyTable::new(Policy::Ignore)
            .rule("10.0.0.0/8, 192.0.2.1".parse().unwrap(), Policy::Require)
            .rule(TrustedProxies::new().with_unix(), Policy::Skip);
        let text = table.to_string();
        assert_eq!(
            text,
            "10.0.0.0/8,192.0.2.1/32=require; unix:=skip; *=ignore"
        );
        assert_eq!(text.parse::<PolicyTable>().unwrap(), table);
    }
}
