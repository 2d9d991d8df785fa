//! Test support shared by every test of the workspace that runs real processes: the root
//! package's example and end-to-end tests, and the broker's own tests.
//!
//! - [`Scenario`]: real NGINX and HAProxy processes on a loopback network of their own, the
//!   broker and the examples started as processes, every process killed and its logs printed
//!   when a test fails.
//! - [`Paho`]: the paho-mqtt client (`mqtt_client.py`), driven line by line over TCP, TLS or
//!   WebSocket; [`RawClient`] and [`WsClient`]: raw MQTT and WebSocket clients for what real
//!   clients cannot send (PROXY headers, garbage, silence).
//! - [`DevTools`]: headless Chromium (a [`Scenario`] process) driven over the DevTools
//!   protocol, for pages that run MQTT.js.
//! - [`broker_bin`] and [`example_bin`]: binaries built by Cargo for the running test, never a
//!   path that may hold a stale build.
//! - [`Tool`] and [`require`]: a test that needs a missing program fails with `CI=true` and
//!   otherwise skips with a loud line.
//! - `metrics` (feature `metrics`): the `metrics` facade's values, as the libraries' metrics
//!   tests read them.
#![allow(clippy::missing_panics_doc)]

mod admin;
mod browser;
mod cargo;
#[cfg(feature = "metrics")]
pub mod metrics;
mod mqtt;
mod net;
mod paho;
mod pp2;
mod readme;
mod scenario;
mod tools;
mod wait;

pub use admin::{Broker, contains_ip, json_strings, reported, wait_client};
pub use browser::{DevTools, Page};
pub use cargo::{broker_bin, example_bin, start_example};
pub use mqtt::{
    ConnectOutcome, RawClient, WsClient, connect_packet, mqtt_connect_packet, raw_mqtt_connect,
    read_to_close, v5_aliased_publish, v5_connect, v5_connect_with, v5_publishes,
};
pub use net::{bind_connect, connect_from, http, http_get, http_json};
pub use paho::{Paho, PahoOpts};
pub use pp2::{PP2_SIGNATURE, crc32c, pp2_local_with_addresses, pp2_with_crc32c};
pub use readme::{Fence, Recipe, RecipeBroker, broker_command, fences, recipes};
pub use scenario::{Block, Scenario, render};
pub use tools::{Tool, have, have_mosquitto, have_paho, require};
pub use wait::{STEP_TIMEOUT, say, wait_child, wait_for};
