//! How far each step of one containment has got, so that the tags can go out as soon as every
//! step has ended or had its writes return: beside the read-backs of the slowest steps rather
//! than a round trip after them. The steps whose read-backs end last tell their status early
//! (the interface moves, the credential deny, the snapshots); the others tell it when they end.
//! A step whose read-back then disagrees changes its status, and the tags are written again
//! ([`super::tags`]).

use tokio::sync::watch;

use crate::report::{Status, Step, StepReport};

pub struct Progress {
    expected: &'static [Step],
    state: watch::Sender<State>,
}

#[derive(Clone, Default)]
struct State {
    statuses: Vec<(Step, Status)>,
    /// The steps that have ended, as they reported: what a containment cut short by the deadline
    /// still reports.
    ended: Vec<StepReport>,
    /// Every step has ended: whatever has not reported never will.
    closed: bool,
}

impl Progress {
    pub fn new(expected: &'static [Step]) -> Self {
        Self {
            expected,
            // `send_modify` changes the value with or without receivers, so none is kept.
            state: watch::Sender::new(State::default()),
        }
    }

    /// The step's writes have returned: the status it reports unless its read-back disagrees.
    /// A later call for the same step replaces it.
    pub fn written(&self, step: Step, status: Status) {
        self.state.send_modify(
            |state| match state.statuses.iter_mut().find(|(s, _)| *s == step) {
                Some(entry) => entry.1 = status,
                None => state.statuses.push((step, status)),
            },
        );
    }

    pub fn finished(&self, report: &StepReport) {
        self.written(report.step, report.status);
        self.state.send_modify(|state| {
            state.ended.retain(|r| r.step != report.step);
            state.ended.push(report.clone());
        });
    }

    /// Every step that has ended so far, in the order of `expected`; and those that have not.
    pub fn so_far(&self) -> (Vec<StepReport>, Vec<Step>) {
        let state = self.state.borrow();
        let ended = self
            .expected
            .iter()
            .filter_map(|step| state.ended.iter().find(|r| r.step == *step).cloned())
            .collect();
        let pending = self
            .expected
            .iter()
            .filter(|step| !state.ended.iter().any(|r| r.step == **step))
            .copied()
            .collect();
        (ended, pending)
    }

    /// Called once every step has ended, so that a step that never reported cannot hold the
    /// tags back.
    pub fn close(&self) {
        self.state.send_modify(|state| state.closed = true);
    }

    /// Waits until every expected step has reported (or all have ended), and returns their
    /// statuses in the order of `expected`.
    pub async fn all_written(&self) -> Vec<(Step, Status)> {
        let mut watching = self.state.subscribe();
        let state = watching
            .wait_for(|state| {
                state.closed
                    || self
                        .expected
                        .iter()
                        .all(|step| state.statuses.iter().any(|(s, _)| s == step))
            })
            .await
            .map(|state| state.clone())
            .unwrap_or_default();
        self.expected
            .iter()
            .filter_map(|step| state.statuses.iter().find(|(s, _)| s == step).copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &[Step] = &[Step::MoveNetworkInterfaces, Step::RevokeCredentials];

    #[tokio::test]
    async fn the_statuses_come_once_every_step_has_written_in_the_expected_order() {
        let progress = Progress::new(TWO);
        // The wait starts first and is woken by the writes.
        let (statuses, ()) = tokio::join!(progress.all_written(), async {
            tokio::task::yield_now().await;
            progress.written(Step::RevokeCredentials, Status::Done);
            tokio::task::yield_now().await;
            progress.written(Step::MoveNetworkInterfaces, Status::Unchanged);
        });
        assert_eq!(
            statuses,
            vec![
                (Step::MoveNetworkInterfaces, Status::Unchanged),
                (Step::RevokeCredentials, Status::Done)
            ]
        );
    }

    #[tokio::test]
    async fn a_later_status_replaces_the_written_one() {
        let progress = Progress::new(TWO);
        progress.written(Step::RevokeCredentials, Status::Done);
        progress.written(Step::RevokeCredentials, Status::Failed);
        progress.written(Step::MoveNetworkInterfaces, Status::Done);
        assert_eq!(
            progress.all_written().await[1],
            (Step::RevokeCredentials, Status::Failed)
        );
    }

    #[tokio::test]
    async fn closing_releases_a_wait_for_a_step_that_never_reported() {
        let progress = Progress::new(TWO);
        progress.written(Step::RevokeCredentials, Status::Done);
        let (statuses, ()) = tokio::join!(progress.all_written(), async {
            tokio::task::yield_now().await;
            progress.close();
        });
        assert_eq!(statuses, vec![(Step::RevokeCredentials, Status::Done)]);
    }
}
