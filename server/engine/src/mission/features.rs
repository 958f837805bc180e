//! One feature: a worker's run with a fresh context, its commit, and its handoff checked
//! against what the run was seen to do (SPEC §2 rule 6).

use super::*;

/// How a worker's run ended, for the handoff recorded.
pub(super) enum HandedOff {
    /// The worker submitted its account.
    Claimed(HandoffClaim),
    /// The run ended without one, for this reason.
    GaveUp(String),
}

impl Mission {
    /// Takes the projection the step began with, and lets go of it once the prompts are
    /// written: the store copies its projection on the next event while a snapshot is held.
    pub(super) async fn work(
        &mut self,
        projection: Arc<Projection>,
        milestone: &Milestone,
        feature: &Feature,
    ) -> Result<(), EngineError> {
        let git = self.shared.git.clone();
        let focus = format!("{} {}", feature.title, feature.description);
        // A feature already in progress was cut off (a crash, a pause): start it over from
        // its base commit with a fresh context.
        let (base, mapped) = match projection.feature_bases.get(&feature.id) {
            Some(base) if feature.status == WorkStatus::InProgress => {
                self.shared.progress(Some(&milestone.id), Some(&feature.id), None, Step::FeatureRestarted);
                let base =
                    self.take_back_tree(&projection, base, &format!("{} was cut off; the tree as it was", feature.id))?;
                (base, None)
            }
            _ => {
                // The map is made while git looks for changes that are not the mission's: it is
                // of the tree the worker starts from unless there are some.
                let (map, dirty) = self.repo_map_beside(&focus, || git.dirty_files()).await;
                let dirty: Vec<String> = dirty?;
                if !dirty.is_empty() && !projection.conflict_pause {
                    // Left by something outside the mission since the last step; never
                    // silently fold someone's edits into a feature.
                    return self.shared.pause(
                        PauseReason::Conflict,
                        format!(
                            "the working tree changed outside the mission: {}. Resume commits these changes as yours \
                             before the mission goes on",
                            dirty.join(", ")
                        ),
                    );
                }
                let head = git.head()?;
                if dirty.is_empty() {
                    (head, Some(map))
                } else {
                    (self.take_back_tree(&projection, &head, "your changes, committed as yours")?, None)
                }
            }
        };
        let run_label = format!("worker-{}", feature.id);
        let repo_map = mapped.unwrap_or_else(|| self.repo_map(&focus));
        let values = BTreeMap::from([
            ("feature", format!("{}: {}\n\n{}", feature.id, feature.title, feature.description.trim())),
            ("assertions", messages::assertions_text(&projection, &feature.assertions)),
            ("checks", self.checks_text()),
            ("plan_excerpt", messages::plan_excerpt(&projection, &feature.id)),
            ("earlier_handoffs", messages::handoff_summaries(&projection, &feature.id)),
            ("course_corrections", messages::course_corrections(&projection)),
            ("project_instructions", prompts::project_instructions(&self.workspace)),
            ("repo_map", repo_map),
        ]);
        let system = prompts::render(Template::Worker, &self.workspace, &values)?;
        let first = messages::worker(&projection, feature);
        drop(projection);
        let tmp = self.run_tmp()?;
        let tools = self.toolbox(ToolSet::Worker, &focus, tmp)?;
        self.shared.append(Event::FeatureStarted {
            milestone: milestone.id.clone(),
            feature: feature.id.clone(),
            base_commit: base.clone(),
            run_id: run_label.clone(),
        })?;
        self.shared.append(Event::CursorMoved {
            milestone: Some(milestone.id.clone()),
            feature: Some(feature.id.clone()),
            role: Some(Role::Worker),
        })?;
        let request = RunRequest {
            role: Role::Worker,
            label: run_label,
            system,
            first_message: first,
            max_turns: self.options.limits.worker_turns,
            milestone: Some(milestone.id.clone()),
            feature: Some(feature.id.clone()),
        };
        let mut terminal = SubmitHandoff::checking(tools.observed_handle());
        let end = self.run(request, &tools, &mut terminal).await?;
        let observed = tools.observed_commands();
        match end {
            RunEnd::Finished(claim) => {
                self.finish_feature(milestone, feature, &base, HandedOff::Claimed(claim), observed)
            }
            RunEnd::GaveUp(reason) => {
                self.finish_feature(milestone, feature, &base, HandedOff::GaveUp(reason), observed)
            }
            RunEnd::Stopped(stop) => self.stopped(stop),
        }
    }

    /// Commits a feature's work and records its handoff, checked against the commands the run
    /// was seen to run; a worker that gave up gets a handoff saying so, and a finding.
    pub(super) fn finish_feature(
        &self,
        milestone: &Milestone,
        feature: &Feature,
        base: &str,
        handed_off: HandedOff,
        observed: Vec<ObservedCommand>,
    ) -> Result<(), EngineError> {
        let git = &self.shared.git;
        let subject = format!("{}: {}", feature.id, feature.title);
        let commit = git.commit(&subject, &[("Mission-Id", &self.shared.mission_id), ("Feature-Id", &feature.id)])?;
        let files_changed = git.changed_ranges(base, &commit)?;
        let model = self.models.by_role.get(&Role::Worker).map(|m| m.model.clone()).unwrap_or_default();
        let (claim, gave_up) = match handed_off {
            HandedOff::Claimed(claim) => (claim, None),
            HandedOff::GaveUp(reason) => {
                let claim = HandoffClaim {
                    summary: format!("The worker did not hand off: {reason}."),
                    completed: Vec::new(),
                    skipped: vec![missions_core::mission::SkippedItem { item: feature.title.clone(), reason }],
                    commands: Vec::new(),
                    issues: Vec::new(),
                    procedures_followed: false,
                    procedure_notes: "no handoff was submitted".into(),
                };
                let summary = claim.summary.clone();
                (claim, Some(summary))
            }
        };
        let claimed_commands = claim.commands.clone();
        let record = Handoff {
            feature: feature.id.clone(),
            model,
            claim,
            files_changed,
            commit: Some(commit.clone()),
            observed_commands: observed.clone(),
        };
        // The handoff, its findings and the feature's new status are durable together.
        self.shared.together(|| {
            self.shared.append(Event::HandoffRecorded { handoff: record })?;
            // SPEC §2 rule 6.
            let observed_list = if observed.is_empty() {
                "none".to_owned()
            } else {
                observed
                    .iter()
                    .map(|o| format!("`{}` → {}", o.command, missions_core::mission::exit_text(o.exit_code)))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            for found in rules::check_handoff(&feature.id, &claimed_commands, &observed) {
                self.shared.record_finding(FindingDraft {
                    feature: Some(feature.id.clone()),
                    evidence: format!("observed commands: {observed_list}"),
                    ..FindingDraft::new(&milestone.id, found.validator, found.severity, found.message)
                })?;
            }
            if let Some(summary) = gave_up {
                self.shared.record_finding(FindingDraft {
                    feature: Some(feature.id.clone()),
                    evidence: summary,
                    ..FindingDraft::new(
                        &milestone.id,
                        Validator::Engine,
                        Severity::Warning,
                        format!("the worker for {} ended without a handoff", feature.id),
                    )
                })?;
            }
            self.shared
                .append(Event::FeatureStatusChanged { feature: feature.id.clone(), status: WorkStatus::Done })?;
            self.shared.append(Event::CursorMoved {
                milestone: Some(milestone.id.clone()),
                feature: None,
                role: None,
            })?;
            Ok(())
        })?;
        let committed = Step::FeatureCommitted { commit: commit.clone() };
        self.shared.progress(Some(&milestone.id), Some(&feature.id), Some(Role::Worker), committed);
        Ok(())
    }
}
