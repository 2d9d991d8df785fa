//! The providers' formats, parsed into [`TrustedProxies`] sets, and [`store_checked`].

use serde_json::Value;

use crate::live::Live;
use crate::trusted::{ParseTrustedProxiesError, TrustedProxies};

/// Why a provider's list could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PresetError {
    /// The document is not the JSON the format needs.
    #[error("not a valid {format} document: {reason}")]
    Document {
        /// The format expected.
        format: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// An entry is not an IP network.
    #[error("{format}: {source}")]
    Entry {
        /// The format being parsed.
        format: &'static str,
        /// The entry's error.
        #[source]
        source: ParseTrustedProxiesError,
    },
    /// The list holds no network (for AWS: none for the service asked for).
    #[error("{format}: the list holds no network")]
    Empty {
        /// The format being parsed.
        format: &'static str,
    },
    /// The new list has less than half as many networks as the one it would replace
    /// ([`store_checked`]).
    #[error("the new list has {after} networks, less than half of the {before} in use")]
    Shrunk {
        /// Networks in the set in use.
        before: usize,
        /// Networks in the new list.
        after: usize,
    },
}

/// Stores a freshly parsed list into `live` only if it is usable: it parsed, and it has at
/// least half as many networks as the set in use (a provider's list grows and shrinks by a
/// few entries; a list cut in half is a broken download). Otherwise `live` keeps the last
/// good set and the error says why.
///
/// ```
/// use realip_core::{Live, presets};
///
/// let live = Live::new(presets::cloudflare("192.0.2.0/26\n192.0.2.64/26\n192.0.2.128/26").unwrap());
/// // A download cut short, then a garbled one: the last good set stays.
/// assert!(presets::store_checked(&live, presets::cloudflare("192.0.2.0/26")).is_err());
/// assert!(presets::store_checked(&live, presets::cloudflare("<html>")).is_err());
/// assert_eq!(live.load().networks().len(), 3);
/// // A normal update is stored.
/// presets::store_checked(&live, presets::cloudflare("192.0.2.0/26\n192.0.2.64/26")).unwrap();
/// assert_eq!(live.load().networks().len(), 2);
/// ```
pub fn store_checked(
    live: &Live<TrustedProxies>,
    update: Result<TrustedProxies, PresetError>,
) -> Result<(), PresetError> {
    let update = update?;
    let before = live.load().networks().len();
    let after = update.networks().len();
    if after * 2 < before {
        return Err(PresetError::Shrunk { before, after });
    }
    live.store(update);
    Ok(())
}

fn collect<'a>(
    format: &'static str,
    entries: impl IntoIterator<Item = &'a str>,
) -> Result<TrustedProxies, PresetError> {
    let set = TrustedProxies::parse_list(entries.into_iter().filter(|e| !e.trim().is_empty()))
        .map_err(|source| PresetError::Entry { format, source })?;
    if set.contains_unix() {
        // `TrustedProxies` reads `unix:`; no provider publishes it.
        return Err(PresetError::Document {
            format,
            reason: "\"unix:\" is not a network".into(),
        });
    }
    if set.networks().is_empty() {
        return Err(PresetError::Empty { format });
    }
    Ok(set)
}

fn json(format: &'static str, text: &str) -> Result<Value, PresetError> {
    serde_json::from_str(text).map_err(|err| PresetError::Document {
        format,
        reason: err.to_string(),
    })
}

/// The string values of `key` in each object of the array `doc[array]`; an error if the
/// array is missing or an element's value is not a string.
fn strings<'a>(
    format: &'static str,
    doc: &'a Value,
    array: &str,
    key: &str,
    keep: impl Fn(&Value) -> bool,
) -> Result<Vec<&'a str>, PresetError> {
    let items = doc
        .get(array)
        .and_then(Value::as_array)
        .ok_or_else(|| PresetError::Document {
            format,
            reason: format!("no {array:?} array"),
        })?;
    let mut out = Vec::new();
    for item in items.iter().filter(|item| keep(item)) {
        let value = item
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| PresetError::Document {
                format,
                reason: format!("an element of {array:?} has no string {key:?}"),
            })?;
        out.push(value);
    }
    Ok(out)
}

/// Cloudflare's plain lists (`ips-v4`, `ips-v6`): one CIDR per line; blank lines are
/// ignored. Pass both lists joined by a newline for both families.
pub fn cloudflare(text: &str) -> Result<TrustedProxies, PresetError> {
    plain_list("Cloudflare list", text)
}

/// A list of one CIDR per line, blank lines ignored (Cloudflare's format, and the one this
/// crate uses for lists published only on a web page).
pub(crate) fn plain_list(format: &'static str, text: &str) -> Result<TrustedProxies, PresetError> {
    collect(format, text.lines().map(str::trim))
}

/// AWS `ip-ranges.json`: the `ip_prefix` of every `prefixes` element and the `ipv6_prefix`
/// of every `ipv6_prefixes` element whose `service` is `service` (for example
/// `CLOUDFRONT_ORIGIN_FACING`, the addresses CloudFront connects to origins from).
pub fn aws(text: &str, service: &str) -> Result<TrustedProxies, PresetError> {
    const FORMAT: &str = "AWS ip-ranges.json";
    let doc = json(FORMAT, text)?;
    let of_service = |item: &Value| item.get("service").and_then(Value::as_str) == Some(service);
    let mut entries = strings(FORMAT, &doc, "prefixes", "ip_prefix", of_service)?;
    entries.extend(strings(
        FORMAT,
        &doc,
        "ipv6_prefixes",
        "ipv6_prefix",
        of_service,
    )?);
    collect(FORMAT, entries)
}

/// Fastly's public IP list: the `addresses` and `ipv6_addresses` arrays of CIDRs.
pub fn fastly(text: &str) -> Result<TrustedProxies, PresetError> {
    const FORMAT: &str = "Fastly public IP list";
    let doc = json(FORMAT, text)?;
    let mut entries = Vec::new();
    for key in ["addresses", "ipv6_addresses"] {
        let list = doc
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| PresetError::Document {
                format: FORMAT,
                reason: format!("no {key:?} array"),
            })?;
        for value in list {
            entries.push(value.as_str().ok_or_else(|| PresetError::Document {
                format: FORMAT,
                reason: format!("an element of {key:?} is not a string"),
            })?);
        }
    }
    collect(FORMAT, entries)
}

/// Google's published ranges (`goog.json`, `cloud.json`): the `ipv4Prefix` or `ipv6Prefix`
/// of every `prefixes` element.
pub fn google(text: &str) -> Result<TrustedProxies, PresetError> {
    const FORMAT: &str = "Google IP ranges";
    let doc = json(FORMAT, text)?;
    let items = doc
        .get("prefixes")
        .and_then(Value::as_array)
        .ok_or_else(|| PresetError::Document {
            format: FORMAT,
            reason: "no \"prefixes\" array".into(),
        })?;
    let mut entries = Vec::new();
    for item in items {
        let value = item
            .get("ipv4Prefix")
            .or_else(|| item.get("ipv6Prefix"))
            .and_then(Value::as_str)
            .ok_or_else(|| PresetError::Document {
                format: FORMAT,
                reason: "a prefix has neither a string \"ipv4Prefix\" nor \"ipv6Prefix\"".into(),
            })?;
        entries.push(value);
    }
    collect(FORMAT, entries)
}

#[cfg(test)]
mod tests {
    //! Fixtures in the providers' formats, with documentation-range addresses (RFC 5737,
    //! RFC 3849): they test the formats, they are not anyone's real ranges.

    use super::*;

    fn has(set: &TrustedProxies, ip: &str) -> bool {
        set.contains(ip.parse().unwrap())
    }

    #[test]
    fn cloudflare_lists_of_both_families() {
        let set = cloudflare("192.0.2.0/24\n198.51.100.0/22\n\n2001:db8::/32\n").unwrap();
        assert_eq!(set.networks().len(), 3);
        assert!(has(&set, "198.51.101.1") && has(&set, "2001:db8::1"));
        assert!(!has(&set, "203.0.113.1"));
        assert!(matches!(cloudflare("\n\n"), Err(PresetError::Empty { .. })));
        // An HTML error page instead of the list.
        assert!(matches!(
            cloudflare("<html>rate limited</html>"),
            Err(PresetError::Entry { .. })
        ));
        assert!(cloudflare("unix:").is_err());
    }

    #[test]
    fn aws_keeps_only_the_service_asked_for() {
        let json = r#"{"syncToken":"1","createDate":"2026-01-01-00-00-00",
            "prefixes":[
              {"ip_prefix":"192.0.2.0/24","region":"GLOBAL","service":"CLOUDFRONT_ORIGIN_FACING","network_border_group":"GLOBAL"},
              {"ip_prefix":"198.51.100.0/24","region":"GLOBAL","service":"CLOUDFRONT","network_border_group":"GLOBAL"},
              {"ip_prefix":"203.0.113.0/24","region":"us-east-1","service":"AMAZON","network_border_group":"us-east-1"}],
            "ipv6_prefixes":[
              {"ipv6_prefix":"2001:db8:1::/48","region":"GLOBAL","service":"CLOUDFRONT_ORIGIN_FACING","network_border_group":"GLOBAL"},
              {"ipv6_prefix":"2001:db8:2::/48","region":"GLOBAL","service":"AMAZON","network_border_group":"GLOBAL"}]}"#;
        let set = aws(json, "CLOUDFRONT_ORIGIN_FACING").unwrap();
        assert_eq!(set.networks().len(), 2);
        assert!(has(&set, "192.0.2.1") && has(&set, "2001:db8:1::1"));
        assert!(!has(&set, "198.51.100.1") && !has(&set, "2001:db8:2::1"));
        assert!(matches!(
            aws(json, "NO_SUCH_SERVICE"),
            Err(PresetError::Empty { .. })
        ));
        assert!(matches!(
            aws(r#"{"prefixes": []}"#, "CLOUDFRONT"),
            Err(PresetError::Document { .. })
        ));
        assert!(matches!(
            aws("{\"prefixes\": [", "CLOUDFRONT"),
            Err(PresetError::Document { .. })
        ));
    }

    #[test]
    fn fastly_addresses_of_both_families() {
        let set = fastly(
            r#"{"addresses":["192.0.2.0/24","198.51.100.0/24"],"ipv6_addresses":["2001:db8::/32"]}"#,
        )
        .unwrap();
        assert_eq!(set.networks().len(), 3);
        assert!(has(&set, "2001:db8::5"));
        assert!(matches!(
            fastly(r#"{"addresses":[1],"ipv6_addresses":[]}"#),
            Err(PresetError::Document { .. })
        ));
        assert!(matches!(
            fastly(r#"{"addresses":[],"ipv6_addresses":[]}"#),
            Err(PresetError::Empty { .. })
        ));
    }

    #[test]
    fn google_prefixes_of_both_families() {
        let set = google(
            r#"{"syncToken":"1","creationTime":"2026-01-01T00:00:00",
                "prefixes":[{"ipv4Prefix":"192.0.2.0/24"},{"ipv6Prefix":"2001:db8::/32"}]}"#,
        )
        .unwrap();
        assert!(has(&set, "192.0.2.200") && has(&set, "2001:db8::9"));
        assert!(matches!(
            google(r#"{"prefixes":[{"service":"x"}]}"#),
            Err(PresetError::Document { .. })
        ));
        assert!(matches!(
            google(r#"{"prefixes":[{"ipv4Prefix":"192.0.2.300/24"}]}"#),
            Err(PresetError::Entry { .. })
        ));
    }
}
