//! The language server keeps running whatever arrives on its input (SPEC §8): a fuzzer sends
//! thousands of malformed frames, each followed by a well-formed request that must be answered.
//! The seed is printed, and `MISSIONS_FUZZ_SEED` replays a failing run.

mod common;

use std::time::{Duration, Instant};

use common::editor::{Editor, with_editor};
use common::project::*;
use serde_json::{Value, json};

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// One malformed frame of a kind chosen by `rng`.
fn malformed(rng: &mut fastrand::Rng) -> Vec<u8> {
    let id = rng.i64(1_000_000..2_000_000);
    match rng.u8(0..16) {
        0 => frame(b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": "),
        1 => frame(&[b'{', 0xff, 0xfe, b'}']),
        2 => frame(format!("{{\"jsonrpc\":\"2.0\",\"id\":{id}.5,\"method\":\"x\"}}").as_bytes()),
        3 => frame(b"{\"jsonrpc\":\"2.0\",\"id\":18446744073709551615,\"method\":\"x\"}"),
        4 => frame(format!("{{\"id\":{id},\"method\":\"workspace/executeCommand\"}}").as_bytes()),
        5 => frame(format!("[{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"x\"}}]").as_bytes()),
        6 => {
            let depth = rng.usize(129..2000);
            frame(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).as_bytes())
        }
        7 => format!("Content-Length: -{}\r\n\r\n{{}}", rng.u32(1..100)).into_bytes(),
        8 => b"Content-Type: application/vscode-jsonrpc\r\n\r\n{}".to_vec(),
        9 => b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
        10 => b"Content-Length: twelve\r\n\r\n{}".to_vec(),
        11 => b"Content-Length: 0\r\n\r\n".to_vec(),
        12 => format!("Content-Length: {}\r\n\r\n{{\"jsonrpc\":\"2.0\"", rng.u64(1_000..100_000_000_000)).into_bytes(),
        13 => {
            // A body declared shorter than it is.
            b"Content-Length: 7\r\n\r\n{\"jsonrpc\":\"2.0\",\"method\":\"initialized\"}".to_vec()
        }
        14 => (0..rng.usize(1..200)).map(|_| rng.u8(..)).filter(|b| *b != b'C' && *b != b'c').collect(),
        _ => frame(format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"$/missions/unknown\"}}").as_bytes()),
    }
}

#[test]
fn thousands_of_malformed_frames_never_stop_the_server() {
    let seed: u64 = std::env::var("MISSIONS_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    println!("fuzz seed: {seed} (MISSIONS_FUZZ_SEED={seed} replays this run)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = project();
    let mut editor = Editor::start(dir.path());
    editor.initialize(dir.path());
    let started = Instant::now();
    let frames = 3_000;
    for n in 0..frames {
        let bad = malformed(&mut rng);
        editor.send_raw(&bad);
        // A well-formed request right behind it is answered: the server is alive and in step.
        let response = editor
            .try_request("missions/ping", json!({"n": n}), Duration::from_secs(20))
            .unwrap_or_else(|| panic!("seed {seed}: no answer after frame {n}: {:?}", String::from_utf8_lossy(&bad)));
        assert_eq!(
            response["error"]["code"],
            -32601,
            "seed {seed}, frame {n} ({:?}): {response}",
            String::from_utf8_lossy(&bad)
        );
        assert!(started.elapsed() < Duration::from_secs(240), "seed {seed}: too slow at frame {n}");
    }
    assert!(editor.child.try_wait().unwrap().is_none(), "seed {seed}: the server exited");
    editor.stop();
}

#[test]
fn a_request_to_an_unknown_dollar_method_gets_method_not_found() {
    let dir = project();
    let mut editor = Editor::start(dir.path());
    editor.initialize(dir.path());
    let response = editor.request("$/missions/custom", json!({}));
    assert_eq!(response["error"]["code"], -32601, "{response}");
    editor.stop();
}

#[test]
fn exit_without_shutdown_exits_with_status_one() {
    let dir = project();
    let mut editor = Editor::start(dir.path());
    editor.initialize(dir.path());
    editor.notify("exit", Value::Null);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = editor.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_the_server_drives_is_paused_when_the_editor_closes() {
    use missions_tests::script::ScriptedModel;
    // Slow model turns, so the editor closes while a run is under way.
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::from_millis(300)).await;
    let dir = project_for(&model, "");
    with_editor(dir.path(), Vec::new(), move |mut editor, dir| {
        let started = editor.command("missions.start", json!({"text": "Add slugify"}));
        let id = started["result"]["missionId"].as_str().expect("a mission id").to_owned();
        editor.wait_for("the planner at work", |m| m["method"] == "$/progress" || m["method"] == "missions/didChange");
        editor.stop();
        let mission = read_json(&dir.join(".missions").join(&id).join("mission.json"));
        assert_eq!(mission["state"], "paused", "{mission}");
        assert_eq!(mission["pause_reason"], "user");
        assert_eq!(mission["detail"], "the editor closed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_offers_to_resume_a_mission_nothing_drives() {
    use missions_tests::script::ScriptedModel;
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::from_millis(30)).await;
    let dir = project_for(&model, "");
    // A CLI driver dies mid-feature: the mission is left running with nothing driving it.
    let mut command = missions_command(dir.path(), &["run", "--text", "Add slugify", "--approve"]);
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut driver = tokio::process::Command::from(command).spawn().unwrap();
    let id = wait_for_event(dir.path(), |e| e["type"] == "run_started" && e["feature"] == "F1").await;
    driver.start_kill().unwrap();
    driver.wait().await.unwrap();
    with_editor(dir.path(), vec![("nothing driving it", "Resume")], move |mut editor, _dir| {
        let offer = editor.wait_for_prompt("the offer to resume", &format!("Mission {id} was left running"));
        assert_eq!(offer["params"]["actions"][0]["title"], "Resume");
        // Answered Resume, the mission goes on to its next gate.
        editor.wait_for_prompt("the milestone gate", "waits for your acceptance");
        editor.stop();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dismissed_plan_prompt_is_not_a_dead_end() {
    use missions_tests::script::ScriptedModel;
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let dir = project_for(&model, "");
    with_editor(dir.path(), Vec::new(), move |mut editor, dir| {
        let id = editor.command("missions.start", json!({"text": "Add slugify"}))["result"]["missionId"]
            .as_str()
            .unwrap()
            .to_owned();
        // The gate's prompt comes and is dismissed (the editor answers nothing).
        editor.wait_for_prompt("the plan gate", "approval");
        let any_file = format!("file://{}", dir.join("textkit/core.py").display());
        let range = json!({"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}});
        let actions = editor.request(
            "textDocument/codeAction",
            json!({"textDocument": {"uri": any_file}, "range": range, "context": {"diagnostics": []}}),
        );
        let titles: Vec<&str> =
            actions["result"].as_array().unwrap().iter().filter_map(|a| a["title"].as_str()).collect();
        assert!(
            titles.contains(&format!("Missions: approve plan {id}").as_str())
                && titles.contains(&"Missions: open plan"),
            "{titles:?}"
        );
        let plan_md = format!("file://{}", dir.join(".missions").join(&id).join("plan.md").display());
        let lenses = editor.request("textDocument/codeLens", json!({"textDocument": {"uri": plan_md}}));
        assert_eq!(lenses["result"][0]["command"]["command"], "missions.approvePlan", "{lenses}");
        assert_eq!(editor.command("missions.openPlan", json!({"missionId": id}))["result"], json!({}));
        editor.wait_for("plan.md shown", |m| {
            m["method"] == "window/showDocument" && m["params"]["uri"].as_str().unwrap_or("").ends_with("plan.md")
        });
        // The action approves, and the mission goes on to its next gate.
        assert_eq!(editor.command("missions.approvePlan", json!({"missionId": id}))["result"], json!({}));
        editor.wait_for_prompt("the milestone gate", "waits for your acceptance");
        editor.stop();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_is_written_in_a_feedback_document_without_a_plugin() {
    use missions_tests::script::{Call, Script, ScriptRole, ScriptedModel, Turn};
    let base = slugify_script(Story::default());
    let script: Script = std::sync::Arc::new(move |call: &Call| {
        if call.role == ScriptRole::Boundary
            && call.first_message.contains("Also strip leading dashes")
            && call.first_line.contains("(round 2 of")
        {
            return Turn::call(
                "decide_milestone",
                json!({"decision": "correct", "notes": "strip dashes",
                       "corrections": [{"id": "M1-R1", "title": "strip leading dashes", "description": "Also strip leading dashes", "assertions": ["A1"]}]}),
            );
        }
        base(call)
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let dir = project_for(&model, "");
    with_editor(dir.path(), vec![("ready for your approval", "Approve")], move |mut editor, dir| {
        let id = editor.command("missions.start", json!({"text": "Add slugify"}))["result"]["missionId"]
            .as_str()
            .unwrap()
            .to_owned();
        editor.wait_for_prompt("the milestone gate", "waits for your acceptance");
        // The code action's command, as a plain client runs it: no feedback yet.
        let opened = editor.command("missions.rejectMilestone", json!({"missionId": id, "milestoneId": "M1"}));
        let path =
            std::path::PathBuf::from(opened["result"]["feedbackDocument"].as_str().expect("a feedback document"));
        assert!(path.ends_with(format!(".missions/{id}/feedback/M1.md")), "{opened}");
        editor.wait_for("the document shown", |m| {
            m["method"] == "window/showDocument"
                && m["params"]["uri"].as_str().unwrap_or("").ends_with("feedback/M1.md")
        });
        // The user writes under the template and saves.
        let template = std::fs::read_to_string(&path).unwrap();
        let text = format!("{template}Also strip leading dashes.\n");
        std::fs::write(&path, &text).unwrap();
        let uri = format!("file://{}", path.display());
        editor.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "markdown", "version": 1, "text": text}}),
        );
        editor.notify("textDocument/didSave", json!({"textDocument": {"uri": uri}}));
        editor.request("missions/ping", json!({}));
        let rejected = || {
            std::fs::read_to_string(dir.join(".missions").join(&id).join("events.jsonl"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("\"milestone_rejected\"") && l.contains("Also strip leading dashes."))
        };
        let started = std::time::Instant::now();
        while !rejected() {
            assert!(started.elapsed() < Duration::from_secs(30), "the saved feedback never rejected the milestone");
            std::thread::sleep(Duration::from_millis(50));
        }
        editor.stop();
    })
    .await;
}
