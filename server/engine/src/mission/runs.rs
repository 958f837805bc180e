//! One agent run: its tools, its commands' environment and sandbox, its transcript, and the
//! record of its start and end.

use super::*;

impl Mission {
    /// The environment of commands run for `set` (`None`: the engine's own checks). The
    /// user tester's processes serve on loopback and are reached from outside their sandbox,
    /// so its commands keep the network namespace; everything else follows the configuration.
    pub(super) fn command_environment(&self, set: Option<ToolSet>, tmp: &Path) -> CommandEnvironment {
        let allow_network = self.config.config.mission.allow_network || set == Some(ToolSet::UserTester);
        CommandEnvironment {
            root: self.workspace.clone(),
            secret_env: self.config.secret_env_vars(),
            redactor: self.config.redactor(self.options.env.as_ref()),
            sandbox: self.options.sandbox.clone().map(|sandbox| Sandbox {
                allow_network,
                hidden: if set == Some(ToolSet::Worker) { self.hidden_from_workers() } else { Vec::new() },
                ..sandbox
            }),
            tmp: Some(tmp.to_owned()),
            registry: Some(self.process_registry()),
        }
    }

    /// Where the commands run in this workspace are recorded while they run: one registry for
    /// the workspace, so commands a dead driver of any mission left are stopped by the next
    /// driver of any mission.
    pub(super) fn process_registry(&self) -> PathBuf {
        missions_core::layout::processes_dir(&self.workspace)
    }

    /// The private temporary directory of the commands runs start.
    pub(super) fn run_tmp(&self) -> Result<&Path, EngineError> {
        Ok(self.tmp.path())
    }

    pub(super) fn toolbox(&self, set: ToolSet, focus: &str, tmp: &Path) -> Result<ToolBox, EngineError> {
        let settings = ToolSettings {
            environment: self.command_environment(Some(set), tmp),
            default_timeout: Duration::from_secs(120),
            max_timeout: Duration::from_secs(self.config.config.mission.max_command_timeout_s.max(1)),
            focus: focus.to_owned(),
            map_tokens: self.options.limits.map_tokens,
            write_guard: match set {
                ToolSet::Worker => {
                    let editors: Arc<dyn WriteGuard> = Arc::new(EditorBuffers::new(&self.workspace));
                    let guards = std::iter::once(editors).chain(self.options.write_guard.clone()).collect();
                    Some(Arc::new(worktree::Guards(guards)) as Arc<dyn WriteGuard>)
                }
                ToolSet::ReadOnly | ToolSet::Planner | ToolSet::Reviewer | ToolSet::UserTester => None,
            },
            work_recorder: match set {
                ToolSet::ReadOnly => None,
                ToolSet::Worker | ToolSet::Planner | ToolSet::Reviewer | ToolSet::UserTester => Some(self.work_log()),
            },
            // The boundary's run (read-only tools) writes the corrective features workers read,
            // so it does not see the acceptance tests either.
            hidden: if matches!(set, ToolSet::Worker | ToolSet::ReadOnly) {
                self.hidden_from_workers()
            } else {
                Vec::new()
            },
            reserved: if set == ToolSet::Worker { self.acceptance_paths() } else { Default::default() },
        };
        ToolBox::new(&self.workspace, set, settings)
            .map_err(|e| EngineError::Io(format!("{}: {e}", self.workspace.display())))
    }

    /// What a worker never sees (SPEC §2 rule 9): all of `.missions/`, where the acceptance
    /// tests are kept, and where the log, the transcripts and `contract.md` quote them.
    fn hidden_from_workers(&self) -> Vec<std::path::PathBuf> {
        vec![missions_core::layout::root(&self.workspace)]
    }

    /// The workspace paths where acceptance tests are placed while they run, which workers may
    /// not write.
    fn acceptance_paths(&self) -> std::collections::BTreeMap<String, String> {
        self.shared.read(|projection| {
            let mut reserved = std::collections::BTreeMap::new();
            for test in projection.acceptance_tests.values() {
                for file in &test.files {
                    let reason = format!(
                        "`{}` is where the acceptance test of {} is placed while it runs; workers may not write it. \
                         Put your own tests at another path.",
                        file.path, test.assertion
                    );
                    reserved.insert(file.path.clone(), reason);
                }
            }
            reserved
        })
    }

    /// The repository map ranked toward `focus`, for a role's prompt.
    pub(super) fn repo_map(&self, focus: &str) -> String {
        repo_map(&self.workspace, focus, self.options.limits.map_tokens)
    }

    /// [`Mission::repo_map`] made on a pooled thread while `meanwhile` runs on this one: the
    /// map only reads the tree, and a step that starts with a git command (a process to wait
    /// for) need not wait for the map after it. A thread of its own would cost more to start
    /// and end than a small map takes.
    pub(super) async fn repo_map_beside<R>(&self, focus: &str, meanwhile: impl FnOnce() -> R) -> (String, R) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            let result = meanwhile();
            return (self.repo_map(focus), result);
        };
        let (workspace, owned_focus, tokens) =
            (self.workspace.clone(), focus.to_owned(), self.options.limits.map_tokens);
        let map = runtime.spawn_blocking(move || repo_map(&workspace, &owned_focus, tokens));
        let result = meanwhile();
        let map = map.await.unwrap_or_else(|_| "(the repository map failed)".to_owned());
        (map, result)
    }

    pub(super) fn checks_text(&self) -> String {
        let checks = &self.config.config.mission.checks;
        if checks.is_empty() {
            "(none configured)".into()
        } else {
            checks.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
        }
    }

    /// Runs one agent with the role's model, recording its start, end and transcript.
    pub(super) async fn run<T: Terminal>(
        &self,
        request: RunRequest,
        tools: &ToolBox,
        terminal: &mut T,
    ) -> Result<RunEnd<T::Output>, EngineError> {
        let RunRequest { role, label, system, first_message, max_turns, milestone, feature } = request;
        let model = self.models.by_role.get(&role).cloned().ok_or(EngineError::MissingModel(role))?;
        let run_id = missions_core::ids::new_run_id(&label);
        self.shared.append(Event::RunStarted {
            run_id: run_id.clone(),
            role,
            milestone: milestone.clone(),
            feature: feature.clone(),
        })?;
        (self.shared.progress)(&Progress {
            mission: self.shared.mission_id.clone(),
            milestone: milestone.clone(),
            feature: feature.clone(),
            role: Some(role),
            run: Some(run_id.clone()),
            step: Step::RunStarted { model: model.model.clone() },
        });
        let transcript_path = missions_core::layout::transcript(&self.workspace, &self.shared.mission_id, &run_id);
        let transcript = TranscriptWriter::create(&transcript_path, self.config.redactor(self.options.env.as_ref()))
            .map_err(|e| EngineError::Io(e.to_string()))?;
        let config = AgentConfig {
            role,
            run_id: run_id.clone(),
            provider: model.provider.clone(),
            model: model.model.clone(),
            system,
            first_message,
            max_turns,
            context_tokens: self.options.limits.context_tokens,
            max_output_tokens: model.max_output_tokens,
            max_repeated_failures: self.config.config.mission.max_repeated_failures,
            max_repeated_refusals: self.config.config.mission.max_repeated_refusals,
        };
        let hooks = RunScope {
            shared: &self.shared,
            milestone: milestone.clone(),
            feature: feature.clone(),
            run_id: run_id.clone(),
            reservation: Mutex::new((0, 0.0)),
        };
        let end = run_agent(&config, tools, terminal, &hooks, Some(&transcript)).await;
        tools.finish();
        let (outcome, detail) = match &end {
            RunEnd::Finished(_) => (RunOutcome::Finished, "the run called its terminal tool".to_owned()),
            RunEnd::GaveUp(reason) => (RunOutcome::GaveUp, reason.clone()),
            RunEnd::Stopped(stop) => (RunOutcome::Stopped, stop.to_string()),
        };
        self.shared.append(Event::RunFinished { run_id, outcome, detail })?;
        Ok(end)
    }
}

/// The map of the workspace at `workspace` ranked toward `focus`, within `tokens`; what went
/// wrong, when it cannot be made.
fn repo_map(workspace: &std::path::Path, focus: &str, tokens: usize) -> String {
    match missions_tools::Confinement::new(workspace) {
        Ok(c) => missions_tools::repo_map::repo_map(&c, None, focus, tokens).unwrap_or_else(|e| e),
        Err(e) => e.to_string(),
    }
}
