//! Benchmark: what a looping model costs, with the loop guard of SPEC §2 rule 10 and without
//! it (`max_repeated_failures` and `max_repeated_refusals` set past every turn limit, which is how the engine behaved
//! before the guard). Three loops real models fall into: a worker repeating a failing
//! `read_file`, an orchestrator repeating a refused `complete`, and a reviewer re-sending a
//! report with a verdict missing. Each runs a whole mission against the scripted loopback
//! model; the figures are that role's requests and the tokens the mission recorded for it.
//! Run with `cargo bench -p missions-tests --bench loop_costs`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::project::*;
use missions_tests::script::{Call, Script, ScriptRole, ScriptedModel, Turn};
use serde_json::json;

fn scenario(name: &str) -> (ScriptRole, Script) {
    let base = slugify_script(Story { buggy_first: true, ..Story::default() });
    let script: Script = match name {
        "worker" => Arc::new(move |call: &Call| match (call.role, call.first_line.starts_with("Feature F1:")) {
            (ScriptRole::Worker, true) => Turn::call("read_file", json!({"path": "does/not/exist.py"})),
            _ => base(call),
        }),
        "orchestrator" => Arc::new(move |call: &Call| match call.role {
            ScriptRole::Boundary => Turn::call("decide_milestone", json!({"decision": "complete", "notes": "done"})),
            _ => base(call),
        }),
        _ => Arc::new(move |call: &Call| match call.role {
            ScriptRole::Reviewer => Turn::call("report_findings", json!({"verdicts": [], "findings": []})),
            _ => base(call),
        }),
    };
    let role = match name {
        "worker" => ScriptRole::Worker,
        "orchestrator" => ScriptRole::Boundary,
        _ => ScriptRole::Reviewer,
    };
    (role, script)
}

fn role_key(role: ScriptRole) -> &'static str {
    match role {
        ScriptRole::Worker => "worker",
        ScriptRole::Reviewer => "reviewer",
        _ => "orchestrator",
    }
}

#[tokio::main]
async fn main() {
    println!("{:<14} {:>10} {:>12} {:>10} {:>12}", "loop", "requests", "tokens", "requests", "tokens");
    println!("{:<14} {:>23} {:>23}", "", "without the guard", "with the guard");
    for name in ["worker", "orchestrator", "reviewer"] {
        let mut figures = Vec::new();
        for extra in [
            "[mission]\nmax_repeated_failures = 100000\nmax_repeated_refusals = 100000\nmax_correction_rounds = 1\n",
            "[mission]\nmax_correction_rounds = 1\n",
        ] {
            let (role, script) = scenario(name);
            let model = ScriptedModel::start(script, Duration::ZERO).await;
            let dir = project_for(&model, extra);
            let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve", "--accept"]).await;
            assert!(output.status.code().is_some());
            let requests = model.calls().iter().filter(|(c, _)| c.role == role).count();
            let id = mission_id(dir.path());
            let mission = read_json(&dir.path().join(".missions").join(&id).join("mission.json"));
            let tokens = mission["budget"]["by_role"][role_key(role)]["tokens"].as_u64().unwrap_or(0);
            figures.push((requests, tokens));
        }
        println!("{:<14} {:>10} {:>12} {:>10} {:>12}", name, figures[0].0, figures[0].1, figures[1].0, figures[1].1);
    }
}
