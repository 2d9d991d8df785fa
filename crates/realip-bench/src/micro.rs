//! An interleaved micro-benchmark runner for the functions in [`cases`]: every
//! round times one batch of every implementation of every case in turn (A B C A B C …), so
//! that drift on a shared, noisy machine hits them alike. Ratios are medians of per-round
//! ratios. The criterion benches (`cargo bench -p realip-bench`) time the same functions one
//! after the other, with criterion's statistics.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::cases::{self, CLIENT, LayerCase};
use crate::stats::median;

/// One implementation of one case, timed in batches.
struct Timed<'a> {
    run: Box<dyn FnMut(u64) -> f64 + 'a>,
    iters: u64,
    ns: Vec<f64>,
}

impl<'a> Timed<'a> {
    fn new<R>(mut f: impl FnMut() -> R + 'a) -> Self {
        let run = Box::new(move |iters: u64| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(f());
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        });
        Self {
            run,
            iters: 1,
            ns: Vec::new(),
        }
    }

    /// Finds a batch size that takes about `batch`.
    fn calibrate(&mut self, batch: Duration) {
        let mut iters = 1u64;
        loop {
            let ns = (self.run)(iters);
            if ns * iters as f64 >= batch.as_nanos() as f64 / 4.0 || iters >= 1 << 30 {
                self.iters = ((batch.as_nanos() as f64 / ns.max(0.1)) as u64).max(1);
                return;
            }
            iters *= 4;
        }
    }

    fn sample(&mut self) {
        let ns = (self.run)(self.iters);
        self.ns.push(ns);
    }
}

/// Runs `rounds` interleaved rounds over `groups[case][implementation]`.
fn run_rounds(groups: &mut [Vec<Timed<'_>>], rounds: usize, batch: Duration) {
    for group in groups.iter_mut() {
        for t in group.iter_mut() {
            t.calibrate(batch);
        }
    }
    for _ in 0..rounds {
        for group in groups.iter_mut() {
            for t in group.iter_mut() {
                t.sample();
            }
        }
    }
}

/// Median of the per-round ratios `a[i] / b[i]`.
fn ratio(a: &Timed<'_>, b: &Timed<'_>) -> f64 {
    let r: Vec<f64> = a.ns.iter().zip(&b.ns).map(|(x, y)| x / y).collect();
    median(&r)
}

/// Header parsing: ours, `ppp` (the floor), `proxy-protocol-rs`. Returns a Markdown section.
pub fn parse_table(rounds: usize, batch: Duration) -> String {
    let cases = cases::parse_cases();
    let mut groups: Vec<Vec<Timed<'_>>> = cases
        .iter()
        .map(|c| {
            assert_eq!(cases::parse_realip(&c.buf), c.header_len, "{}", c.name);
            assert_eq!(cases::parse_ppp(&c.buf), c.header_len, "{}", c.name);
            assert_eq!(cases::parse_peer(&c.buf), c.header_len, "{}", c.name);
            let buf = &c.buf[..];
            vec![
                Timed::new(move || cases::parse_realip(black_box(buf))),
                Timed::new(move || cases::parse_ppp(black_box(buf))),
                Timed::new(move || cases::parse_peer(black_box(buf))),
            ]
        })
        .collect();
    run_rounds(&mut groups, rounds, batch);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Header parse\n\n{rounds} interleaved rounds, batches of ~{} µs per \
         implementation; each input is the header followed by 16 bytes of request, as the first \
         read delivers it. realip = `realip_listener::parse_header` (signature detection, \
         `ppp`, size cap, TLV validation, owned `ProxyInfo`); ppp = `ppp::v1/v2::Header::try_from` \
         on the same bytes, borrowing, TLVs iterated once (the floor: the parser ours wraps); \
         proxy-protocol-rs = its `parse` (owned `ProxyInfo`, decoded TLVs).\n",
        batch.as_micros()
    );
    let _ = writeln!(
        out,
        "| input | realip ns | ppp (floor) ns | proxy-protocol-rs ns | realip ÷ ppp | realip ÷ proxy-protocol-rs |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for (c, g) in cases.iter().zip(&groups) {
        let _ = writeln!(
            out,
            "| {} ({} B) | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
            c.name,
            c.header_len,
            median(&g[0].ns),
            median(&g[1].ns),
            median(&g[2].ns),
            ratio(&g[0], &g[1]),
            ratio(&g[0], &g[2]),
        );
    }
    out
}

/// Forwarded-header resolution: ours against `real-ip`, `client-ip`, `axum-client-ip`.
/// Returns a Markdown section.
pub fn layer_table(rounds: usize, batch: Duration) -> String {
    // One prepared case per implementation, so that each closure owns its state.
    let per_impl = || cases::layer_cases();
    let mut sets: Vec<Vec<LayerCase>> = (0..5).map(|_| per_impl()).collect();
    let names: Vec<&'static str> = sets[0].iter().map(|c| c.name).collect();
    for c in sets.iter_mut().flatten() {
        assert_eq!(c.realip_resolve(), Some(CLIENT), "{}", c.name);
        assert_eq!(c.realip_service(), Some(CLIENT), "{}", c.name);
        assert_eq!(c.real_ip(), Some(CLIENT), "{}", c.name);
        assert_eq!(c.client_ip(), Some(c.rightmost), "{}", c.name);
        assert_eq!(c.axum_client_ip(), Some(c.rightmost), "{}", c.name);
    }
    let mut columns: Vec<std::vec::IntoIter<LayerCase>> =
        sets.into_iter().map(Vec::into_iter).collect();
    let mut groups: Vec<Vec<Timed<'static>>> = Vec::new();
    for _ in &names {
        let mut take = || {
            columns
                .iter_mut()
                .map(|c| c.next().expect("same cases"))
                .collect::<Vec<_>>()
        };
        let [a, mut b, c, d, mut e]: [LayerCase; 5] =
            take().try_into().expect("five implementations");
        groups.push(vec![
            Timed::new(move || a.realip_resolve()),
            Timed::new(move || b.realip_service()),
            Timed::new(move || c.real_ip()),
            Timed::new(move || d.client_ip()),
            Timed::new(move || e.axum_client_ip()),
        ]);
    }
    run_rounds(&mut groups, rounds, batch);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Layer (forwarded-header resolution)\n\n{rounds} interleaved rounds, batches of \
         ~{} µs. realip resolve = `RealIpLayer::resolve` (recursive, the pure step the \
         middleware runs per request; default `X-Forwarded-Port` lookup included); \
         `RealIp::call` = the whole middleware on a reused request (resolution, transport peer \
         from extensions, two extension inserts, two removals to reuse the request); real-ip = \
         `real_ip::real_ip` (the same recursive walk, linear CIDR scan); client-ip / \
         axum-client-ip = rightmost entry only, no trusted-proxy walk (less work and a \
         different answer for chains: a lower bound, not the same work). Peer = 10.9.0.1 \
         (trusted); chain `203.0.113.7, 10.1.0.1, 10.2.0.1, 10.3.0.1`.\n",
        batch.as_micros()
    );
    let _ = writeln!(
        out,
        "| input | realip resolve ns | realip `RealIp::call` ns | real-ip ns | client-ip ns | axum-client-ip ns | resolve ÷ real-ip | resolve ÷ client-ip | resolve ÷ axum-client-ip |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, g) in names.iter().zip(&groups) {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} |",
            name,
            median(&g[0].ns),
            median(&g[1].ns),
            median(&g[2].ns),
            median(&g[3].ns),
            median(&g[4].ns),
            ratio(&g[0], &g[2]),
            ratio(&g[0], &g[3]),
            ratio(&g[0], &g[4]),
        );
    }
    // Cases 1 and 2: the same 4-entry chain with 16 and 10,000 CIDRs.
    let _ = writeln!(
        out,
        "\nSame 4-entry XFF chain, 10,000 vs 16 trusted CIDRs (median per-round ratio): realip \
         resolve {:.2}×, real-ip {:.2}×.",
        ratio(&groups[2][0], &groups[1][0]),
        ratio(&groups[2][2], &groups[1][2]),
    );
    out
}
