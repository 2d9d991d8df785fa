//! `realip-broker ctl`: a tiny HTTP/1.0 client for the admin API (like `emqx ctl`).

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{ClientsCommand, CtlArgs, CtlCommand, SubscriptionsCommand};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a `ctl` command; output goes to stdout, errors to stderr. Exit status: 0 done, 1 the
/// client does not exist, 2 the admin API could not be reached or answered unexpectedly.
pub(crate) async fn run(args: CtlArgs) -> ExitCode {
    match execute(&args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("realip-broker ctl: {e}");
            ExitCode::from(2)
        }
    }
}

/// Every item of a paginated list endpoint, page by page.
async fn all_pages(admin: &str, path: &str) -> Result<Vec<Value>, String> {
    let mut items = Vec::new();
    for page in 1.. {
        let (status, body) =
            request(admin, "GET", &format!("{path}?_page={page}&_limit=10000")).await?;
        if status != 200 {
            return Err(format!("admin API answered {status}: {body}"));
        }
        let data = body["data"]
            .as_array()
            .ok_or("admin API answer has no \"data\" list")?;
        items.extend(data.iter().cloned());
        if body["meta"]["hasnext"] != Value::Bool(true) {
            break;
        }
    }
    Ok(items)
}

async fn execute(args: &CtlArgs) -> Result<ExitCode, String> {
    match &args.command {
        CtlCommand::Clients(ClientsCommand::List) => {
            let clients = all_pages(&args.admin, "/api/v5/clients").await?;
            if clients.is_empty() {
                println!("No clients.");
            }
            for client in &clients {
                println!("{}", client_line(client));
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlCommand::Clients(ClientsCommand::Show { clientid }) => {
            let path = format!("/api/v5/clients/{}", percent_encode(clientid));
            let (status, body) = request(&args.admin, "GET", &path).await?;
            match status {
                200 => {
                    println!("{}", client_line(&body));
                    Ok(ExitCode::SUCCESS)
                }
                404 => {
                    println!("Not Found.");
                    Ok(ExitCode::FAILURE)
                }
                _ => Err(format!("admin API answered {status}: {body}")),
            }
        }
        CtlCommand::Clients(ClientsCommand::Kick { clientid }) => {
            let path = format!("/api/v5/clients/{}", percent_encode(clientid));
            let (status, body) = request(&args.admin, "DELETE", &path).await?;
            match status {
                204 => {
                    println!("ok");
                    Ok(ExitCode::SUCCESS)
                }
                404 => {
                    println!("Not Found.");
                    Ok(ExitCode::FAILURE)
                }
                _ => Err(format!("admin API answered {status}: {body}")),
            }
        }
        CtlCommand::Subscriptions(SubscriptionsCommand::List) => {
            let subscriptions = all_pages(&args.admin, "/api/v5/subscriptions").await?;
            if subscriptions.is_empty() {
                println!("No subscriptions.");
            }
            for sub in &subscriptions {
                println!(
                    "{} -> topic:{} qos:{}",
                    text(&sub["clientid"]),
                    text(&sub["topic"]),
                    text(&sub["qos"])
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "undefined".to_owned(),
        other => other.to_string(),
    }
}

/// `Client(ID, listener=tcp:default, peername=IP:PORT, sockname=IP:PORT, socket_peer=IP:PORT)`.
pub(crate) fn client_line(client: &Value) -> String {
    let field = |name: &str| text(&client[name]);
    format!(
        "Client({}, listener={}, peername={}, sockname={}, socket_peer={})",
        field("clientid"),
        field("listener"),
        field("peername"),
        field("sockname"),
        field("socket_peer"),
    )
}

async fn request(admin: &str, method: &str, path: &str) -> Result<(u16, Value), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(admin)
            .await
            .map_err(|e| format!("cannot reach the admin API at {admin}: {e}"))?;
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {admin}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("admin API at {admin}: {e}"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("admin API at {admin}: {e}"))?;
        Ok::<_, String>(response)
    };
    let response = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("admin API at {admin} did not answer within {TIMEOUT:?}"))??;
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> Result<(u16, Value), String> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed HTTP response from the admin API")?;
    let head = std::str::from_utf8(&response[..split]).map_err(|_| "non-UTF-8 HTTP head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("malformed HTTP status line from the admin API")?;
    let body = &response[split + 4..];
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| format!("admin API sent invalid JSON: {e}"))?
    };
    Ok((status, body))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_the_emqx_style_line() {
        let client = json!({
            "clientid": "c1", "listener": "tcp:default", "peername": "127.0.0.101:5000",
            "sockname": "127.0.0.1:1883", "socket_peer": "127.0.0.1:6000",
        });
        assert_eq!(
            client_line(&client),
            "Client(c1, listener=tcp:default, peername=127.0.0.101:5000, sockname=127.0.0.1:1883, socket_peer=127.0.0.1:6000)"
        );
    }

    #[test]
    fn parses_responses_and_encodes_ids() {
        let (status, body) = parse_response(
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\r\n{\"code\":\"X\"}",
        )
        .unwrap();
        assert_eq!((status, body["code"].as_str()), (404, Some("X")));
        assert!(parse_response(b"garbage").is_err());
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }
}
