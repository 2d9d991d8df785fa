//! Every HAProxy and NGINX recipe in the two READMEs is a complete configuration: pasted with
//! only the broker's address changed, `haproxy -c` and `nginx -t` accept it (an undefined
//! upstream, a missing section or a typo fails here). Fragments meant to be added to another
//! recipe (an NGINX `server` or `location` alone) are not checked.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::have;

/// Debian's `libnginx-mod-stream`, as the end-to-end suite loads it.
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

const READMES: [&str; 2] = [
    concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"),
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"),
];

/// The fenced blocks of `lang` in every README: (file, block).
fn blocks(lang: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for path in READMES {
        let text = std::fs::read_to_string(path).unwrap();
        let mut rest = text.as_str();
        let fence = format!("```{lang}\n");
        while let Some(start) = rest.find(&fence) {
            let body = &rest[start + fence.len()..];
            let end = body.find("```").unwrap();
            out.push((path.to_owned(), body[..end].to_owned()));
            rest = &body[end..];
        }
    }
    out
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("realip-readme-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn runs(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    have(tool, ok)
}

#[test]
fn haproxy_recipes_are_complete() {
    if !runs("haproxy") {
        return;
    }
    let dir = scratch("haproxy");
    // The files a TLS recipe names, made at test time.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(
        dir.join("server-with-key.pem"),
        format!("{}{}", cert.pem(), key.serialize_pem()),
    )
    .unwrap();
    std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
    let recipes = blocks("haproxy");
    assert!(recipes.len() >= 4, "{recipes:?}");
    for (i, (file, recipe)) in recipes.iter().enumerate() {
        let conf = recipe
            .replace("10.0.0.71", "127.0.0.1")
            .replace("/etc/haproxy/", &format!("{}/", dir.display()));
        let path = dir.join(format!("{i}.cfg"));
        std::fs::write(&path, &conf).unwrap();
        let out = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: haproxy -c rejects\n{recipe}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn nginx_recipes_are_complete() {
    if !runs("nginx")
        || !have(
            "libnginx-mod-stream",
            std::path::Path::new(STREAM_MODULE).exists(),
        )
    {
        return;
    }
    let dir = scratch("nginx");
    let mut checked = 0;
    for (i, (file, recipe)) in blocks("nginx").iter().enumerate() {
        let body = recipe.replace("10.0.0.71", "127.0.0.1");
        let first = body.trim_start();
        let wrapped = if first.starts_with("stream {") || first.starts_with("http {") {
            body
        } else if first.starts_with("upstream ") {
            format!("http {{\n{body}\n}}")
        } else {
            // A fragment to add to another recipe.
            continue;
        };
        let conf = format!(
            "load_module {STREAM_MODULE};\nerror_log stderr;\npid {}/nginx.pid;\n\
             events {{}}\n{wrapped}",
            dir.display()
        );
        let path = dir.join(format!("{i}.conf"));
        std::fs::write(&path, &conf).unwrap();
        let out = Command::new("nginx")
            .arg("-t")
            .arg("-q")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: nginx -t rejects\n{recipe}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} complete NGINX recipes found");
    let _ = std::fs::remove_dir_all(dir);
}
