//! The user's commands carried out: [`rules::decide`] says what each records, and this does
//! what only a driver can (stopping a run in flight, ticking the backlog item, a rollback's
//! git work).

use super::rules::Ruling;
use super::*;

impl Shared {
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
}
