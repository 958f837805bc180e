//! The Missions mission loop (SPEC §2–§5): planning, serial workers, milestone validation,
//! corrective rounds, git, budget and control, driven by commands and recorded as events.
//!
//! Boundary: no LSP, no HTTP. Models are reached through `missions_core::model::ModelProvider`
//! and the tools through `missions_tools::ToolBox`; front ends (the CLI, the language server)
//! send [`mission::Command`]s and read the store's events and snapshots.

pub(crate) mod acceptance;
pub(crate) mod agent;
pub mod backlog;
pub(crate) mod checks;
pub mod git;
pub mod mission;
mod procs;
pub(crate) mod prompts;
pub(crate) mod terminals;
