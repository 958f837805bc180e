//! A mission's life: started or opened by a front door, commands applied, and driven step by
//! step (planning, a feature, validation, the boundary) until a gate, a pause or an end.

use super::*;

/// A driver's scratch directory is `missions-tmp-<pid>-…` in the system's temporary
/// directory, removed when the mission is dropped; the pid lets the next driver recognise and
/// remove one whose process died without dropping it (a crash, a kill).
const SCRATCH_PREFIX: &str = "missions-tmp-";

/// How long a dead driver's scratch directory is left alone: a pid that does not exist here
/// may be a live driver's in another pid namespace sharing the same `/tmp` (a container), and
/// such a directory is written to while its mission runs.
const SCRATCH_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Removes from `dir` the scratch directories of drivers that are no longer running and have
/// not been touched for [`SCRATCH_GRACE`].
fn sweep_scratch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SCRATCH_PREFIX)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else { continue };
        if pid <= 0 || pid as u32 == std::process::id() {
            continue;
        }
        // Only a process that provably does not exist (not one this user may not signal).
        let dead =
            matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH));
        let stale = entry
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_dir)
            .and_then(|m| m.modified().ok())
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > SCRATCH_GRACE);
        if dead && stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Mission {
    pub(super) fn assemble(
        workspace: &Path,
        config: LoadedConfig,
        models: Models,
        options: Options,
        store: MissionStore,
        workspace_lock: Option<std::fs::File>,
    ) -> Result<Mission, EngineError> {
        sweep_scratch(&std::env::temp_dir());
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{SCRATCH_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(|e| EngineError::Io(format!("cannot make a temporary directory: {e}")))?;
        let mission_id = store.projection().mission.as_ref().map(|m| m.id.clone()).unwrap_or_default();
        let provider_names = models.by_role.iter().map(|(role, m)| (*role, m.provider.name().to_owned())).collect();
        // A change to the repository waits for the log: a resume explains at most one commit
        // past the last one the log recorded (`check_history`).
        let log = store.durability();
        let barrier = crate::git::Barrier::new(move || log.sync_needed().map_err(|e| e.to_string()));
        let shared = Shared {
            inbox: inbox_dir(workspace, &mission_id),
            mission_id,
            store: Mutex::new(store),
            git: Git::new(workspace).with_barrier(barrier),
            prices: PriceTable::with_overrides(&config.config.prices),
            progress: options.progress.clone(),
            appended: options.appended.clone(),
            provider_names,
            stop: Mutex::new(None),
            reserved: Mutex::new((0, 0.0)),
            min_output_tokens: config.config.budget.min_output_tokens(),
            held: Mutex::new(None),
        };
        Ok(Mission {
            workspace: workspace.to_owned(),
            config,
            models,
            options,
            shared: Arc::new(shared),
            workspace_lock,
            tmp,
        })
    }

    /// Starts a new mission on a clean working tree: creates and checks out
    /// `missions/<id>` from `HEAD`.
    pub fn start(
        workspace: &Path,
        config: LoadedConfig,
        models: Models,
        source: Source,
        auto_accept: bool,
        options: Options,
    ) -> Result<Mission, EngineError> {
        let git = Git::new(workspace);
        if !git.is_repository() {
            return Err(EngineError::NotARepository { path: workspace.to_owned() });
        }
        let base = git.head().map_err(|_| EngineError::NoCommits)?;
        let workspace_lock = take_workspace_lock(workspace)?;
        let dirty = git.dirty_files()?;
        if !dirty.is_empty() {
            return Err(EngineError::DirtyTree { files: dirty });
        }
        git.exclude_missions_dir()?;
        let title: String = source
            .text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("mission")
            .trim()
            .trim_start_matches('#')
            .trim()
            .chars()
            .take(100)
            .collect();
        let id = missions_core::ids::new_mission_id(&title);
        let branch = format!("missions/{id}");
        git.create_branch(&branch, &base)?;
        let created = Event::MissionCreated {
            id,
            title,
            source,
            branch,
            base_commit: base,
            auto_accept: auto_accept || config.config.mission.auto_accept,
            max_tokens: config.config.budget.max_tokens,
            max_usd: config.config.budget.max_usd,
        };
        let store = MissionStore::create(workspace, created)?;
        Mission::assemble(workspace, config, models, options, store, Some(workspace_lock))
    }

    /// Opens mission `id` for commands and driving. Fails with `StoreError::Locked` when another
    /// process is driving it (send commands through its inbox instead).
    pub fn open(
        workspace: &Path,
        id: &str,
        config: LoadedConfig,
        models: Models,
        options: Options,
    ) -> Result<(Mission, Vec<String>), EngineError> {
        let dir = store::mission_dir(workspace, id)?;
        let (store, warnings) = MissionStore::open(&dir)?;
        let mission = Mission::assemble(workspace, config, models, options, store, None)?;
        // Finishing an interrupted rollback writes the tree, which only the workspace's writer
        // may do; a busy workspace leaves it to its driver.
        if let Ok(lock) = take_workspace_lock(workspace) {
            mission.finish_interrupted_rollback()?;
            drop(lock);
        }
        // Caps edited in the configuration take effect when the mission is next opened, so a
        // mission paused for budget can be resumed after raising them.
        let record = mission.shared.mission()?;
        let budget = &mission.config.config.budget;
        if !record.state.is_terminal()
            && (record.budget.max_tokens != budget.max_tokens || record.budget.max_usd != budget.max_usd)
        {
            mission.shared.append(Event::BudgetSet { max_tokens: budget.max_tokens, max_usd: budget.max_usd })?;
        }
        Ok((mission, warnings))
    }

    /// Applies `commands`, in order, to mission `id` from a front door (CLI or language server).
    /// When another process drives the mission they go through its inbox (SPEC §2 rule 8), each
    /// waiting up to [`DRIVER_ACK_LIMIT`] for the driver's verdict, and a refused command stops the rest.
    /// Otherwise the mission is opened here and returned, ready to be driven on once `applied`
    /// says every command held.
    ///
    /// `resume` of a mission a crash left mid-way (neither paused nor finished) is not applied:
    /// driving it on is the resume. A finished mission still refuses it.
    pub fn control(
        workspace: &Path,
        id: &str,
        config: LoadedConfig,
        models: Models,
        options: Options,
        commands: Vec<Command>,
    ) -> Result<Control, EngineError> {
        let (mission, warnings) = match Mission::open(workspace, id, config, models, options) {
            Ok(opened) => opened,
            Err(EngineError::Store(StoreError::Locked { holder, .. })) => {
                let inbox = inbox_dir(workspace, id);
                let mut verdicts = Vec::with_capacity(commands.len());
                for command in &commands {
                    let verdict = wait_for_ack(&write_inbox(&inbox, command)?, DRIVER_ACK_LIMIT);
                    let refused = matches!(verdict, Some(Err(_)));
                    verdicts.push(verdict);
                    if refused {
                        break;
                    }
                }
                return Ok(Control::Queued { holder, verdicts });
            }
            Err(error) => return Err(error),
        };
        // A command that drives on is checked against the tree before anything is recorded:
        // a refused command changes nothing.
        if commands.iter().any(Command::drives_on)
            && let Err(error) = mission.ready_to_drive()
        {
            return Ok(Control::Opened { mission: Box::new(mission), warnings, applied: Err(error) });
        }
        let applied = commands.into_iter().try_for_each(|command| {
            let state = mission.projection().mission.as_ref().map(|m| m.state);
            let mid_way = state != Some(MissionState::Paused) && !state.is_some_and(|s| s.is_terminal());
            if command == Command::Resume && mid_way { Ok(()) } else { mission.apply(command) }
        });
        Ok(Control::Opened { mission: Box::new(mission), warnings, applied })
    }

    /// Queues `command` for the process driving mission `id` and waits up to `limit` for its
    /// verdict. A command no driver took in time is withdrawn (`None`), so it cannot surprise
    /// a later driver.
    pub fn ask_driver(workspace: &Path, id: &str, command: &Command, limit: Duration) -> Option<Result<(), String>> {
        let queued = write_inbox(&inbox_dir(workspace, id), command).ok()?;
        let verdict = wait_for_ack(&queued, limit);
        if verdict.is_none() && std::fs::remove_file(&queued).is_err() {
            // Taken between the wait and the withdrawal: its verdict is on its way.
            return wait_for_ack(&queued, Duration::from_secs(1));
        }
        verdict
    }

    pub fn id(&self) -> &str {
        &self.shared.mission_id
    }

    /// The projection as it stands (a snapshot: cheap to take, and unchanged by what the
    /// mission records after).
    pub fn projection(&self) -> Arc<Projection> {
        self.shared.projection()
    }

    /// Applies a command; once this returns `Ok`, what it recorded is durable.
    pub fn apply(&self, command: Command) -> Result<(), EngineError> {
        let result = self.shared.apply(command);
        let flushed = lock(&self.shared.store).flush();
        result?;
        Ok(flushed?)
    }

    /// Where the mission stands, if it is not mid-way (a gate or an end).
    pub fn outcome(&self) -> Result<Option<Outcome>, EngineError> {
        let projection = self.shared.projection();
        let mission = self.shared.mission()?;
        Ok(Outcome::from_mission(&mission, rules::current_milestone(&projection).cloned().map(|m| m.id)))
    }

    /// Takes the workspace's writer lock, checks out the mission's branch, finishes a
    /// rollback a crash interrupted, and refuses a tree holding changes that are not the
    /// mission's: driving may reset the tree, and the user's work is never the engine's to
    /// touch.
    pub(super) fn prepare_to_drive(&mut self) -> Result<(), EngineError> {
        crate::git::resolve_program();
        if self.workspace_lock.is_none() {
            self.workspace_lock = Some(take_workspace_lock(&self.workspace)?);
        }
        // Commands a dead driver started may still be running (and writing into the tree);
        // they die before anything else happens.
        let killed = missions_tools::command::kill_recorded(&self.process_registry());
        if !killed.is_empty() {
            self.shared.progress(None, None, None, Step::OrphansStopped { count: killed.len() });
        }
        let mission = self.shared.mission()?;
        let git = &self.shared.git;
        // A git killed mid-write (with a driver killed with it) leaves its lock behind, and
        // every later git command would fail; before anything else runs, such a lock is
        // removed when it is provably stale, and a live one stops the drive.
        let (removed, live) = git.remove_stale_locks()?;
        for lock in removed {
            let removed = Step::StaleLockRemoved { path: lock.display().to_string() };
            self.shared.progress(None, None, None, removed);
        }
        if let Some(lock) = live.first() {
            return Err(EngineError::Refused(format!(
                "{} is held by a running git process; let it finish (or end it), then resume",
                lock.display()
            )));
        }
        if git.current_branch()? != mission.branch {
            let dirty = git.dirty_files()?;
            if !dirty.is_empty() {
                return Err(EngineError::DirtyTree { files: dirty });
            }
            git.checkout(&mission.branch)?;
        }
        self.finish_interrupted_rollback()?;
        self.ready_to_drive()?;
        if let Some(launcher) = &self.options.sandbox {
            match missions_tools::sandbox::probe(launcher, &self.workspace) {
                Some(report) => self.shared.progress(None, None, None, Step::Sandbox { summary: report.summary() }),
                None => tracing::warn!("the sandbox launcher did not report; commands may run unconfined"),
            }
        }
        Ok(())
    }

    /// A rollback whose event was recorded but whose effects a crash cut short is finished
    /// (its saved ref created, the branch reset) and the mission paused, as the rollback
    /// itself would have left it.
    pub(super) fn finish_interrupted_rollback(&self) -> Result<(), EngineError> {
        let projection = self.shared.projection();
        let Some((saved, from, to)) = &projection.last_rollback else { return Ok(()) };
        if self.shared.git.ref_exists(saved) {
            return Ok(());
        }
        self.shared.finish_rollback(saved, from, to)?;
        if self.shared.mission()?.state != MissionState::Paused {
            self.shared.pause(
                PauseReason::User,
                format!("finished a rollback that was interrupted; the dropped commits are kept at {saved}"),
            )?;
        }
        Ok(())
    }

    /// Where the mission stands if it needs no driving (a gate, a pause, an end).
    pub(super) fn settled(&self) -> Result<Option<Outcome>, EngineError> {
        let mission = self.shared.mission()?;
        if mission.state == MissionState::AwaitingAcceptance && mission.auto_accept {
            return Ok(None);
        }
        self.outcome()
    }

    /// Drives the mission until it reaches a gate, pauses, fails or completes.
    pub async fn drive(&mut self) -> Result<Outcome, EngineError> {
        // A mission at a gate or at its end is only told about, never touched.
        self.shared.process_inbox(|_| true);
        if let Some(outcome) = self.settled()? {
            lock(&self.shared.store).flush()?;
            return Ok(outcome);
        }
        self.prepare_to_drive()?;
        *lock(&self.shared.stop) = None;
        loop {
            self.shared.process_inbox(|_| true);
            *lock(&self.shared.stop) = None;
            // Each step may wait long (on models, on commands): what people look at is brought
            // up to date before it, in the background.
            lock(&self.shared.store).refresh_views();
            let projection = self.shared.projection();
            let mission = self.shared.mission()?;
            match mission.state {
                MissionState::Planning => self.plan().await?,
                MissionState::Running => self.step(projection).await?,
                MissionState::Validating => self.validate(&projection).await?,
                MissionState::AwaitingAcceptance if mission.auto_accept => {
                    self.shared.apply(Command::Accept { milestone: None })?
                }
                MissionState::AwaitingApproval
                | MissionState::AwaitingAcceptance
                | MissionState::Paused
                | MissionState::Completed
                | MissionState::Failed
                | MissionState::Cancelled => {
                    let current = rules::current_milestone(&projection).cloned().map(|m| m.id);
                    if let Some(outcome) = Outcome::from_mission(&mission, current) {
                        lock(&self.shared.store).flush()?;
                        return Ok(outcome);
                    }
                }
            }
        }
    }

    /// Turns a stop into the mission's state.
    pub(super) fn stopped(&self, stop: Stop) -> Result<(), EngineError> {
        match stop {
            Stop::Budget(detail) => self.shared.pause(PauseReason::Budget, detail),
            Stop::Conflict(path) => self.shared.pause(
                PauseReason::Conflict,
                format!("{path} has unsaved changes in the editor; save or discard them, then resume"),
            ),
            Stop::Provider(detail) => self.shared.pause(PauseReason::Provider, detail),
            // Already recorded by the command that asked for it.
            Stop::Paused | Stop::Cancelled => Ok(()),
        }
    }

    /// Planning: the plan and its contract, then (SPEC §2 rule 9) the acceptance tests of its
    /// `acceptance` assertions, before the plan gate. A plan already submitted (the test author
    /// was interrupted) is not made again.
    pub(super) async fn plan(&mut self) -> Result<(), EngineError> {
        if self.shared.projection().plan.is_none() && !self.make_plan().await? {
            return Ok(());
        }
        let projection = self.shared.projection();
        let needed: BTreeMap<String, String> = projection
            .contract
            .assertions
            .iter()
            .filter(|a| !projection.acceptance_tests.contains_key(&a.id))
            .filter_map(|a| match &a.check {
                Check::Acceptance { behaviour, .. } => Some((a.id.clone(), behaviour.clone())),
                _ => None,
            })
            .collect();
        if !needed.is_empty() {
            match self.write_acceptance_tests(&projection, needed).await? {
                RunEnd::Finished(tests) => self.shared.append(Event::AcceptanceTestsRecorded { tests })?,
                RunEnd::GaveUp(reason) => {
                    let detail = format!("the test author could not write the acceptance tests: {reason}");
                    return self.shared.set_state(MissionState::Failed, None, Some(detail));
                }
                RunEnd::Stopped(stop) => return self.stopped(stop),
            }
        }
        self.shared.progress(None, None, Some(Role::Orchestrator), Step::PlanSubmitted);
        self.shared.set_state(MissionState::AwaitingApproval, None, None)
    }

    /// A way to try commands on commit `head` before any work, putting the tree back after:
    /// what they left is saved as `Some(what)`, or dropped unsaved with `None` (for acceptance
    /// tests, see [`Shared::discard_to`]).
    fn trial(&self, head: &str, what: Option<&'static str>) -> Result<crate::terminals::Trial, EngineError> {
        let shared = self.shared.clone();
        let head = head.to_owned();
        Ok(crate::terminals::Trial {
            environment: self.command_environment(None, self.run_tmp()?),
            timeout: Duration::from_secs(self.config.config.mission.max_command_timeout_s.max(1)),
            recorder: self.work_log(),
            revert: Arc::new(move || {
                let reverted = match what {
                    Some(why) => shared.revert_to(&head, why),
                    None => shared.discard_to(&head),
                };
                reverted.map(drop).map_err(|e| e.to_string())
            }),
        })
    }

    /// The planning run; `false` when it did not end with a plan (the mission failed or
    /// stopped, as recorded).
    async fn make_plan(&mut self) -> Result<bool, EngineError> {
        let mission = self.shared.mission()?;
        if self.shared.projection().baseline.is_none() {
            self.record_baseline().await?;
        }
        let values = BTreeMap::from([
            ("project_instructions", prompts::project_instructions(&self.workspace)),
            ("checks", self.checks_text()),
            ("repo_map", self.repo_map(&mission.source.text)),
        ]);
        let system = prompts::render(Template::OrchestratorPlan, &self.workspace, &values)?;
        let first = messages::planning(&mission.source);
        let tmp = self.run_tmp()?;
        // The planner may try the project's commands (SPEC §5); what they leave is reverted.
        let tools = self.toolbox(ToolSet::Planner, &mission.source.text, tmp)?;
        let head = self.shared.git.head()?;
        let mut terminal = SubmitPlan {
            dry_run: Some(crate::terminals::DryRun {
                trial: self.trial(&head, Some("left by the plan's dry run"))?,
                refused: None,
            }),
        };
        let limit = self.options.limits.planning_turns;
        let request = RunRequest {
            role: Role::Orchestrator,
            label: "plan".into(),
            system,
            first_message: first,
            max_turns: limit,
            milestone: None,
            feature: None,
        };
        let end = self.run(request, &tools, &mut terminal).await?;
        // What the planner's commands and the dry run left in the tree goes, saved first.
        self.shared.revert_to(&head, "left by the planning run's commands")?;
        match end {
            RunEnd::Finished((plan, contract, tried)) => {
                self.shared.append(Event::PlanSubmitted { plan, contract })?;
                self.shared.append(Event::DryRunRecorded { results: tried })?;
                Ok(true)
            }
            RunEnd::GaveUp(reason) => {
                self.shared.set_state(MissionState::Failed, None, Some(format!("planning failed: {reason}")))?;
                Ok(false)
            }
            RunEnd::Stopped(stop) => {
                self.stopped(stop)?;
                Ok(false)
            }
        }
    }

    /// The test author's run for the `needed` acceptance assertions (id → behaviour), from the
    /// plan and the contract alone; its tests are tried on the base commit, where each must
    /// fail, and kept out of the tree.
    async fn write_acceptance_tests(
        &mut self,
        projection: &Projection,
        needed: BTreeMap<String, String>,
    ) -> Result<RunEnd<Vec<missions_core::store::AcceptanceTest>>, EngineError> {
        let focus: String = needed.values().cloned().collect::<Vec<_>>().join("\n");
        let values = BTreeMap::from([
            ("project_instructions", prompts::project_instructions(&self.workspace)),
            ("repo_map", self.repo_map(&focus)),
        ]);
        let system = prompts::render(Template::TestAuthor, &self.workspace, &values)?;
        let first = messages::test_author(projection, &needed);
        let tmp = self.run_tmp()?;
        // Read-only tools and `run_command` (reverted), as the planner has.
        let tools = self.toolbox(ToolSet::Planner, &focus, tmp)?;
        let head = self.shared.git.head()?;
        let trial = self.trial(&head, None)?;
        let mut terminal = crate::acceptance::SubmitAcceptanceTests::new(self.workspace.clone(), needed, trial);
        let request = RunRequest {
            role: Role::TestAuthor,
            label: "test-author".into(),
            system,
            first_message: first,
            max_turns: self.options.limits.planning_turns,
            milestone: None,
            feature: None,
        };
        let end = self.run(request, &tools, &mut terminal).await?;
        // Not saved: the test author's leftovers may be drafts of the tests.
        self.shared.discard_to(&head)?;
        Ok(end)
    }

    /// One step of a running milestone: the next feature, or on to validation.
    pub(super) async fn step(&mut self, projection: Arc<Projection>) -> Result<(), EngineError> {
        let Some(milestone) = rules::current_milestone(&projection).cloned() else {
            return self.shared.set_state(MissionState::Completed, None, None);
        };
        if !projection.milestone_bases.contains_key(&milestone.id) {
            let head = self.shared.git.head()?;
            self.shared.append(Event::MilestoneStarted { milestone: milestone.id.clone(), base_commit: head })?;
        }
        match milestone.features.iter().find(|f| f.status != WorkStatus::Done).cloned() {
            Some(feature) => self.work(projection, &milestone, &feature).await,
            None => {
                self.shared.append(Event::MilestoneStatusChanged {
                    milestone: milestone.id.clone(),
                    status: WorkStatus::Validating,
                })?;
                self.shared.set_state(MissionState::Validating, None, None)
            }
        }
    }
}

#[cfg(test)]
mod scratch_tests {
    use super::*;

    #[test]
    fn scratch_directories_of_dead_drivers_are_removed_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let names = [
            format!("{SCRATCH_PREFIX}{dead}-abc"),
            format!("{SCRATCH_PREFIX}{}-mine", std::process::id()),
            format!("{SCRATCH_PREFIX}1-init"),
            "missions-other".to_owned(),
            format!("{SCRATCH_PREFIX}notapid"),
        ];
        let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(48 * 3600);
        for name in &names {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("f"), "x").unwrap();
            std::fs::File::open(dir.path().join(name)).unwrap().set_modified(two_days_ago).unwrap();
        }
        // A dead driver's directory touched recently is left alone.
        let recent = format!("{SCRATCH_PREFIX}{dead}-recent");
        std::fs::create_dir(dir.path().join(&recent)).unwrap();
        sweep_scratch(dir.path());
        let left: Vec<bool> = names.iter().map(|n| dir.path().join(n).exists()).collect();
        assert_eq!(left, vec![false, true, true, true, true]);
        assert!(dir.path().join(recent).exists());
    }
}
