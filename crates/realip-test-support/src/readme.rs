//! The proxy recipes of the workspace's READMEs, read from the Markdown as a user copies them.
//!
//! A recipe is a fenced `nginx` or `haproxy` block followed (before the next such block) by a
//! fenced `sh` block whose `realip-broker …` command is the broker that goes behind it. The
//! end-to-end tests run each recipe with only its addresses, ports and file paths changed.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use crate::admin::Broker;
use crate::scenario::{Block, Scenario};

/// A fenced code block of a README.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The info string's language (`nginx`, `haproxy`, `sh`, …).
    pub lang: String,
    /// The block's text, without the fences.
    pub text: String,
}

/// A proxy configuration of a README and the broker command that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The README, relative to the workspace root.
    pub readme: &'static str,
    /// The recipe's position among the README's recipes, from 0.
    pub index: usize,
    /// `nginx` or `haproxy`.
    pub proxy: String,
    /// The proxy configuration as written.
    pub config: String,
    /// The arguments of the `realip-broker` command that follows it, as the shell splits them.
    pub broker_args: Vec<String>,
}

impl Recipe {
    /// `README.md recipe 2 (nginx)`, for messages.
    pub fn name(&self) -> String {
        format!("{} recipe {} ({})", self.readme, self.index, self.proxy)
    }
}

/// The workspace root.
fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Every fenced block of `text`, in order.
pub fn fences(text: &str) -> Vec<Fence> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let lang = info.split([',', ' ']).next().unwrap_or("").to_owned();
        let mut body = String::new();
        for line in lines.by_ref() {
            if line.starts_with("```") {
                break;
            }
            body.push_str(line);
            body.push('\n');
        }
        out.push(Fence { lang, text: body });
    }
    out
}

/// The recipes of the README at `readme` (relative to the workspace root).
///
/// # Panics
///
/// When a proxy block has no `realip-broker` command after it: a recipe that does not say how
/// to run the broker is incomplete.
pub fn recipes(readme: &'static str) -> Vec<Recipe> {
    let path = workspace().join(readme);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let fences = fences(&text);
    let is_proxy = |f: &Fence| f.lang == "nginx" || f.lang == "haproxy";
    let mut out = Vec::new();
    for (i, fence) in fences.iter().enumerate() {
        if !is_proxy(fence) {
            continue;
        }
        let index = out.len();
        let command = fences[i + 1..]
            .iter()
            .take_while(|f| !is_proxy(f))
            .filter(|f| f.lang == "sh")
            .find_map(|f| broker_command(&f.text))
            .unwrap_or_else(|| {
                panic!(
                    "{readme} recipe {index} ({}) is not followed by a `realip-broker` command:\n{}",
                    fence.lang, fence.text
                )
            });
        out.push(Recipe {
            readme,
            index,
            proxy: fence.lang.clone(),
            config: fence.text.clone(),
            broker_args: command,
        });
    }
    out
}

/// The arguments of the first `realip-broker` command of a shell snippet (its `\` line
/// continuations joined, `#` comments dropped); `None` if it has none.
///
/// # Panics
///
/// On quotes or shell expansions, which this simple split does not interpret.
pub fn broker_command(sh: &str) -> Option<Vec<String>> {
    let joined = sh.replace("\\\n", " ");
    let line = joined
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find(|l| l.starts_with("realip-broker "))?;
    assert!(
        !line.contains(['\'', '"', '$', '`', '*']),
        "a broker command with quotes or expansions: {line}"
    );
    Some(line.split_whitespace().skip(1).map(str::to_owned).collect())
}

/// The listener flags of `realip-broker` and the port each has when an address is given
/// without one (or the flag is not given: `--tcp` and `--ws` are on by default).
const LISTENERS: [(&str, u16); 4] = [
    ("--tcp", 1883),
    ("--ws", 8083),
    ("--tls", 8883),
    ("--wss", 8084),
];

/// Flags whose value is a network of trusted proxies.
const TRUST_FLAGS: [&str; 2] = ["--trusted-proxy", "--proxy-from"];

/// A recipe's broker, running: its admin API and where each listener of the recipe went.
#[derive(Debug)]
pub struct RecipeBroker {
    /// The broker's admin API and logs.
    pub broker: Broker,
    /// `(flag, port in the README, address now)` for each listener.
    pub listeners: Vec<(&'static str, u16, SocketAddr)>,
}

impl RecipeBroker {
    /// Where the listener the README gives port `port` is now.
    pub fn listener(&self, port: u16) -> SocketAddr {
        self.listeners
            .iter()
            .find_map(|&(_, p, addr)| (p == port).then_some(addr))
            .unwrap_or_else(|| {
                panic!(
                    "the broker has no listener on README port {port}: {:?}",
                    self.listeners
                )
            })
    }

    /// The flag (`--tcp`, `--ws`, `--tls`, `--wss`) of the listener on README port `port`.
    pub fn listener_flag(&self, port: u16) -> &'static str {
        self.listeners
            .iter()
            .find_map(|&(flag, p, _)| (p == port).then_some(flag))
            .unwrap_or_else(|| panic!("the broker has no listener on README port {port}"))
    }

    /// Asserts that the broker logged no `WARN` or `ERROR` line: a recipe that works as pasted
    /// makes the broker complain about nothing.
    pub fn assert_quiet(&self, recipe: &Recipe) {
        let log = self.broker.log();
        let loud: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        assert!(
            loud.is_empty(),
            "{}: the broker complained:\n{}",
            recipe.name(),
            loud.join("\n")
        );
    }
}

/// Replaces each `(from, to)` of `pairs` in `text`, asserting that `from` occurs.
fn replace_all(recipe: &Recipe, text: &str, pairs: &[(String, String)]) -> String {
    let mut text = text.to_owned();
    for (from, to) in pairs {
        assert!(
            text.contains(from.as_str()),
            "{}: no {from:?} in\n{text}",
            recipe.name()
        );
        text = text.replace(from.as_str(), to);
    }
    text
}

/// Asserts that `text` holds none of the README's example addresses or paths any more.
fn assert_localized(recipe: &Recipe, text: &str) {
    for example in ["10.0.", "0.0.0.0", "/etc/", "/var/"] {
        assert!(
            !text.contains(example),
            "{}: {example:?} left after the addresses were changed:\n{text}",
            recipe.name()
        );
    }
}

/// The port of each upstream `10.0.0.71:PORT` the recipe names, in order.
fn upstream_ports(config: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    let mut rest = config;
    while let Some(pos) = rest.find("10.0.0.71:") {
        rest = &rest[pos + "10.0.0.71:".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        ports.push(digits.parse().expect("a port after 10.0.0.71:"));
    }
    ports.dedup();
    ports
}

impl Recipe {
    /// The broker ports (as the README writes them) this recipe's proxy connects to.
    pub fn upstream_ports(&self) -> Vec<u16> {
        upstream_ports(&self.config)
    }

    /// Whether the proxy terminates TLS (HAProxy `bind … ssl crt …`).
    pub fn terminates_tls(&self) -> bool {
        self.config.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("bind ") && l.split_whitespace().any(|w| w == "ssl")
        })
    }

    /// Whether the proxy expects what a proxy in front of it adds: a PROXY header (`listen …
    /// proxy_protocol`) or forwarded headers to trust (`set_real_ip_from`).
    pub fn needs_a_proxy_in_front(&self) -> bool {
        self.config.contains("set_real_ip_from")
            || self.config.lines().any(|l| {
                let l = l.trim_start();
                l.starts_with("listen ") && l.contains("proxy_protocol")
            })
    }

    /// An NGINX recipe's block and the text inside it (a bare `upstream`/`server` recipe is
    /// `http` text as `conf.d/` holds it).
    pub fn nginx_block(&self) -> (Block, String) {
        let text = self.config.trim();
        for (prefix, block) in [("stream {", Block::Stream), ("http {", Block::Http)] {
            if let Some(body) = text.strip_prefix(prefix) {
                let body = body
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("{}: unbalanced {prefix}", self.name()));
                return (block, body.to_owned());
            }
        }
        (Block::Http, text.to_owned())
    }

    /// The proxy configuration with its listen address set to `listen`, each `10.0.0.71:PORT`
    /// to `upstream(PORT)`, every `10.…/N` network to `trusted`, and each `(path, local path)`
    /// of `files` replaced.
    pub fn localized_config(
        &self,
        listen: SocketAddr,
        upstream: impl Fn(u16) -> SocketAddr,
        trusted: &str,
        files: &[(&str, String)],
    ) -> String {
        let keyword = if self.proxy == "nginx" {
            "listen "
        } else {
            "bind "
        };
        let mut listens = 0;
        let mut text = String::new();
        for line in self.config.lines() {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix(keyword) {
                listens += 1;
                let indent = &line[..line.len() - trimmed.len()];
                let end = rest.find([' ', ';']).unwrap_or(rest.len());
                text.push_str(&format!("{indent}{keyword}{listen}{}\n", &rest[end..]));
            } else {
                text.push_str(line);
                text.push('\n');
            }
        }
        assert_eq!(listens, 1, "{}: one listen/bind line expected", self.name());
        let mut pairs: Vec<(String, String)> = self
            .upstream_ports()
            .into_iter()
            .map(|port| (format!("10.0.0.71:{port}"), upstream(port).to_string()))
            .collect();
        pairs.extend(networks(&text).into_iter().map(|n| (n, trusted.to_owned())));
        pairs.extend(
            files
                .iter()
                .filter(|(from, _)| text.contains(from))
                .map(|(f, t)| ((*f).to_owned(), t.clone())),
        );
        let text = replace_all(self, &text, &pairs);
        assert_localized(self, &text);
        text
    }
}

/// The `10.…/N` networks written in `text`.
fn networks(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c == ';' || c == ',')
        .filter(|w| w.starts_with("10.") && w.contains('/'))
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

impl Scenario {
    /// Starts the recipe's broker with its command's arguments, each listener on a free port
    /// of `host` (`--tcp` and `--ws`, on by default, too), every trusted network set to
    /// `trusted` and each `(path, local path)` of `files` replaced; readiness is probed from
    /// `probe_from`, an address the PROXY rules trust.
    pub fn recipe_broker(
        &mut self,
        recipe: &Recipe,
        host: IpAddr,
        trusted: &str,
        files: &[(&str, String)],
        probe_from: IpAddr,
    ) -> RecipeBroker {
        let free = |s: &Scenario| {
            if host.is_ipv6() {
                s.addr_v6()
            } else {
                let IpAddr::V4(v4) = host else { unreachable!() };
                s.addr(v4.octets()[3])
            }
        };
        let mut args = Vec::new();
        let mut listeners = Vec::new();
        let mut given = Vec::new();
        let mut it = recipe.broker_args.iter();
        while let Some(flag) = it.next() {
            args.push(flag.clone());
            if let Some(&(name, default)) = LISTENERS.iter().find(|(f, _)| f == flag) {
                let value = it.next().expect("a listener address");
                let port = value
                    .rsplit_once(':')
                    .map_or(default, |(_, p)| p.parse().expect("a port"));
                let addr = free(self);
                listeners.push((name, port, addr));
                given.push(name);
                args.push(addr.to_string());
            } else if TRUST_FLAGS.contains(&flag.as_str()) {
                let value = it.next().expect("a network");
                assert!(
                    value.starts_with("10."),
                    "{}: {flag} {value}",
                    recipe.name()
                );
                args.push(trusted.to_owned());
            } else if let Some((_, local)) = files.iter().find(|(path, _)| path == flag) {
                args.pop();
                args.push(local.clone());
            }
        }
        for (flag, _) in LISTENERS.iter().take(2) {
            if !given.contains(flag) {
                // A default listener, moved off its well-known port.
                args.push((*flag).to_owned());
                args.push(SocketAddr::new(host, 0).to_string());
            }
        }
        assert_localized(recipe, &args.join(" "));
        let listen: Vec<(SocketAddr, IpAddr)> = listeners
            .iter()
            .map(|&(_, _, addr)| (addr, probe_from))
            .collect();
        let broker = self.broker("broker", &args, &listen);
        RecipeBroker { broker, listeners }
    }

    /// Starts the recipe's proxy (NGINX or HAProxy) as `name`, localized as
    /// [`Recipe::localized_config`] says, listening on `listen`.
    pub fn recipe_proxy(
        &mut self,
        name: &str,
        recipe: &Recipe,
        listen: SocketAddr,
        upstream: impl Fn(u16) -> SocketAddr,
        trusted: &str,
        files: &[(&str, String)],
    ) {
        let config = recipe.localized_config(listen, upstream, trusted, files);
        let localized = Recipe {
            config,
            ..recipe.clone()
        };
        if recipe.proxy == "nginx" {
            let (block, body) = localized.nginx_block();
            self.nginx_conf(name, block, &body, &[listen]);
        } else {
            self.haproxy_conf(name, &localized.config, &[listen]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_split_with_its_continuations() {
        let args = broker_command(
            "# comment\nrealip-broker --tcp 0.0.0.0:1883 \\\n    --proxy-from 10.0.0.0/8  # trust\n",
        );
        assert_eq!(
            args.unwrap(),
            ["--tcp", "0.0.0.0:1883", "--proxy-from", "10.0.0.0/8"]
        );
        assert_eq!(broker_command("cargo run -p realip-broker\n"), None);
    }

    #[test]
    fn fences_keep_their_language_and_text() {
        let text = "a\n```nginx\nserver {}\n```\nb\n```sh\nls\n```\n";
        let fences = fences(text);
        assert_eq!(
            fences,
            [
                Fence {
                    lang: "nginx".into(),
                    text: "server {}\n".into()
                },
                Fence {
                    lang: "sh".into(),
                    text: "ls\n".into()
                }
            ]
        );
    }
}
