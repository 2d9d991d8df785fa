//! A limit on log lines for events that peers can cause at will.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Decides which occurrences of a repeated event get their own log line: at most `burst`
/// per `interval`, as the Linux kernel's `printk_ratelimit` (whose defaults, 10 per 5
/// seconds, are [`DEFAULT_BURST`](Self::DEFAULT_BURST) and
/// [`DEFAULT_INTERVAL`](Self::DEFAULT_INTERVAL)). The others are meant to be logged at
/// `debug`; the first line after them carries their count.
///
/// For events that a peer can cause as often as it likes (a rejected connection, a
/// dropped datagram, a forged forwarded header): a few of them are each logged at their
/// level, as before, while a flood writes `burst` lines per interval, not one per
/// connection. `debug` still shows each. Shared by reference across threads; only
/// [`admit`](Self::admit) takes its lock, for a few instructions. An interval of zero admits
/// every occurrence.
///
/// ```
/// use std::time::{Duration, Instant};
/// use realip_core::LogThrottle;
///
/// let throttle = LogThrottle::new(Duration::from_secs(5), 2);
/// let t0 = Instant::now();
/// assert_eq!(throttle.admit(t0), Some(0));
/// assert_eq!(throttle.admit(t0 + Duration::from_secs(1)), Some(0));
/// assert_eq!(throttle.admit(t0 + Duration::from_secs(2)), None);
/// assert_eq!(throttle.admit(t0 + Duration::from_secs(3)), None);
/// // The interval is over: logged, with the two in between.
/// assert_eq!(throttle.admit(t0 + Duration::from_secs(5)), Some(2));
/// ```
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    burst: u32,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the current interval ends (`None`: none has started).
    until: Option<Instant>,
    /// Occurrences admitted in the current interval.
    admitted: u32,
    /// Occurrences not admitted since the last admitted one.
    suppressed: u64,
}

impl LogThrottle {
    /// `printk_ratelimit`'s interval: 5 seconds.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
    /// `printk_ratelimit`'s burst: 10 lines per interval.
    pub const DEFAULT_BURST: u32 = 10;

    /// A throttle that admits `burst` occurrences (at least one) per `interval`, counted from
    /// the first of them.
    pub fn new(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst: burst.max(1),
            state: Mutex::default(),
        }
    }

    /// The interval given to [`new`](Self::new).
    pub const fn interval(&self) -> Duration {
        self.interval
    }

    /// The burst given to [`new`](Self::new) (at least 1).
    pub const fn burst(&self) -> u32 {
        self.burst
    }

    /// Whether an occurrence at `now` gets its own line: `Some(n)`, with `n` the occurrences
    /// not admitted since the last admitted one, or `None` (log it at `debug`).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        if self.interval.is_zero() {
            return Some(0);
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.until.is_none_or(|until| now >= until) {
            state.until = now.checked_add(self.interval);
            state.admitted = 0;
        }
        if state.admitted < self.burst {
            state.admitted += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

impl Default for LogThrottle {
    /// [`DEFAULT_BURST`](Self::DEFAULT_BURST) per [`DEFAULT_INTERVAL`](Self::DEFAULT_INTERVAL).
    fn default() -> Self {
        Self::new(Self::DEFAULT_INTERVAL, Self::DEFAULT_BURST)
    }
}

impl Clone for LogThrottle {
    /// A throttle with the same interval and burst and nothing counted yet.
    fn clone(&self) -> Self {
        Self::new(self.interval, self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_others() {
        let log = LogThrottle::new(Duration::from_secs(10), 1);
        let t0 = Instant::now();
        assert_eq!(log.admit(t0), Some(0));
        assert_eq!(log.admit(t0 + Duration::from_secs(1)), None);
        assert_eq!(log.admit(t0 + Duration::from_secs(9)), None);
        assert_eq!(log.admit(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(log.admit(t0 + Duration::from_secs(11)), None);
        assert_eq!(log.admit(t0 + Duration::from_secs(30)), Some(1));
    }

    #[test]
    fn a_burst_per_interval_counted_from_its_first_line() {
        let log = LogThrottle::default();
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(log.admit(t0 + Duration::from_millis(i)), Some(0), "{i}");
        }
        for i in 10..25 {
            assert_eq!(log.admit(t0 + Duration::from_millis(i)), None, "{i}");
        }
        // A quiet spell longer than the interval: a new one starts at the next line.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(log.admit(t1), Some(15));
        assert_eq!(log.admit(t1 + Duration::from_secs(4)), Some(0));
    }

    #[test]
    fn zero_admits_everything_and_a_clone_starts_afresh() {
        let all = LogThrottle::new(Duration::ZERO, 1);
        let now = Instant::now();
        assert_eq!(all.admit(now), Some(0));
        assert_eq!(all.admit(now), Some(0));
        let log = LogThrottle::new(Duration::from_secs(10), 0);
        assert_eq!(log.burst(), 1);
        assert_eq!(log.admit(now), Some(0));
        assert_eq!(log.admit(now), None);
        let fresh = log.clone();
        assert_eq!(
            (fresh.interval(), fresh.burst()),
            (Duration::from_secs(10), 1)
        );
        assert_eq!(fresh.admit(now), Some(0));
    }

    #[test]
    fn threads_racing_admit_one_burst_and_count_the_rest() {
        let log = LogThrottle::new(Duration::from_secs(3600), 3);
        let now = Instant::now();
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..1000).filter(|_| log.admit(now).is_some()).count()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        assert_eq!(admitted, 3);
        let state = log.state.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(state.suppressed, 3997);
    }
}
