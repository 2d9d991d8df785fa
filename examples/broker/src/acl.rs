//! Access control by the client's real address (`--allow` / `--deny`).

use std::net::IpAddr;

use realip_core::TrustedProxies;

/// Allow and deny lists of CIDRs, checked against the real client address.
///
/// `--deny` wins over `--allow`; with no `--allow`, every address not denied is allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Acl {
    allow: Option<TrustedProxies>,
    deny: TrustedProxies,
}

impl Acl {
    pub(crate) fn new(allow: Option<TrustedProxies>, deny: TrustedProxies) -> Self {
        Self { allow, deny }
    }

    /// `Ok(())` when `ip` may connect, else the reason for the audit log.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), String> {
        if self.deny.contains(ip) {
            return Err(format!("{ip} matches --deny {:?}", self.deny));
        }
        match &self.allow {
            Some(allow) if !allow.contains(ip) => Err(format!("{ip} is not in --allow {allow:?}")),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let acl = Acl::new(
            Some("127.0.0.0/24".parse().unwrap()),
            "127.0.0.13".parse().unwrap(),
        );
        assert!(acl.check(ip("127.0.0.1")).is_ok());
        assert!(acl.check(ip("::ffff:127.0.0.1")).is_ok());
        assert!(acl.check(ip("127.0.0.13")).unwrap_err().contains("--deny"));
        assert!(acl.check(ip("127.0.1.1")).unwrap_err().contains("--allow"));
        assert!(Acl::default().check(ip("203.0.113.1")).is_ok());
    }
}
