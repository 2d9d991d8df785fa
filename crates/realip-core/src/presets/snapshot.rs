//! Named presets and the dated snapshots of their lists that ship in the crate.

use std::fmt;
use std::str::FromStr;

use crate::presets::parse::{self, PresetError};
use crate::trusted::TrustedProxies;

const CLOUDFLARE_V4: &str = include_str!("../../presets/cloudflare-ips-v4.txt");
const CLOUDFLARE_V6: &str = include_str!("../../presets/cloudflare-ips-v6.txt");
const AWS_CLOUDFRONT_ORIGIN_FACING: &str =
    include_str!("../../presets/aws-cloudfront-origin-facing.json");
const FASTLY: &str = include_str!("../../presets/fastly-public-ip-list.json");
const GOOGLE_LOAD_BALANCERS: &str = include_str!("../../presets/google-load-balancers.txt");

/// The AWS service whose ranges [`Preset::AwsCloudFrontOriginFacing`] keeps.
const CLOUDFRONT_ORIGIN_FACING: &str = "CLOUDFRONT_ORIGIN_FACING";

/// A provider's proxy ranges, by name: a dated snapshot ships in the crate
/// ([`snapshot`](Self::snapshot)), and [`parse`](Self::parse) reads a fresh copy of the list
/// in the provider's format (what [`refresh`](crate::presets) fetches).
///
/// | Preset | Name | Snapshot of | Taken on |
/// |---|---|---|---|
/// | [`Cloudflare`](Self::Cloudflare) | `cloudflare` | `https://www.cloudflare.com/ips-v4` and `ips-v6` | 2026-08-22 |
/// | [`CloudflareV4`](Self::CloudflareV4) | `cloudflare-v4` | `https://www.cloudflare.com/ips-v4` | 2026-08-22 |
/// | [`CloudflareV6`](Self::CloudflareV6) | `cloudflare-v6` | `https://www.cloudflare.com/ips-v6` | 2026-08-22 |
/// | [`AwsCloudFrontOriginFacing`](Self::AwsCloudFrontOriginFacing) | `aws-cloudfront-origin-facing` | `https://ip-ranges.amazonaws.com/ip-ranges.json`, service `CLOUDFRONT_ORIGIN_FACING` | 2026-08-22 |
/// | [`Fastly`](Self::Fastly) | `fastly` | `https://api.fastly.com/public-ip-list` | 2025-05-06 |
/// | [`GoogleLoadBalancers`](Self::GoogleLoadBalancers) | `google-load-balancers` | `https://cloud.google.com/load-balancing/docs/firewall-rules` | 2026-11-29 |
///
/// How each snapshot was taken (the crate was built without access to the providers):
/// - Cloudflare: `cloudflare/ipv4.txt` and `ipv6.txt` of the public tracker
///   <https://github.com/lord-alfred/ipranges> at its commit `14dd971b` of 2026-08-22, whose
///   daily job downloads Cloudflare's two lists verbatim (sorted); they had not changed since
///   2026-01-02.
/// - AWS: the `ip-ranges.json` stored by <https://github.com/seligman/aws-ip-ranges> at its
///   commit `84688115` (the document's `createDate` 2026-08-22-15-17-05, `syncToken`
///   1787411825), reduced to its `CLOUDFRONT_ORIGIN_FACING` entries with both fields kept.
/// - Fastly: `json/fastly.json` of <https://github.com/disposable/cloud-ip-ranges> at its
///   commit `7ede667b` (downloaded from Fastly's list on 2025-05-06), written back in
///   Fastly's `{"addresses", "ipv6_addresses"}` shape with the entries unchanged.
/// - Google: the health-check and Google Front End source ranges that Google Cloud's
///   load-balancer firewall page lists (IPv4 and IPv6), read on 2026-11-29; the page carries
///   no date, and Google publishes no machine-readable list of them.
///
/// Provider lists change: a snapshot is a starting point for a deployment that cannot
/// fetch at startup, not a substitute for refreshing.
///
/// ```
/// use realip_core::presets::Preset;
///
/// let cloudflare = Preset::from_name("cloudflare").unwrap();
/// assert_eq!(cloudflare, Preset::Cloudflare);
/// let trusted = cloudflare.snapshot();
/// assert!(trusted.networks().len() > 10);
/// assert!(!trusted.contains("192.0.2.1".parse().unwrap()));
/// assert_eq!(cloudflare.snapshot_date(), "2026-08-22");
/// assert!(Preset::from_name("cloudfront").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Preset {
    /// Cloudflare's IPv4 and IPv6 lists: the addresses Cloudflare connects to origins from.
    Cloudflare,
    /// Cloudflare's IPv4 list only.
    CloudflareV4,
    /// Cloudflare's IPv6 list only.
    CloudflareV6,
    /// The AWS ranges of service `CLOUDFRONT_ORIGIN_FACING`: the addresses CloudFront
    /// connects to origins from (a subset of service `CLOUDFRONT`, which also holds the
    /// edge addresses clients connect to).
    AwsCloudFrontOriginFacing,
    /// Fastly's public IP list, both families.
    Fastly,
    /// The source ranges of Google Cloud's load-balancer health checks and Google Front End
    /// proxies (external Application and proxy Network Load Balancers with instance-group or
    /// zonal NEG backends). Envoy-based load balancers connect from your proxy-only subnet
    /// instead, and internet NEG backends from the ranges in the
    /// `_cloud-eoips.googleusercontent.com` TXT record: neither is in this list.
    GoogleLoadBalancers,
}

impl Preset {
    /// Every preset, in the order of the table above.
    pub const ALL: [Preset; 6] = [
        Self::Cloudflare,
        Self::CloudflareV4,
        Self::CloudflareV6,
        Self::AwsCloudFrontOriginFacing,
        Self::Fastly,
        Self::GoogleLoadBalancers,
    ];

    /// The preset named `name` (the names of the table above, ASCII case ignored).
    pub fn from_name(name: &str) -> Result<Self, UnknownPreset> {
        Self::ALL
            .into_iter()
            .find(|preset| preset.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| UnknownPreset {
                name: name.to_owned(),
            })
    }

    /// The preset's name, as [`from_name`](Self::from_name) reads it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Cloudflare => "cloudflare",
            Self::CloudflareV4 => "cloudflare-v4",
            Self::CloudflareV6 => "cloudflare-v6",
            Self::AwsCloudFrontOriginFacing => "aws-cloudfront-origin-facing",
            Self::Fastly => "fastly",
            Self::GoogleLoadBalancers => "google-load-balancers",
        }
    }

    /// The day (`YYYY-MM-DD`, UTC) the shipped snapshot was taken; see the table above.
    pub const fn snapshot_date(self) -> &'static str {
        match self {
            Self::Cloudflare | Self::CloudflareV4 | Self::CloudflareV6 => "2026-08-22",
            Self::AwsCloudFrontOriginFacing => "2026-08-22",
            Self::Fastly => "2025-05-06",
            Self::GoogleLoadBalancers => "2026-11-29",
        }
    }

    /// The provider's own page or document the snapshot's ranges come from.
    pub const fn source_url(self) -> &'static str {
        match self {
            Self::Cloudflare | Self::CloudflareV4 | Self::CloudflareV6 => {
                "https://www.cloudflare.com/ips/"
            }
            Self::AwsCloudFrontOriginFacing => "https://ip-ranges.amazonaws.com/ip-ranges.json",
            Self::Fastly => "https://api.fastly.com/public-ip-list",
            Self::GoogleLoadBalancers => {
                "https://cloud.google.com/load-balancing/docs/firewall-rules"
            }
        }
    }

    /// The URLs of the lists the provider publishes in the format [`parse`](Self::parse)
    /// reads, in the order to join them (a refresh fetches them all). Empty for
    /// [`GoogleLoadBalancers`](Self::GoogleLoadBalancers), which Google documents on a web
    /// page only: refresh it from a file you maintain.
    pub const fn list_urls(self) -> &'static [&'static str] {
        match self {
            Self::Cloudflare => &[
                "https://www.cloudflare.com/ips-v4",
                "https://www.cloudflare.com/ips-v6",
            ],
            Self::CloudflareV4 => &["https://www.cloudflare.com/ips-v4"],
            Self::CloudflareV6 => &["https://www.cloudflare.com/ips-v6"],
            Self::AwsCloudFrontOriginFacing => &["https://ip-ranges.amazonaws.com/ip-ranges.json"],
            Self::Fastly => &["https://api.fastly.com/public-ip-list"],
            Self::GoogleLoadBalancers => &[],
        }
    }

    /// Parses a copy of the provider's list in its published format: Cloudflare's and the
    /// Google preset's one CIDR per line ([`cloudflare`](crate::presets::cloudflare)), AWS
    /// `ip-ranges.json` keeping service `CLOUDFRONT_ORIGIN_FACING`
    /// ([`aws`](crate::presets::aws)), Fastly's JSON ([`fastly`](crate::presets::fastly)).
    /// For [`Cloudflare`](Self::Cloudflare), pass both lists joined by a newline.
    pub fn parse(self, text: &str) -> Result<TrustedProxies, PresetError> {
        match self {
            Self::Cloudflare | Self::CloudflareV4 | Self::CloudflareV6 => parse::cloudflare(text),
            Self::AwsCloudFrontOriginFacing => parse::aws(text, CLOUDFRONT_ORIGIN_FACING),
            Self::Fastly => parse::fastly(text),
            Self::GoogleLoadBalancers => parse::plain_list("Google load-balancer list", text),
        }
    }

    /// The ranges of the snapshot shipped in the crate, taken on
    /// [`snapshot_date`](Self::snapshot_date).
    pub fn snapshot(self) -> TrustedProxies {
        let parsed = match self {
            Self::Cloudflare => self.parse(&format!("{CLOUDFLARE_V4}\n{CLOUDFLARE_V6}")),
            Self::CloudflareV4 => self.parse(CLOUDFLARE_V4),
            Self::CloudflareV6 => self.parse(CLOUDFLARE_V6),
            Self::AwsCloudFrontOriginFacing => self.parse(AWS_CLOUDFRONT_ORIGIN_FACING),
            Self::Fastly => self.parse(FASTLY),
            Self::GoogleLoadBalancers => self.parse(GOOGLE_LOAD_BALANCERS),
        };
        // The shipped files are parsed by this crate's tests.
        parsed.expect("the shipped snapshot parses")
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = UnknownPreset;

    fn from_str(name: &str) -> Result<Self, UnknownPreset> {
        Self::from_name(name)
    }
}

/// The error of [`Preset::from_name`]: no preset has this name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown preset {name:?}: expected cloudflare, cloudflare-v4, cloudflare-v6, aws-cloudfront-origin-facing, fastly or google-load-balancers"
)]
pub struct UnknownPreset {
    name: String,
}

impl UnknownPreset {
    /// The name as given.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(set: &TrustedProxies, ip: &str) -> bool {
        set.contains(ip.parse().unwrap())
    }

    #[test]
    fn every_name_reads_back_and_every_snapshot_parses_to_its_file() {
        for preset in Preset::ALL {
            assert_eq!(Preset::from_name(preset.name()), Ok(preset));
            assert_eq!(preset.name().parse::<Preset>(), Ok(preset));
            assert_eq!(preset.to_string(), preset.name());
            let set = preset.snapshot();
            assert!(!set.networks().is_empty(), "{preset}");
            assert!(!set.contains_unix(), "{preset}");
            // Documentation and private ranges are nobody's proxies.
            for ip in ["192.0.2.1", "10.0.0.1", "127.0.0.1", "2001:db8::1"] {
                assert!(!has(&set, ip), "{preset} holds {ip}");
            }
        }
        assert_eq!(Preset::from_name(" Cloudflare "), Ok(Preset::Cloudflare));
        let err = Preset::from_name("cloudfront").unwrap_err();
        assert_eq!(err.name(), "cloudfront");
        assert!(err.to_string().contains("aws-cloudfront-origin-facing"));
    }

    /// Every network written in `file`, found as the JSON string values or lines that
    /// look like CIDRs.
    fn written(file: &str) -> Vec<ipnet::IpNet> {
        file.split(|c: char| c == '"' || c.is_whitespace())
            .filter(|token| token.contains('/'))
            .map(|token| token.parse().unwrap())
            .collect()
    }

    #[test]
    fn snapshots_trust_every_network_of_their_file_and_only_those() {
        let cases = [
            (Preset::CloudflareV4, CLOUDFLARE_V4.to_owned()),
            (Preset::CloudflareV6, CLOUDFLARE_V6.to_owned()),
            (
                Preset::Cloudflare,
                format!("{CLOUDFLARE_V4}\n{CLOUDFLARE_V6}"),
            ),
            (
                Preset::AwsCloudFrontOriginFacing,
                AWS_CLOUDFRONT_ORIGIN_FACING.to_owned(),
            ),
            (Preset::Fastly, FASTLY.to_owned()),
            (
                Preset::GoogleLoadBalancers,
                GOOGLE_LOAD_BALANCERS.to_owned(),
            ),
        ];
        for (preset, file) in cases {
            let set = preset.snapshot();
            let nets = written(&file);
            assert_eq!(set.networks(), nets.as_slice(), "{preset}");
            for net in nets {
                assert!(set.contains(net.network()) && set.contains(net.broadcast()));
            }
        }
        // The AWS file holds only the service the preset names.
        assert_eq!(
            AWS_CLOUDFRONT_ORIGIN_FACING.matches("\"service\"").count(),
            AWS_CLOUDFRONT_ORIGIN_FACING
                .matches("\"service\": \"CLOUDFRONT_ORIGIN_FACING\"")
                .count()
        );
        assert!(has(&Preset::Cloudflare.snapshot(), "2606:4700::1"));
    }

    #[test]
    fn list_urls_are_the_providers_and_dates_are_iso_days() {
        for preset in Preset::ALL {
            let date = preset.snapshot_date();
            assert_eq!(date.len(), 10, "{preset}");
            assert!(date.split('-').all(|part| part.parse::<u32>().is_ok()));
            assert!(preset.source_url().starts_with("https://"));
            assert!(preset.list_urls().iter().all(|u| u.starts_with("https://")));
        }
        assert!(Preset::GoogleLoadBalancers.list_urls().is_empty());
        assert_eq!(Preset::Cloudflare.list_urls().len(), 2);
    }
}
