//! Every proxy recipe of `README.md` and `examples/broker/README.md`, run as a user pastes it:
//! the NGINX or HAProxy configuration and the `realip-broker` command after it, with only
//! addresses, ports and file paths changed, a real paho-mqtt client through the real proxy, and
//! the `peername` the broker reports checked against the client's own address and port.
//!
//! Addresses: the proxy listens on `127.N.0.11` (a proxy that expects one in front of it, on
//! `127.N.0.21`, behind the README's first recipe of its kind on `.11`), the broker on
//! `127.N.0.2`, the client connects from `127.N.0.101`. The proxies connect from `127.0.0.1`
//! (a recipe sets no source address), so every network the README trusts becomes
//! `127.0.0.1/32`: the proxies, never the client.

use realip_test_support as e2e;

use std::fs;
use std::net::{IpAddr, Ipv4Addr};

use e2e::{PahoOpts, Recipe, Scenario, Tool};

/// The proxies' source address, and so the trusted network.
const PROXIES: Ipv4Addr = Ipv4Addr::LOCALHOST;
const TRUSTED: &str = "127.0.0.1/32";

#[test]
fn readme_recipes_run_as_written() {
    run_all("README.md", 71);
}

#[test]
fn broker_readme_recipes_run_as_written() {
    run_all("examples/broker/README.md", 80);
}

fn run_all(readme: &'static str, first_net: u8) {
    let recipes = e2e::recipes(readme);
    assert!(
        recipes.len() >= 4,
        "{readme}: only {} recipes",
        recipes.len()
    );
    if !e2e::require(
        &format!("{readme} recipes"),
        &[Tool::Nginx, Tool::Haproxy, Tool::Paho],
    ) {
        return;
    }
    for recipe in &recipes {
        let net = first_net + u8::try_from(recipe.index).expect("a few recipes");
        run(&recipes, recipe, net);
    }
    e2e::say(format_args!(
        "{readme}: ok, all {} recipes run as written",
        recipes.len()
    ));
}

/// The README's first recipe that can take the client in front of `recipe`: same proxy, same
/// NGINX block, and nothing expected in front of itself.
fn front_of<'a>(all: &'a [Recipe], recipe: &Recipe) -> &'a Recipe {
    let kind = |r: &Recipe| (r.proxy == "nginx").then(|| r.nginx_block().0);
    all.iter()
        .find(|r| r.proxy == recipe.proxy && kind(r) == kind(recipe) && !r.needs_a_proxy_in_front())
        .unwrap_or_else(|| panic!("{}: no recipe to put in front of it", recipe.name()))
}

fn run(all: &[Recipe], recipe: &Recipe, net: u8) {
    let id: &'static str = Box::leak(
        format!(
            "README-{}-{}",
            if recipe.readme == "README.md" {
                "root"
            } else {
                "broker"
            },
            recipe.index
        )
        .into_boxed_str(),
    );
    let Some(mut s) = Scenario::start(id, net, &[]) else {
        return;
    };
    // The files the recipes name, made here.
    let (cert, key) = s.self_signed_cert_and_key("localhost", "server");
    let cert_and_key = s.self_signed_pem("localhost");
    let www = s.dir().join("www");
    fs::create_dir_all(&www).expect("www");
    let files = [
        ("server.pem", cert.display().to_string()),
        ("server.key", key.display().to_string()),
        (
            "/etc/haproxy/server-with-key.pem",
            cert_and_key.display().to_string(),
        ),
        ("/etc/haproxy/ca.pem", cert.display().to_string()),
        ("/var/www/mqtt-app", www.display().to_string()),
    ];

    let broker = s.recipe_broker(recipe, s.ip(2), TRUSTED, &files, IpAddr::V4(PROXIES));
    let port = *recipe
        .upstream_ports()
        .last()
        .unwrap_or_else(|| panic!("{}: no upstream 10.0.0.71:PORT", recipe.name()));
    let listen = s.addr(11);
    if recipe.needs_a_proxy_in_front() {
        let front = front_of(all, recipe);
        let middle = s.addr(21);
        s.recipe_proxy(
            "middle",
            recipe,
            middle,
            |p| broker.listener(p),
            TRUSTED,
            &files,
        );
        s.recipe_proxy("front", front, listen, |_| middle, TRUSTED, &files);
    } else {
        s.recipe_proxy(
            "proxy",
            recipe,
            listen,
            |p| broker.listener(p),
            TRUSTED,
            &files,
        );
    }

    let client_id = id.to_lowercase();
    let flag = broker.listener_flag(port);
    let mut opts = match flag {
        "--ws" => PahoOpts::ws(listen, s.ip(101), &client_id),
        "--tcp" | "--tls" => PahoOpts::tcp(listen, s.ip(101), &client_id),
        other => panic!("{}: no client for a {other} listener", recipe.name()),
    };
    if flag == "--tls" || recipe.terminates_tls() {
        opts.tls_sni = Some("localhost".to_owned());
    }
    let client = s
        .paho("client", opts)
        .unwrap_or_else(|e| panic!("{}: the client cannot connect: {e}", recipe.name()));
    let record = broker.broker.wait_client(&client_id);
    let has = |flag: &str| recipe.broker_args.iter().any(|a| a == flag);
    // A header that carries no port (X-Real-IP) leaves the port unknown: a bare IP.
    let expected = if has("--ws-header") && !has("--ws-port-header") {
        client.local.ip().to_string()
    } else {
        client.local.to_string()
    };
    assert_eq!(
        record["peername"].as_str(),
        Some(expected.as_str()),
        "{}: peername of the client {}: {record}",
        recipe.name(),
        client.local
    );
    let client_local = client.local;
    client.roundtrip();
    // What the README says these options carry.
    if recipe.config.contains("unique-id") {
        assert!(
            record["proxy"]["unique_id"]
                .as_str()
                .is_some_and(|u| !u.is_empty()),
            "{}: unique-id with the recipe's unique-id-format: {record}",
            recipe.name()
        );
    }
    if recipe.config.contains("send-proxy-v2-ssl") {
        assert!(
            record["proxy"]["ssl"].is_object(),
            "{}: the SSL TLV: {record}",
            recipe.name()
        );
    }
    broker.assert_quiet(recipe);
    e2e::say(format_args!(
        "scenario {id}: ok {} client={client_local} peername={} socket_peer={}",
        recipe.name(),
        record["peername"],
        record["socket_peer"]
    ));
}
