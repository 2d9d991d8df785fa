//! A PROXY protocol (v1/v2) listener for tokio.
//!
//! (Module documentation to be written with the implementation.)

mod connect_info;
mod info;

pub use connect_info::ProxiedAddr;
pub use info::ProxyInfo;
