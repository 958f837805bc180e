//! The Missions engine core.
//!
//! This crate holds everything about a mission that does not depend on how it is reached:
//! the domain types of SPEC §4 ([`mission`]), the configuration of SPEC §7 ([`config`]),
//! the append-only event log and its projections ([`store`]), per-run transcripts
//! ([`transcript`]), and the [`model::ModelProvider`] trait that the HTTP providers implement
//! in `missions-providers`.
//!
//! Boundary: no LSP types, no HTTP client, no terminal output. Front ends (the CLI, the
//! language server, tests) drive the core and render what it reports.

pub mod config;
pub mod ids;
pub mod layout;
pub mod mission;
pub mod model;
pub mod net;
pub mod pricing;
pub mod secrets;
pub mod status;
pub mod store;
pub mod sync;
pub mod transcript;

/// The SHA-256 of `bytes` in lower-case hex: how every digest Missions writes is spelled.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// The current time as an RFC 3339 UTC timestamp, the one format used in every file we write.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| now.unix_timestamp().to_string())
}
