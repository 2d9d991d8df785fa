//! Cloud providers' proxy ranges: parsers for the lists they publish, dated snapshots of
//! those lists shipped in the crate, and (feature `presets-refresh`) a refresher that keeps a
//! [`Live`](crate::Live) set current (feature `presets`).
//!
//! | Provider | Format | Published at |
//! |---|---|---|
//! | Cloudflare | one CIDR per line ([`cloudflare`]) | `https://www.cloudflare.com/ips-v4`, `https://www.cloudflare.com/ips-v6` |
//! | AWS | `ip-ranges.json`, filtered by service such as `CLOUDFRONT_ORIGIN_FACING` ([`aws`]) | `https://ip-ranges.amazonaws.com/ip-ranges.json` |
//! | Fastly | `{"addresses": […], "ipv6_addresses": […]}` ([`fastly`]) | `https://api.fastly.com/public-ip-list` |
//! | Google | `{"prefixes": [{"ipv4Prefix": …} \| {"ipv6Prefix": …}]}` ([`google`]) | `https://www.gstatic.com/ipranges/goog.json`, `cloud.json` |
//!
//! [`Preset`] names the sets a proxy connects from ([`Preset::from_name`]`("cloudflare")`),
//! each with a snapshot taken on a stated day ([`Preset::snapshot`],
//! [`Preset::snapshot_date`]; the table on [`Preset`] names where each came from). A
//! snapshot ages: refresh it (module `refresh`, feature `presets-refresh`; or fetch the list
//! yourself and [`Preset::parse`] it) and [`store_checked`] it into the
//! [`Live`](crate::Live) set your listener or layer reads.
//! Every parser fails on an empty result or on any entry that is not a network, so a
//! truncated or garbled download is an error, never a smaller set.
//!
//! # Example
//!
//! ```
//! use realip_core::Live;
//! use realip_core::presets::{self, Preset};
//!
//! // Start from the shipped snapshot...
//! let trusted = Live::new(Preset::AwsCloudFrontOriginFacing.snapshot());
//! assert!(!trusted.load().contains("198.51.100.9".parse().unwrap()));
//!
//! // ...and store a fresh copy of the list once fetched (here, a stand-in document).
//! let json = r#"{"syncToken": "1", "createDate": "2026-01-01-00-00-00",
//!   "prefixes": [
//!     {"ip_prefix": "192.0.2.0/24", "region": "GLOBAL", "service": "CLOUDFRONT_ORIGIN_FACING", "network_border_group": "GLOBAL"},
//!     {"ip_prefix": "198.51.100.0/24", "region": "us-east-1", "service": "EC2", "network_border_group": "us-east-1"}],
//!   "ipv6_prefixes": []}"#;
//! let origin_facing = presets::aws(json, "CLOUDFRONT_ORIGIN_FACING").unwrap();
//! assert!(origin_facing.contains("192.0.2.9".parse().unwrap()));
//! assert!(!origin_facing.contains("198.51.100.9".parse().unwrap()));
//! trusted.store(origin_facing);
//! assert!(trusted.load().contains("192.0.2.9".parse().unwrap()));
//! ```

mod parse;
#[cfg(feature = "presets-refresh")]
pub mod refresh;
mod snapshot;

pub use parse::{PresetError, aws, cloudflare, fastly, google, store_checked};
pub use snapshot::{Preset, UnknownPreset};
