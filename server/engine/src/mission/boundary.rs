//! The milestone boundary: the orchestrator's decision (complete or correct, within the
//! bounded rounds of SPEC §2 rule 4), the milestone's commit, and the pause when it is blocked.

use super::*;

impl Mission {
    pub(super) async fn boundary(&mut self, milestone: &Milestone) -> Result<(), EngineError> {
        let projection = self.shared.projection();
        // A rejection starts a new round and allows one more: rounds and their bound count the
        // user's rejections with the orchestrator's corrections.
        let rejections = projection.rejections.get(&milestone.id).cloned().unwrap_or_default();
        let rounds =
            rules::correction_round(&projection, &milestone.id, self.config.config.mission.max_correction_rounds);
        let (round, max_rounds) = (rounds.used, rounds.bound);
        let rejected = projection.boundary_pending.as_deref() == Some(milestone.id.as_str());
        let statuses: BTreeMap<String, AssertionStatus> = projection
            .contract
            .assertions
            .iter()
            .filter(|a| a.milestone == milestone.id)
            .map(|a| (a.id.clone(), a.status))
            .collect();
        let failing: Vec<String> = statuses.iter().filter(|(_, s)| !s.holds()).map(|(id, _)| id.clone()).collect();
        let plan = projection.plan.clone();
        let mut used_ids: BTreeSet<String> = projection.contract.assertions.iter().map(|a| a.id.clone()).collect();
        for m in plan.iter().flat_map(|p| p.milestones.iter()) {
            used_ids.insert(m.id.clone());
            used_ids.extend(m.features.iter().map(|f| f.id.clone()));
        }
        let mut terminal = DecideMilestone {
            rejected,
            milestone: milestone.id.clone(),
            milestones: plan.iter().flat_map(|p| p.milestones.iter().map(|m| m.id.clone())).collect(),
            statuses: statuses.clone(),
            used_ids,
        };
        let first = messages::boundary(&projection, milestone, &rejections, rounds);
        let values = BTreeMap::from([
            ("round", (round + 1).to_string()),
            ("max_correction_rounds", max_rounds.to_string()),
            ("plan", plan.as_ref().map(missions_core::store::render_plan_markdown).unwrap_or_default()),
            // Without the acceptance tests' files: the orchestrator writes what workers read.
            ("contract", missions_core::store::render_contract_markdown(&projection.contract, None)),
            ("project_instructions", prompts::project_instructions(&self.workspace)),
        ]);
        let system = prompts::render(Template::OrchestratorBoundary, &self.workspace, &values)?;
        let tmp = self.run_tmp()?;
        let tools = self.toolbox(ToolSet::ReadOnly, &milestone.title, tmp)?;
        let request = RunRequest {
            role: Role::Orchestrator,
            label: format!("boundary-{}", milestone.id),
            system,
            first_message: first,
            max_turns: self.options.limits.boundary_turns,
            milestone: Some(milestone.id.clone()),
            feature: None,
        };
        let end = self.run(request, &tools, &mut terminal).await?;
        match end {
            RunEnd::Finished(Decision::Complete { notes, new_assertions }) => {
                let decided = Decided::Complete { notes: clause(notes.lines().next().unwrap_or_default()).to_owned() };
                self.shared.progress(Some(&milestone.id), None, Some(Role::Orchestrator), Step::Decided(decided));
                self.shared.append(Event::DecisionRecorded {
                    milestone: milestone.id.clone(),
                    decision: BoundaryDecision::Complete,
                    notes,
                    corrections: Vec::new(),
                    new_assertions,
                })?;
                self.complete_milestone(milestone)
            }
            RunEnd::Finished(Decision::Correct { notes, corrections, new_assertions }) => {
                // Past the bound nothing of the decision is applied: the user takes over.
                if rounds.exhausted() {
                    self.shared.append(Event::DecisionRecorded {
                        milestone: milestone.id.clone(),
                        decision: BoundaryDecision::Correct,
                        notes,
                        corrections: Vec::new(),
                        new_assertions: Vec::new(),
                    })?;
                    return self.blocked(milestone, &failing, max_rounds);
                }
                let decided =
                    Decided::Correct { round: round + 1, features: corrections.iter().map(|c| c.id.clone()).collect() };
                self.shared.progress(Some(&milestone.id), None, Some(Role::Orchestrator), Step::Decided(decided));
                // One event: the fold adds the features and assertions and reopens the
                // milestone, so a crash never leaves half a decision applied.
                self.shared.append(Event::DecisionRecorded {
                    milestone: milestone.id.clone(),
                    decision: BoundaryDecision::Correct,
                    notes,
                    corrections,
                    new_assertions,
                })
            }
            RunEnd::GaveUp(reason) if rejected => self.shared.pause(
                PauseReason::Blocked,
                format!(
                    "the orchestrator did not decide how to address your rejection of milestone {} ({reason}); \
                     resume to ask it again, or accept the milestone as it is",
                    milestone.id
                ),
            ),
            RunEnd::GaveUp(reason) if failing.is_empty() => {
                // Every assertion is verified; the decision adds nothing the engine has not
                // already checked, so a silent orchestrator does not hold the mission up.
                self.shared.append(Event::DecisionRecorded {
                    milestone: milestone.id.clone(),
                    decision: BoundaryDecision::Complete,
                    notes: format!("the orchestrator did not decide ({reason}); every assertion passes"),
                    corrections: Vec::new(),
                    new_assertions: Vec::new(),
                })?;
                self.complete_milestone(milestone)
            }
            RunEnd::GaveUp(reason) => self.shared.pause(
                PauseReason::Blocked,
                format!(
                    "the orchestrator did not decide milestone {} ({reason}); failing: {}",
                    milestone.id,
                    failing.join(", ")
                ),
            ),
            RunEnd::Stopped(stop) => self.stopped(stop),
        }
    }

    pub(super) fn blocked(
        &self,
        milestone: &Milestone,
        failing: &[String],
        max_rounds: u32,
    ) -> Result<(), EngineError> {
        self.shared.pause(
            PauseReason::Blocked,
            format!(
                "milestone {} still fails after {max_rounds} correction rounds; failing assertions: {}. Fix them or waive them, then resume",
                milestone.id,
                failing.join(", ")
            ),
        )
    }

    pub(super) fn complete_milestone(&self, milestone: &Milestone) -> Result<(), EngineError> {
        // SPEC §2 rule 3, checked again here whatever the decision said.
        let projection = self.shared.projection();
        // SPEC §2 rule 1: what is committed was validated against the contract approved.
        if let Err(broken) = rules::contract_intact(&projection) {
            return self.shared.pause(PauseReason::Blocked, broken);
        }
        let open = rules::unmet_assertions(&projection, &milestone.id);
        if !open.is_empty() {
            let ids: Vec<String> = open.into_iter().map(|(id, _)| id).collect();
            return self.shared.pause(
                PauseReason::Blocked,
                format!("milestone {} has assertions that do not pass: {}", milestone.id, ids.join(", ")),
            );
        }
        // Work added while the milestone was being validated (a "fix this finding") comes first.
        let current = projection.plan.as_ref().and_then(|p| p.milestone(&milestone.id)).cloned();
        if current.is_some_and(|m| m.features.iter().any(|f| f.status != WorkStatus::Done)) {
            self.shared.append(Event::MilestoneStatusChanged {
                milestone: milestone.id.clone(),
                status: WorkStatus::InProgress,
            })?;
            return self.shared.set_state(MissionState::Running, None, None);
        }
        // A milestone validated again after a rejection says so, so the branch never holds
        // two identical boundary commits.
        let subject = match projection.rejections.get(&milestone.id).map(Vec::len) {
            Some(n) if n > 0 => format!("milestone {}: {} (after rejection {n})", milestone.id, milestone.title),
            _ => format!("milestone {}: {}", milestone.id, milestone.title),
        };
        let commit = self
            .shared
            .git
            .commit_empty(&subject, &[("Mission-Id", &self.shared.mission_id), ("Milestone-Id", &milestone.id)])?;
        self.shared.append(Event::MilestoneCommitted { milestone: milestone.id.clone(), commit })?;
        self.shared.progress(Some(&milestone.id), None, None, Step::MilestoneValidated);
        self.shared.set_state(MissionState::AwaitingAcceptance, None, None)
    }
}
