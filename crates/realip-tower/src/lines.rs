//! Finding a header's lines in a request's [`HeaderMap`].
//!
//! A `HeaderMap` lookup hashes the name byte by byte (FNV, one multiplication per byte: a
//! chain of about 25 for `x-forwarded-for`). Comparing names is cheaper while the map holds
//! few of them, and most names of a request are standard headers, which differ from a
//! custom name at the first comparison. So a small map is searched by one pass over its
//! entries, which also tells whether the port header is there; a larger one is looked up.
//! The thresholds are where the pass and the lookup cost the same (measured on requests of
//! 0 to 24 typical headers).

use http::header::{GetAll, HeaderValue, ValueIter};
use http::{HeaderMap, HeaderName};

/// Maps with at most this many names are searched by one pass ([`Lines::find`]) rather
/// than looked up.
const PASS_MAX_NAMES: usize = 8;

/// Maps with at most this many names are searched for the port header by comparing names
/// ([`may_contain`]) rather than by a lookup.
const SCAN_MAX_NAMES: usize = 16;

/// Lines of one header kept from a pass; a header with more lines is looked up.
const PASS_MAX_LINES: usize = 4;

/// The lines of one header, in order.
#[derive(Debug)]
pub(crate) enum Lines<'a> {
    /// Found by a pass over a small map: the first `len` of `lines`.
    Passed {
        lines: [&'a HeaderValue; PASS_MAX_LINES],
        len: usize,
    },
    /// Looked up.
    Map(GetAll<'a, HeaderValue>),
}

/// Whether a map holds the port header, as far as the search for the address header found
/// out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PortHeader {
    Absent,
    Present,
    /// Not searched: [`may_contain`] decides.
    Unknown,
}

impl<'a> Lines<'a> {
    /// The lines of `name` in `headers`, and whether `port` (if any) is there too.
    ///
    /// Inlined into the resolution: out of line, the lines found were written one reference
    /// at a time and then copied into the returned value sixteen bytes at a time, loads the
    /// CPU cannot serve from its pending stores (it waits for them to reach the cache), on
    /// the path to everything the request does next.
    #[inline(always)]
    pub(crate) fn find(
        headers: &'a HeaderMap,
        name: &HeaderName,
        port: Option<&HeaderName>,
    ) -> (Self, PortHeader) {
        if headers.keys_len() <= PASS_MAX_NAMES {
            let mut lines = [&NO_LINE; PASS_MAX_LINES];
            let mut len = 0;
            let mut port_found = false;
            // Every value of one name comes in one run, in order.
            for (key, value) in headers {
                if key == name {
                    if len == PASS_MAX_LINES {
                        return (Self::Map(headers.get_all(name)), PortHeader::Unknown);
                    }
                    lines[len] = value;
                    len += 1;
                } else if port.is_some_and(|port| key == port) {
                    port_found = true;
                }
            }
            let port = match (port, port_found) {
                (None, _) | (Some(_), false) => PortHeader::Absent,
                (Some(_), true) => PortHeader::Present,
            };
            return (Self::Passed { lines, len }, port);
        }
        (Self::Map(headers.get_all(name)), PortHeader::Unknown)
    }

    /// The lines, double-ended.
    pub(crate) fn iter(&self) -> LineIter<'a> {
        match self {
            Self::Passed { lines, len } => LineIter::Passed {
                lines: *lines,
                front: 0,
                back: *len,
            },
            Self::Map(all) => LineIter::Map(all.iter()),
        }
    }
}

/// An iterator over [`Lines`].
#[derive(Debug)]
pub(crate) enum LineIter<'a> {
    /// `lines[front..back]`.
    Passed {
        lines: [&'a HeaderValue; PASS_MAX_LINES],
        front: usize,
        back: usize,
    },
    Map(ValueIter<'a, HeaderValue>),
}

/// Fills the unused places of [`Lines::Passed`].
static NO_LINE: HeaderValue = HeaderValue::from_static("");

impl<'a> Iterator for LineIter<'a> {
    type Item = &'a HeaderValue;

    #[inline]
    fn next(&mut self) -> Option<&'a HeaderValue> {
        match self {
            Self::Passed { lines, front, back } => (*front < *back).then(|| {
                *front += 1;
                lines[*front - 1]
            }),
            Self::Map(lines) => lines.next(),
        }
    }
}

impl<'a> DoubleEndedIterator for LineIter<'a> {
    #[inline]
    fn next_back(&mut self) -> Option<&'a HeaderValue> {
        match self {
            Self::Passed { lines, front, back } => (*front < *back).then(|| {
                *back -= 1;
                lines[*back]
            }),
            Self::Map(lines) => lines.next_back(),
        }
    }
}

/// Whether `headers` may hold `name`: `false` only when it certainly does not. Small maps
/// are scanned (see [`SCAN_MAX_NAMES`]); for larger ones the lookup decides.
#[inline]
pub(crate) fn may_contain(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.keys_len() > SCAN_MAX_NAMES || headers.keys().any(|key| key == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both searches give every line in order, and the port header's presence, whatever
    /// the size of the map, the position of the header in it and its number of lines.
    #[test]
    fn a_pass_and_a_lookup_find_the_same_lines() {
        let name = HeaderName::from_static("x-forwarded-for");
        let port = HeaderName::from_static("x-forwarded-port");
        for others in 0..2 * SCAN_MAX_NAMES {
            for before in [0, others / 2, others] {
                for lines in 0..=PASS_MAX_LINES + 1 {
                    for with_port in [false, true] {
                        let mut headers = HeaderMap::new();
                        let other = |i: usize| {
                            HeaderName::from_bytes(format!("x-other-{i}").as_bytes()).unwrap()
                        };
                        for i in 0..before {
                            headers.insert(other(i), HeaderValue::from_static("o"));
                        }
                        let want: Vec<String> = (0..lines).map(|i| format!("10.0.0.{i}")).collect();
                        for line in &want {
                            headers.append(&name, line.parse().unwrap());
                        }
                        if with_port {
                            headers.insert(&port, HeaderValue::from_static("443"));
                        }
                        for i in before..others {
                            headers.insert(other(i), HeaderValue::from_static("o"));
                        }
                        let (found, port_header) = Lines::find(&headers, &name, Some(&port));
                        let got: Vec<&str> = found.iter().map(|v| v.to_str().unwrap()).collect();
                        assert_eq!(got, want, "{others} others, {lines} lines");
                        let backwards: Vec<&str> =
                            found.iter().rev().map(|v| v.to_str().unwrap()).collect();
                        assert!(backwards.iter().eq(want.iter().rev()));
                        let present = match port_header {
                            PortHeader::Absent => false,
                            PortHeader::Present => true,
                            PortHeader::Unknown => may_contain(&headers, &port),
                        };
                        // `may_contain` may say yes for a large map; the pass never guesses.
                        if port_header != PortHeader::Unknown
                            || headers.keys_len() <= SCAN_MAX_NAMES
                        {
                            assert_eq!(present, with_port, "{others} others, {lines} lines");
                        } else {
                            assert!(present);
                        }
                    }
                }
            }
        }
    }
}
