//! `preset:NAME` entries of the address-list flags (`--trusted-proxy preset:cloudflare`,
//! `proxy-from = ["preset:google-load-balancers"]`): the provider ranges whose dated
//! snapshots ship in `realip-core` (`realip_core::presets::Preset`).

use std::time::{SystemTime, UNIX_EPOCH};

use realip_core::TrustedProxies;
use realip_core::presets::Preset;

/// How an entry names a preset.
const PREFIX: &str = "preset:";

/// A snapshot older than this many days is named in a warning at start.
pub(crate) const STALE_AFTER_DAYS: i64 = 90;

/// The networks of the `preset:NAME` entries of `entries`, and the other entries; one
/// warning per preset whose snapshot is older than [`STALE_AFTER_DAYS`].
pub(crate) fn split<'a>(
    flag: &str,
    entries: &'a [String],
    warnings: &mut Vec<String>,
) -> Result<(TrustedProxies, Vec<&'a String>), String> {
    let mut presets = TrustedProxies::new();
    let mut rest = Vec::new();
    for entry in entries {
        let Some(name) = entry.trim().strip_prefix(PREFIX) else {
            rest.push(entry);
            continue;
        };
        let preset = Preset::from_name(name).map_err(|err| format!("invalid --{flag}: {err}"))?;
        if let Some(warning) = stale(flag, preset, today()) {
            warnings.push(warning);
        }
        presets.extend(preset.snapshot().networks().iter().copied());
    }
    Ok((presets, rest))
}

/// The warning for a snapshot more than [`STALE_AFTER_DAYS`] older than `today` (days since
/// 1970-01-01).
fn stale(flag: &str, preset: Preset, today: i64) -> Option<String> {
    let age = today - days(preset.snapshot_date())?;
    (age > STALE_AFTER_DAYS).then(|| {
        format!(
            "--{flag} {PREFIX}{preset}: the shipped snapshot is of {} ({age} days old); \
             list the current ranges from {} instead",
            preset.snapshot_date(),
            preset.source_url()
        )
    })
}

/// Days since 1970-01-01 of the UTC clock.
fn today() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| (since.as_secs() / 86_400) as i64)
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (the proleptic Gregorian calendar's
/// days-from-civil count).
fn days(date: &str) -> Option<i64> {
    let mut parts = date.splitn(3, '-').map(str::parse::<i64>);
    let (year, month, day) = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_resolved_and_other_entries_kept() {
        let entries = ["10.0.0.0/8".to_owned(), "preset:cloudflare".to_owned()];
        let mut warnings = Vec::new();
        let (set, rest) = split("trusted-proxy", &entries, &mut warnings).unwrap();
        assert_eq!(rest, [&entries[0]]);
        assert_eq!(set, Preset::Cloudflare.snapshot());
        let unknown = ["preset:akamai".to_owned()];
        let err = split("trusted-proxy", &unknown, &mut warnings).unwrap_err();
        assert!(
            err.starts_with("invalid --trusted-proxy: unknown preset \"akamai\""),
            "{err}"
        );
    }

    #[test]
    fn an_old_snapshot_is_named_in_a_warning() {
        assert_eq!(days("1970-01-01"), Some(0));
        assert_eq!(days("2000-03-01"), Some(11_017));
        assert_eq!(days("2026-08-22"), Some(20_687));
        let taken = days(Preset::Cloudflare.snapshot_date()).unwrap();
        assert_eq!(stale("trusted-proxy", Preset::Cloudflare, taken + 30), None);
        let warning = stale("trusted-proxy", Preset::Cloudflare, taken + 200).unwrap();
        assert!(warning.contains("preset:cloudflare"), "{warning}");
        assert!(warning.contains("200 days old"), "{warning}");
        assert!(
            warning.contains("https://www.cloudflare.com/ips/"),
            "{warning}"
        );
    }
}
