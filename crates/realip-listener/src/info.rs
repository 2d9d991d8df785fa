//! What a PROXY protocol header said about a connection.

/// What the PROXY protocol header of one connection carried.
///
/// (Placeholder: fields are filled in by the listener implementation.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyInfo {}
