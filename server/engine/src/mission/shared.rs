//! What every run of a mission shares: the store, the inbox through which other processes
//! send commands, the application of commands to the mission's state, and the hooks the
//! agent loop calls for budget, usage, progress and control.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use missions_core::mission::{FindingDraft, Mission as MissionRecord, MissionState, PauseReason, Role};
use missions_core::model::Usage;
use missions_core::pricing::PriceTable;
use missions_core::store::{self, Event, MissionStore, Projection};
use missions_core::sync::lock;
use serde_json::Value;

use crate::agent::{RunHooks, Stop};
use crate::git::Git;

use super::rules::{self, Ruling};
use super::{Command, EngineError, Progress, Step};

/// Everything runs share: the store and the channel for control commands.
pub(super) struct Shared {
    pub(super) mission_id: String,
    pub(super) store: Mutex<MissionStore>,
    pub(super) inbox: PathBuf,
    pub(super) git: Git,
    pub(super) prices: PriceTable,
    pub(super) progress: Arc<dyn Fn(&Progress) + Send + Sync>,
    pub(super) provider_names: BTreeMap<Role, String>,
    /// A pause or cancel applied from the inbox while a run was going on.
    pub(super) stop: Mutex<Option<Stop>>,
    /// Tokens and dollars of model calls in flight, reserved against the budget caps so that
    /// runs calling in parallel cannot pass a cap together.
    pub(super) reserved: Mutex<(u64, f64)>,
    /// The least output a call may be granted before the mission pauses for budget.
    pub(super) min_output_tokens: u32,
}

impl Shared {
    pub(super) fn append(&self, event: Event) -> Result<(), EngineError> {
        lock(&self.store).append(event)?;
        Ok(())
    }

    pub(super) fn projection(&self) -> Projection {
        lock(&self.store).projection().clone()
    }

    pub(super) fn mission(&self) -> Result<MissionRecord, EngineError> {
        self.projection().mission.ok_or_else(|| EngineError::Io("the mission log has no mission".into()))
    }

    /// Reports `step` at a place in the mission, outside any agent run.
    pub(super) fn progress(&self, milestone: Option<&str>, feature: Option<&str>, role: Option<Role>, step: Step) {
        (self.progress)(&Progress {
            mission: self.mission_id.clone(),
            milestone: milestone.map(str::to_owned),
            feature: feature.map(str::to_owned),
            role,
            run: None,
            step,
        });
    }

    /// The next free ref `refs/missions/<id>/<kind>/<n>`, numbered from 1.
    pub(super) fn next_ref(&self, kind: &str) -> Result<String, EngineError> {
        let prefix = format!("refs/missions/{}/{kind}/", self.mission_id);
        let taken = self.git.refs_under(&prefix)?;
        let highest = taken.iter().filter_map(|r| r.strip_prefix(&prefix)?.parse::<u64>().ok()).max().unwrap_or(0);
        Ok(format!("{prefix}{}", highest + 1))
    }

    /// Saves whatever uncommitted changes the tree holds (untracked files included, ignored
    /// ones never) under `refs/missions/<id>/saved/<n>` before the engine resets it, so nothing
    /// in the tree is ever lost to a reset, and says so. Returns the ref, if there was anything
    /// to save.
    pub(super) fn save_tree(&self, why: &str) -> Result<Option<String>, EngineError> {
        let name = self.next_ref("saved")?;
        match self.git.snapshot(&name, why)? {
            Some(_) => {
                self.progress(None, None, None, Step::TreeSaved { at: name.clone(), why: why.to_owned() });
                Ok(Some(name))
            }
            None => Ok(None),
        }
    }

    /// Puts the tree back to `head` when it holds only the mission's own recorded changes
    /// (saved first); refuses when anything else changed.
    pub(super) fn revert_to(&self, head: &str, why: &str) -> Result<(), EngineError> {
        if self.git.dirty_files()?.is_empty() {
            return Ok(());
        }
        let foreign = self.foreign_changes(&self.projection())?;
        if !foreign.is_empty() {
            return Err(EngineError::ForeignChanges { files: foreign });
        }
        self.save_tree(why)?;
        self.git.reset_hard(head)?;
        Ok(())
    }

    /// The tree's changes that are not the unfinished step's own work (see
    /// `worktree::foreign_changes`).
    pub(super) fn foreign_changes(&self, projection: &Projection) -> Result<Vec<String>, EngineError> {
        let dirty = self.git.dirty_files()?;
        let root = self.git.root().to_owned();
        Ok(super::worktree::foreign_changes(&dirty, &projection.unfinished_work, |path| {
            super::worktree::digest(&root, path)
        }))
    }

    pub(super) fn set_state(
        &self,
        state: MissionState,
        pause_reason: Option<PauseReason>,
        detail: Option<String>,
    ) -> Result<(), EngineError> {
        self.append(Event::StateChanged { state, pause_reason, detail })
    }

    pub(super) fn pause(&self, reason: PauseReason, detail: String) -> Result<(), EngineError> {
        self.progress(None, None, None, Step::Paused { reason, detail: detail.clone() });
        self.set_state(MissionState::Paused, Some(reason), Some(detail))
    }

    pub(super) fn next_finding_id(projection: &Projection) -> String {
        format!("finding-{}", projection.findings.len() + 1)
    }

    /// Records `draft` as the next open finding; returns its id.
    pub(super) fn record_finding(&self, draft: FindingDraft) -> Result<String, EngineError> {
        let id = Shared::next_finding_id(&self.projection());
        self.append(Event::FindingRecorded { finding: draft.into_finding(id.clone()) })?;
        Ok(id)
    }

    /// Applies one command to the mission's state: [`rules::decide`] says what it records,
    /// and this carries out what only a driver can (stopping a run in flight, ticking the
    /// backlog item, a rollback's git work).
    pub(super) fn apply(&self, command: Command) -> Result<(), EngineError> {
        let projection = self.projection();
        let events = match rules::decide(&projection, &command).map_err(|r| EngineError::Refused(r.0))? {
            Ruling::Nothing => return Ok(()),
            Ruling::RollBack { milestone, base } => return self.rollback(&projection, &milestone, &base),
            Ruling::Record(events) => events,
        };
        match &command {
            Command::Accept { .. } => {
                let accepted = events.iter().find_map(|e| match e {
                    Event::MilestoneAccepted { milestone } => Some(milestone.clone()),
                    _ => None,
                });
                let last = accepted.as_deref().is_some_and(|m| rules::is_last_milestone(&projection, m));
                if last && let Some(mission) = &projection.mission {
                    // The tick is a courtesy: it never stands between the user and acceptance.
                    if let Err(error) = self.tick_backlog_item(mission) {
                        tracing::warn!("the backlog item was not ticked: {error}");
                    }
                }
                for event in events {
                    self.append(event)?;
                }
                self.progress(accepted.as_deref(), None, None, Step::MilestoneAccepted { mission_complete: last });
                return Ok(());
            }
            Command::Pause { note } => {
                *lock(&self.stop) = Some(Stop::Paused);
                let detail = note.as_deref().unwrap_or("paused by the user");
                let step = Step::Paused { reason: PauseReason::User, detail: detail.to_owned() };
                self.progress(None, None, None, step);
            }
            Command::Cancel => *lock(&self.stop) = Some(Stop::Cancelled),
            _ => {}
        }
        for event in events {
            self.append(event)?;
        }
        Ok(())
    }

    /// Ticks the box of the Markdown backlog item the mission came from, as the last commit of
    /// its branch (SPEC §6). An item that moved or changed since is left alone.
    fn tick_backlog_item(&self, mission: &MissionRecord) -> Result<(), EngineError> {
        let Some(item) = mission.source.item_id.as_deref() else { return Ok(()) };
        let Some((path, line)) = item.rsplit_once(':') else { return Ok(()) };
        let Ok(line) = line.parse::<u32>() else { return Ok(()) };
        let file = self.git.root().join(path);
        let Ok(text) = std::fs::read_to_string(&file) else { return Ok(()) };
        let title = mission.source.text.lines().next().unwrap_or_default().trim().trim_start_matches('#').trim();
        let Some(ticked) = crate::backlog::tick(&text, line, title) else { return Ok(()) };
        if self.git.current_branch()? != mission.branch || !self.git.dirty_files()?.is_empty() {
            return Ok(());
        }
        std::fs::write(&file, &ticked).map_err(|e| EngineError::Io(format!("{path}: {e}")))?;
        let subject = format!("backlog: tick {title}");
        // Only the backlog file goes into the commit, whatever else appeared meanwhile.
        match self.git.commit_paths(&subject, &[("Mission-Id", &self.mission_id)], &[path.to_owned()]) {
            Ok(commit) => self.append(Event::BacklogItemTicked { commit }),
            Err(error) => {
                // Put the file back as it was: the tree stays the mission's last commit.
                let _ = std::fs::write(&file, &text);
                Err(error.into())
            }
        }
    }

    /// Takes the branch back to `base`, where `milestone` started ([`rules::decide`] allowed
    /// it), keeping the dropped commits under a ref.
    fn rollback(&self, projection: &Projection, milestone: &str, base: &str) -> Result<(), EngineError> {
        let mission = projection.mission.as_ref().ok_or_else(|| EngineError::Io("no mission".into()))?;
        let base = base.to_owned();
        // An unfinished step's recorded changes are the mission's own; anything else is the
        // user's, and a rollback never throws that away.
        let foreign = self.foreign_changes(projection)?;
        if !foreign.is_empty() {
            return Err(EngineError::ForeignChanges { files: foreign });
        }
        if !self.git.dirty_files()?.is_empty() {
            self.save_tree("an unfinished step's changes, set aside by a rollback")?;
        }
        let branch = self.git.current_branch()?;
        if branch != mission.branch {
            return Err(EngineError::Refused(format!(
                "the mission's branch {} is not checked out (on {branch})",
                mission.branch
            )));
        }
        let head = self.git.head()?;
        let saved = format!("refs/missions/{}/rolled-back/{}", mission.id, projection.rollbacks + 1);
        // The fact first, then its effects, which `finish_rollback` can redo: a crash between
        // the two is completed on the next drive instead of leaving the log and the branch at
        // odds.
        self.append(Event::MilestoneRolledBack {
            milestone: milestone.to_owned(),
            from_commit: head.clone(),
            to_commit: base.clone(),
            saved_ref: saved.clone(),
        })?;
        self.finish_rollback(&saved, &head, &base)?;
        self.pause(
            PauseReason::User,
            format!(
                "rolled back to the start of {milestone}; the dropped commits are kept at {saved}. Resume to rebuild it"
            ),
        )
    }

    /// The effects of a recorded rollback; harmless to repeat.
    pub(super) fn finish_rollback(&self, saved: &str, from: &str, to: &str) -> Result<(), EngineError> {
        self.git.create_ref(saved, from)?;
        let head = self.git.head()?;
        if head == from {
            let foreign = self.foreign_changes(&self.projection())?;
            if !foreign.is_empty() {
                return Err(EngineError::ForeignChanges { files: foreign });
            }
            self.save_tree("changes found while finishing a rollback")?;
            self.git.reset_hard(to)?;
        }
        Ok(())
    }

    /// Applies pause, cancel and course corrections that arrived while a run is going on;
    /// other commands stay in the inbox for the next step.
    pub(super) fn poll_control(&self) -> Option<Stop> {
        if let Some(stop) = lock(&self.stop).clone() {
            return Some(stop);
        }
        self.process_inbox(|command| {
            matches!(
                command,
                Command::Pause { .. }
                    | Command::Cancel
                    | Command::CourseCorrect { .. }
                    | Command::DismissFinding { .. }
                    | Command::Waive { .. }
            )
        });
        lock(&self.stop).clone()
    }

    /// Applies the inbox's commands that `now` accepts, oldest first; each applied command
    /// file is replaced by a `.done` file recording whether it took effect, which the process
    /// that queued it waits for.
    pub(super) fn process_inbox(&self, now: impl Fn(&Command) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.inbox) else { return };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for file in files {
            let command = match std::fs::read_to_string(&file).map(|text| serde_json::from_str::<Command>(&text)) {
                Ok(Ok(command)) => command,
                Ok(Err(error)) => {
                    acknowledge(&file, Err(format!("not a command: {error}")));
                    continue;
                }
                Err(_) => continue,
            };
            if !now(&command) {
                continue;
            }
            let result = self.apply(command).map_err(|error| error.to_string());
            if let Err(error) = &result {
                tracing::warn!("inbox command not applied: {error}");
            }
            acknowledge(&file, result);
        }
    }
}

/// Replaces an inbox command file by its `.done` acknowledgement.
fn acknowledge(file: &Path, result: Result<(), String>) {
    let done = file.with_extension("done");
    let body = match result {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(error) => serde_json::json!({"ok": false, "error": error}),
    };
    if store::write_atomically(&done, body.to_string().as_bytes()).is_ok() {
        let _ = std::fs::remove_file(file);
    }
}

/// Queues `command` for the process driving the mission.
pub fn write_inbox(inbox: &Path, command: &Command) -> Result<PathBuf, EngineError> {
    std::fs::create_dir_all(inbox).map_err(|e| EngineError::Io(format!("{}: {e}", inbox.display())))?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let name = format!("{nanos:024}-{:04x}.json", fastrand::u16(..));
    let path = inbox.join(name);
    let text = serde_json::to_string(command).map_err(|e| EngineError::Io(e.to_string()))?;
    store::write_atomically(&path, text.as_bytes())?;
    Ok(path)
}

/// Waits up to `limit` for the driver to apply the queued command at `queued`: `Some(Ok)` it
/// took effect, `Some(Err)` it was refused (with why), `None` no driver picked it up.
pub fn wait_for_ack(queued: &Path, limit: Duration) -> Option<Result<(), String>> {
    let done = queued.with_extension("done");
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Ok(text) = std::fs::read_to_string(&done) {
            let _ = std::fs::remove_file(&done);
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Some(if value["ok"].as_bool() == Some(true) {
                Ok(())
            } else {
                Err(value["error"].as_str().unwrap_or("refused").to_owned())
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// One run's view of the shared state, implementing the agent loop's hooks.
pub(super) struct RunScope<'a> {
    pub(super) shared: &'a Shared,
    pub(super) milestone: Option<String>,
    pub(super) feature: Option<String>,
    pub(super) run_id: String,
    /// What this run's call in flight reserved against the caps.
    pub(super) reservation: Mutex<(u64, f64)>,
}

impl RunHooks for RunScope<'_> {
    fn before_call(&self, role: Role, model: &str, input_tokens: u64, max_output_tokens: u32) -> Result<u32, Stop> {
        let projection = self.shared.projection();
        let Some(mission) = projection.mission else { return Ok(max_output_tokens) };
        let budget = mission.budget;
        let mut reserved = lock(&self.shared.reserved);
        // A model without a known price cannot be estimated in dollars; the token cap still
        // holds for it.
        let cost = |input: u64, output: u64| {
            self.shared.prices.cost(model, model, &Usage { input, output, ..Usage::default() })
        };
        // SPEC §2 rule 7.
        let ask = rules::BudgetAsk {
            max_tokens: budget.max_tokens,
            used_tokens: budget.used_tokens,
            max_usd: budget.max_usd,
            used_usd: budget.used_usd,
            reserved_tokens: reserved.0,
            reserved_usd: reserved.1,
            input_tokens,
            max_output_tokens,
            min_output_tokens: self.shared.min_output_tokens,
            input_usd: cost(input_tokens, 0),
            usd_per_million_output: cost(0, 1_000_000),
        };
        let granted = rules::grant_output(&ask).map_err(|why| Stop::Budget(format!("the next {role} call {why}")))?;
        let granted = u64::from(granted);
        let estimate = input_tokens + granted;
        let estimate_usd = cost(input_tokens, granted).unwrap_or(0.0);
        reserved.0 += estimate;
        reserved.1 += estimate_usd;
        *lock(&self.reservation) = (estimate, estimate_usd);
        Ok(u32::try_from(granted).unwrap_or(max_output_tokens))
    }

    fn after_call(&self, role: Role, run_id: &str, model: &str, usage: &Usage, cost_usd: Option<f64>) {
        let (tokens, usd) = std::mem::take(&mut *lock(&self.reservation));
        {
            let mut reserved = lock(&self.shared.reserved);
            reserved.0 = reserved.0.saturating_sub(tokens);
            reserved.1 = (reserved.1 - usd).max(0.0);
        }
        if usage.total() == 0 && cost_usd.is_none() {
            return;
        }
        let event = Event::UsageRecorded {
            role,
            run_id: run_id.to_owned(),
            provider: self.shared.provider_names.get(&role).cloned().unwrap_or_default(),
            model: model.to_owned(),
            usage: *usage,
            cost_usd,
        };
        if let Err(error) = self.shared.append(event) {
            tracing::error!("cannot record usage: {error}");
        }
    }

    fn on_tool(&self, role: Role, name: &str, input: &Value) {
        let detail = ["command", "path", "pattern", "url", "name"]
            .iter()
            .find_map(|key| input.get(*key).and_then(Value::as_str))
            .unwrap_or_default();
        (self.shared.progress)(&Progress {
            mission: self.shared.mission_id.clone(),
            milestone: self.milestone.clone(),
            feature: self.feature.clone(),
            role: Some(role),
            run: Some(self.run_id.clone()),
            step: Step::ToolCalled { tool: name.to_owned(), detail: detail.chars().take(80).collect() },
        });
    }

    fn interrupted(&self) -> Option<Stop> {
        self.shared.poll_control()
    }
}
