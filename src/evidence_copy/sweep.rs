//! The sweep's evidence pass: starts the encrypted copies that no completion event started.
//!
//! A copy can be missing because `CopySnapshot` answered `ResourceLimitExceeded` (20 concurrent
//! copies per destination region: the event's copy was deferred), or because the completion
//! event itself was lost. At every sweep, in the function's own account and only with
//! `SNAPSHOT_KMS_KEY_ID` set, this lists the completed, unencrypted evidence snapshots and the
//! copies already made, and starts at most [`MAX_COPIES_PER_SWEEP`] of the missing copies
//! through the same [`set_completion::copy_missing`] as the event. A copy refused again for the
//! limit is deferred again, and the next sweep tries again.
//!
//! IAM: the event's own (`ec2:DescribeSnapshots`, `ec2:CopySnapshot`, `ec2:CreateTags`, the
//! key). Cost per sweep: one `DescribeSnapshots` per 1,000 unencrypted evidence snapshots (a
//! source is kept by default, so they add up), one per 1,000 copies, and the copies' calls.

use super::plan::{self, CopyPlan, SnapshotFacts};
use super::set_completion::copy_missing;
use super::{failed, region_of, snapshots, store_of, EvidenceReport};
use crate::aws::Clients;
use crate::config::Config;

/// At most this many copies are started per sweep: the number AWS runs at once per destination
/// region, so one sweep cannot fill the limit past what completes by the next. The rest are
/// started by the next sweeps.
pub const MAX_COPIES_PER_SWEEP: usize = 20;

/// The missing copies started (or deferred, or failed), one report each; empty when every
/// evidence snapshot has its copy, or when no key is set.
pub async fn copy_uncopied(clients: &Clients, config: &Config) -> Vec<EvidenceReport> {
    let Some(key) = &config.snapshot_kms_key else {
        return Vec::new();
    };
    let (candidates, copies) = match tokio::try_join!(
        snapshots::unencrypted_evidence(clients),
        snapshots::all_copies(clients)
    ) {
        Ok(found) => found,
        Err(e) => return vec![failed("(evidence snapshots)", e)],
    };
    let uncopied = without_copy(&candidates, |id| copies.contains_key(id));
    let starting = &uncopied[..uncopied.len().min(MAX_COPIES_PER_SWEEP)];
    tracing::info!(
        evidence = candidates.len(),
        uncopied = uncopied.len(),
        starting = starting.len(),
        "the sweep's evidence pass"
    );
    let region = region_of(clients, config, None);
    copy_missing(clients, &store_of(clients, config), key, &region, starting).await
}

/// The snapshots that need a copy and have none, in id order. Pure.
fn without_copy(
    candidates: &[SnapshotFacts],
    has_copy: impl Fn(&str) -> bool,
) -> Vec<&SnapshotFacts> {
    let mut out: Vec<&SnapshotFacts> = candidates
        .iter()
        .filter(|f| plan::plan_copy(f) == CopyPlan::Copy && !has_copy(&f.id))
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::contain::tags;

    fn evidence(id: &str) -> SnapshotFacts {
        SnapshotFacts {
            id: id.into(),
            state: "completed".into(),
            tags: BTreeMap::from([
                (tags::SNAPSHOT_INSTANCE.into(), "i-0123456789abcdef0".into()),
                (tags::INCIDENT.into(), "inc-1".into()),
            ]),
            ..SnapshotFacts::default()
        }
    }

    #[test]
    fn only_completed_unencrypted_evidence_without_a_copy_is_copied() {
        let mut foreign = evidence("snap-4");
        foreign.tags.remove(tags::SNAPSHOT_INSTANCE);
        let mut a_copy = evidence("snap-5");
        a_copy.tags.insert(plan::COPY_OF.into(), "snap-1".into());
        let mut pending = evidence("snap-6");
        pending.state = "pending".into();
        let candidates = [
            evidence("snap-3"),
            evidence("snap-1"),
            evidence("snap-2"),
            foreign,
            a_copy,
            pending,
        ];
        let ids: Vec<&str> = without_copy(&candidates, |id| id == "snap-2")
            .iter()
            .map(|f| f.id.as_str())
            .collect();
        assert_eq!(ids, ["snap-1", "snap-3"]);
    }
}
