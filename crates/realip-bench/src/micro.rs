//! An interleaved micro-benchmark runner for the functions in [`cases`]: every
//! round times one batch of every implementation of every case in turn (A B C A B C …), so
//! that drift on a shared, noisy machine hits them alike. Ratios are medians of per-round
//! ratios. The criterion benches (`cargo bench -p realip-bench`) time the same functions one
//! after the other, with criterion's statistics.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::cases::{self, LayerCase};
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

/// The per-round ratios `a[i] / b[i]`.
fn ratios(a: &Timed<'_>, b: &Timed<'_>) -> Vec<f64> {
    a.ns.iter().zip(&b.ns).map(|(x, y)| x / y).collect()
}

/// Median of the per-round ratios `a[i] / b[i]`.
fn ratio(a: &Timed<'_>, b: &Timed<'_>) -> f64 {
    median(&ratios(a, b))
}

/// The median of the per-round ratios `a[i] / b[i]` and their range, as `0.81 (0.77–0.86)`.
fn ratio_spread(a: &Timed<'_>, b: &Timed<'_>) -> String {
    let r = ratios(a, b);
    let min = r.iter().copied().fold(f64::INFINITY, f64::min);
    let max = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.2} ({min:.2}–{max:.2})", median(&r))
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

/// One Markdown table row: `name`, the median ns of each implementation in `group`, then
/// `ratios`.
fn row(out: &mut String, name: &str, group: &[Timed<'_>], ratios: &[String]) {
    let medians = group.iter().map(|t| format!("{:.1}", median(&t.ns)));
    let cells: Vec<String> = std::iter::once(name.to_owned())
        .chain(medians)
        .chain(ratios.iter().cloned())
        .collect();
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

/// `N` independent sets of `cases()`, each case checked ([`LayerCase::check`]), regrouped
/// per case (`[case][copy]`): one copy per implementation, so that each timed closure owns
/// its state.
fn per_case<const N: usize>(cases: impl Fn() -> Vec<LayerCase>) -> Vec<[LayerCase; N]> {
    let mut columns: Vec<std::vec::IntoIter<LayerCase>> = (0..N)
        .map(|_| {
            let mut set = cases();
            set.iter_mut().for_each(LayerCase::check);
            set.into_iter()
        })
        .collect();
    let cases = columns[0].len();
    (0..cases)
        .map(|_| {
            let copies: Vec<LayerCase> = columns
                .iter_mut()
                .map(|c| c.next().expect("same cases"))
                .collect();
            copies.try_into().expect("N copies")
        })
        .collect()
}

/// Forwarded-header resolution: ours against `real-ip`, `client-ip`, `axum-client-ip`.
/// Returns a Markdown section.
pub fn layer_table(rounds: usize, batch: Duration) -> String {
    let cases = per_case::<5>(cases::layer_cases);
    let names: Vec<&'static str> = cases.iter().map(|c| c[0].name).collect();
    let mut groups: Vec<Vec<Timed<'static>>> = cases
        .into_iter()
        .map(|[a, mut b, c, d, mut e]| {
            vec![
                Timed::new(move || a.realip_resolve()),
                Timed::new(move || b.realip_service()),
                Timed::new(move || c.real_ip()),
                Timed::new(move || d.client_ip()),
                Timed::new(move || e.axum_client_ip()),
            ]
        })
        .collect();
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
        let ratios = [2, 3, 4].map(|peer| format!("{:.2}", ratio(&g[0], &g[peer])));
        row(&mut out, name, g, &ratios);
    }
    // Cases 1 and 2: the same 4-entry chain with 16 and 10,000 CIDRs.
    let _ = writeln!(
        out,
        "\nSame 4-entry XFF chain, 10,000 vs 16 trusted CIDRs (median per-round ratio, min–max \
         over rounds in brackets): realip resolve {}×, real-ip {}×. Recursive walk, resolve ÷ \
         real-ip: {} (1 entry), {} (4 entries), {} (`Forwarded`).",
        ratio_spread(&groups[2][0], &groups[1][0]),
        ratio_spread(&groups[2][2], &groups[1][2]),
        ratio_spread(&groups[0][0], &groups[0][2]),
        ratio_spread(&groups[1][0], &groups[1][2]),
        ratio_spread(&groups[3][0], &groups[3][2]),
    );
    out
}

/// Forwarded-header resolution on the work of the rightmost-only crates (`client-ip`,
/// `axum-client-ip`): our layer non-recursive, with and without its port header lookup.
/// Returns a Markdown section.
pub fn same_work_table(rounds: usize, batch: Duration) -> String {
    let cases = per_case::<5>(cases::same_work_cases);
    let names: Vec<&'static str> = cases.iter().map(|c| c[0].name).collect();
    let mut groups: Vec<Vec<Timed<'static>>> = cases
        .into_iter()
        .map(|[a, b, mut c, d, mut e]| {
            vec![
                Timed::new(move || a.realip_resolve()),
                Timed::new(move || b.realip_resolve_without_port()),
                Timed::new(move || c.realip_service()),
                Timed::new(move || d.client_ip()),
                Timed::new(move || e.axum_client_ip()),
            ]
        })
        .collect();
    run_rounds(&mut groups, rounds, batch);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Layer, same work as the rightmost-only crates\n\n{rounds} interleaved rounds, \
         batches of ~{} µs. One `X-Forwarded-For` line from a trusted peer (10.9.0.1, 16 \
         trusted CIDRs); every implementation returns its rightmost entry (checked before \
         timing). realip = `RealIpLayer::x_forwarded_for` (non-recursive: NGINX \
         `real_ip_recursive off`), `resolve` with its default settings (the entry has no port, \
         so `X-Forwarded-Port` is looked for) and with `without_port_header()` (no port \
         lookup: exactly the peers' work), and the whole middleware `RealIp::call` (default \
         settings, as in the table above); client-ip = \
         `client_ip::rightmost_x_forwarded_for`; axum-client-ip = its \
         `RightmostXForwardedFor` extractor. Ratios: median of the per-round ratios, min–max \
         over rounds in brackets. The first two rows are the goal's; the third has the 12 \
         other headers of a browser's request, the fourth an `X-Forwarded-Port` header, \
         which our default settings read (the peers return no port).\n",
        batch.as_micros()
    );
    let _ = writeln!(
        out,
        "| input | resolve ns (default) | resolve ns (`without_port_header`) | `RealIp::call` ns | client-ip ns | axum-client-ip ns | default ÷ client-ip | default ÷ axum-client-ip | without port ÷ client-ip | without port ÷ axum-client-ip |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, g) in names.iter().zip(&groups) {
        let ratios =
            [(0, 3), (0, 4), (1, 3), (1, 4)].map(|(ours, peer)| ratio_spread(&g[ours], &g[peer]));
        row(&mut out, name, g, &ratios);
    }
    // The goal's rows: the worst median ratio of the default settings.
    let worst = groups[..2]
        .iter()
        .flat_map(|g| [ratio(&g[0], &g[3]), ratio(&g[0], &g[4])])
        .fold(f64::NEG_INFINITY, f64::max);
    let _ = writeln!(
        out,
        "\nGoal rows (XFF 1 and 4 entries), default settings: the worst median ratio to a \
         rightmost-only crate is {worst:.2}× (goal ≤ 1.00×: {}).",
        if worst <= 1.0 { "met" } else { "missed" }
    );
    out
}
