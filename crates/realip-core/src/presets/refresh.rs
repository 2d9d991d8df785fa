//! Keeps a [`Live`] set of a [`Preset`] current: fetches the provider's list from its URLs
//! (or from URLs and files you give) on an interval, and stores it only when it is usable
//! (feature `presets-refresh`).
//!
//! Every fetch is validated as [`store_checked`] does: the list must parse in the preset's
//! format, hold at least one network, and hold at least half as many networks as the set in
//! use. On any failure (unreachable host, HTTP error status, timeout, a body cut short, an
//! HTML error page, an empty or halved list) the set in use stays, and the failure is
//! logged with `tracing` at `warn`; a stored update is logged at `info`. The HTTP client is
//! hyper-util's, over rustls with the system's root certificates; it follows up to
//! [`MAX_REDIRECTS`] redirects and reads at most [`MAX_LIST_BYTES`] of a body.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use realip_core::Live;
//! use realip_core::presets::Preset;
//! use realip_core::presets::refresh::Refresher;
//!
//! # async fn run() {
//! // Start from the shipped snapshot; refresh from Cloudflare every 6 hours.
//! let trusted = Live::new(Preset::Cloudflare.snapshot());
//! let refresher = Refresher::new(Preset::Cloudflare, trusted.clone())
//!     .interval(Duration::from_secs(6 * 60 * 60));
//! let task = refresher.spawn();
//! // Give `trusted` to the listener or layer; it reads the newest good set per connection.
//! # task.abort();
//! # }
//! ```

use std::error::Error as StdError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::{fmt, io};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::live::Live;
use crate::presets::parse::{PresetError, store_checked};
use crate::presets::snapshot::Preset;
use crate::trusted::TrustedProxies;

/// How often [`Refresher::run`] fetches by default: every 6 hours. Providers announce
/// changes days ahead; a refresh a few times a day follows them without loading their
/// servers.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(6 * 60 * 60);

/// How long one refresh (every source, redirects included) may take by default: 30 seconds.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest body read from a URL: 16 MiB (AWS's whole `ip-ranges.json` is a few MiB).
pub const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;

/// The most redirects followed for one URL.
pub const MAX_REDIRECTS: usize = 5;

/// Where a list is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// An `http` or `https` URL, fetched with `GET`.
    Url(Uri),
    /// A local file, read whole.
    File(PathBuf),
}

impl Source {
    /// A URL source; an error if `url` is not an absolute `http` or `https` URL.
    pub fn url(url: &str) -> Result<Self, InvalidSource> {
        let invalid = || InvalidSource {
            input: url.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid())?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.authority().is_some() => Ok(Self::Url(uri)),
            _ => Err(invalid()),
        }
    }

    /// A file source.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::File(path.into())
    }

    /// A URL if `input` starts with `http://` or `https://`, else a file path.
    pub fn parse(input: &str) -> Result<Self, InvalidSource> {
        if input.starts_with("http://") || input.starts_with("https://") {
            Self::url(input)
        } else {
            Ok(Self::file(input))
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(uri) => uri.fmt(f),
            Self::File(path) => path.display().fmt(f),
        }
    }
}

/// The error of [`Source::url`]: not an absolute `http` or `https` URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid list URL {input:?}: expected an absolute http:// or https:// URL")]
pub struct InvalidSource {
    input: String,
}

/// Why a refresh stored nothing; the set in use stays.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The preset has no published list and no source was given
    /// ([`Preset::list_urls`] is empty).
    #[error("no source to refresh preset {preset} from")]
    NoSource {
        /// The preset.
        preset: Preset,
    },
    /// The request failed: connection, TLS, or a body cut short.
    #[error("fetching {url}: {source}")]
    Http {
        /// The URL fetched.
        url: Uri,
        /// The client's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The server answered with a status other than 200 (after redirects).
    #[error("fetching {url}: HTTP status {status}")]
    Status {
        /// The URL fetched.
        url: Uri,
        /// The status.
        status: StatusCode,
    },
    /// The body is larger than [`MAX_LIST_BYTES`], or more than [`MAX_REDIRECTS`] redirects.
    #[error("fetching {url}: {reason}")]
    TooLarge {
        /// The URL fetched.
        url: Uri,
        /// What was too large.
        reason: &'static str,
    },
    /// The refresh took longer than its timeout.
    #[error("refresh timed out after {0:?}")]
    Timeout(Duration),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The list is not UTF-8 text.
    #[error("{origin}: the list is not UTF-8 text")]
    NotText {
        /// The URL or file.
        origin: Source,
    },
    /// The list did not parse, was empty, or was less than half the set in use.
    #[error(transparent)]
    Invalid(#[from] PresetError),
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Fetches a preset's list and stores it into a [`Live`] set when it is usable; see the
/// [module docs](self).
#[derive(Clone)]
pub struct Refresher {
    preset: Preset,
    sources: Vec<Source>,
    live: Live<TrustedProxies>,
    interval: Duration,
    timeout: Duration,
    client: HttpClient,
}

impl Refresher {
    /// A refresher of `preset` into `live`, from the provider's published lists
    /// ([`Preset::list_urls`]), every [`DEFAULT_REFRESH_INTERVAL`].
    pub fn new(preset: Preset, live: Live<TrustedProxies>) -> Self {
        let sources = preset
            .list_urls()
            .iter()
            .map(|url| Source::Url(Uri::from_static(url)))
            .collect();
        Self {
            preset,
            sources,
            live,
            interval: DEFAULT_REFRESH_INTERVAL,
            timeout: DEFAULT_FETCH_TIMEOUT,
            client: http_client(),
        }
    }

    /// Reads the list from `sources` instead (a mirror, or a file you maintain); with
    /// several, their contents are joined by a newline, as [`Preset::parse`] reads
    /// Cloudflare's two lists.
    #[must_use]
    pub fn sources(mut self, sources: impl IntoIterator<Item = Source>) -> Self {
        self.sources = sources.into_iter().collect();
        self
    }

    /// How often [`run`](Self::run) refreshes (default [`DEFAULT_REFRESH_INTERVAL`]).
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long one refresh may take (default [`DEFAULT_FETCH_TIMEOUT`]).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The set this refresher stores into.
    pub fn live(&self) -> &Live<TrustedProxies> {
        &self.live
    }

    /// Fetches once and stores the list if it is usable, returning its number of networks;
    /// on an error the set in use stays. Does not log: [`run`](Self::run) does.
    pub async fn refresh(&self) -> Result<usize, RefreshError> {
        if self.sources.is_empty() {
            return Err(RefreshError::NoSource {
                preset: self.preset,
            });
        }
        let text = tokio::time::timeout(self.timeout, self.read_all())
            .await
            .map_err(|_| RefreshError::Timeout(self.timeout))??;
        let update = self.preset.parse(&text)?;
        let networks = update.networks().len();
        store_checked(&self.live, Ok(update))?;
        Ok(networks)
    }

    /// Refreshes now and then every interval, forever, logging each outcome; the set in
    /// use stays on every failure. Cancel it by dropping the future (or aborting the task of
    /// [`spawn`](Self::spawn)).
    pub async fn run(self) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let before = self.live.load_full();
            match self.refresh().await {
                Ok(networks) if *self.live.load() == *before => tracing::debug!(
                    preset = %self.preset,
                    networks,
                    "trusted proxies refreshed, unchanged"
                ),
                Ok(networks) => tracing::info!(
                    preset = %self.preset,
                    networks,
                    previous = before.networks().len(),
                    "trusted proxies refreshed"
                ),
                Err(err) => tracing::warn!(
                    preset = %self.preset,
                    error = %err,
                    kept = before.networks().len(),
                    "trusted proxies refresh failed; keeping the last good set"
                ),
            }
        }
    }

    /// Runs [`run`](Self::run) on a tokio task.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn read_all(&self) -> Result<String, RefreshError> {
        let mut text = String::new();
        for source in &self.sources {
            let bytes = match source {
                Source::Url(url) => self.get(url.clone()).await?,
                Source::File(path) => Bytes::from(tokio::fs::read(path).await.map_err(
                    |source| RefreshError::Io {
                        path: path.clone(),
                        source,
                    },
                )?),
            };
            let part = std::str::from_utf8(&bytes).map_err(|_| RefreshError::NotText {
                origin: source.clone(),
            })?;
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(part);
        }
        Ok(text)
    }

    async fn get(&self, mut url: Uri) -> Result<Bytes, RefreshError> {
        for _ in 0..=MAX_REDIRECTS {
            let request = Request::get(url.clone())
                .header(header::USER_AGENT, USER_AGENT)
                .body(Empty::new())
                .map_err(|err| RefreshError::Http {
                    url: url.clone(),
                    source: err.into(),
                })?;
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|err| RefreshError::Http {
                        url: url.clone(),
                        source: err.into(),
                    })?;
            let status = response.status();
            if status.is_redirection() {
                let next = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|location| location.to_str().ok())
                    .and_then(|location| resolve(&url, location));
                match next {
                    Some(next) => {
                        url = next;
                        continue;
                    }
                    None => return Err(RefreshError::Status { url, status }),
                }
            }
            if status != StatusCode::OK {
                return Err(RefreshError::Status { url, status });
            }
            return match Limited::new(response.into_body(), MAX_LIST_BYTES)
                .collect()
                .await
            {
                Ok(body) => Ok(body.to_bytes()),
                Err(err) if err.is::<LengthLimitError>() => Err(RefreshError::TooLarge {
                    url,
                    reason: "the body is larger than the limit",
                }),
                Err(source) => Err(RefreshError::Http { url, source }),
            };
        }
        Err(RefreshError::TooLarge {
            url,
            reason: "too many redirects",
        })
    }
}

impl fmt::Debug for Refresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresher")
            .field("preset", &self.preset)
            .field("sources", &self.sources)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

const USER_AGENT: &str = concat!("realip/", env!("CARGO_PKG_VERSION"));

/// The redirect target `location`, absolute or relative to `base`'s scheme and host.
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let uri: Uri = location.parse().ok()?;
    if uri.scheme().is_some() {
        return Some(uri);
    }
    let mut parts = uri.into_parts();
    parts.scheme = base.scheme().cloned();
    parts.authority = base.authority().cloned();
    Uri::from_parts(parts).ok()
}

/// hyper-util's client over rustls (ring) with the system's root certificates; without
/// them, `https` sources fail with a certificate error and `http` ones still work.
fn http_client() -> HttpClient {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
    {
        Ok(builder) => builder,
        Err(err) => {
            tracing::warn!(error = %err, "no system root certificates: https list URLs will fail");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let connector = builder.https_or_http().enable_http1().build();
    Client::builder(TokioExecutor::new()).build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_from_strings() {
        assert!(matches!(
            Source::parse("https://www.cloudflare.com/ips-v4"),
            Ok(Source::Url(_))
        ));
        assert_eq!(
            Source::parse("/etc/realip/cloudflare.txt"),
            Ok(Source::File("/etc/realip/cloudflare.txt".into()))
        );
        assert!(Source::url("ftp://example.com/list").is_err());
        assert!(Source::url("/relative").is_err());
        assert!(Source::parse("http://").is_err());
    }

    #[test]
    fn redirects_resolve_against_the_current_url() {
        let base: Uri = "https://www.cloudflare.com/ips-v4".parse().unwrap();
        assert_eq!(
            resolve(&base, "/ips-v4/").unwrap(),
            "https://www.cloudflare.com/ips-v4/"
        );
        assert_eq!(
            resolve(&base, "http://127.0.0.1:9/x").unwrap(),
            "http://127.0.0.1:9/x"
        );
    }
}
