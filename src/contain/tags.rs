//! The tags this function writes, and the last step: tagging the instance with its quarantine
//! status, the incident and what was changed, so that anyone looking at the instance in the
//! console sees it is contained.
//!
//! IAM: `ec2:CreateTags` on instances, `ec2:DescribeTags`.
//!
//! None of these keys is the trigger key, so writing them never retriggers the rule. Tags are
//! informational: anyone allowed to tag can edit them, so release never trusts them. The first
//! containment's time, incident and reason are kept by later runs.

use std::collections::BTreeMap;
use std::time::Instant;

use aws_sdk_ec2::types::{Filter, Tag};

use super::instance::InstanceFacts;
use super::{step_report, StepResult};
use crate::aws::{aws_err, AwsError, Clients};
use crate::report::{InstanceOutcome, Status, Step, StepReport};

pub const STATUS: &str = "ec2-quarantine:status";
pub const CONTAINED_AT: &str = "ec2-quarantine:contained-at";
pub const INCIDENT: &str = "ec2-quarantine:incident";
pub const REASON: &str = "ec2-quarantine:reason";
pub const CHANGES: &str = "ec2-quarantine:changes";
/// On snapshots: the instance they were taken from.
pub const SNAPSHOT_INSTANCE: &str = "ec2-quarantine:instance-id";
/// On the isolation group, so that guard policies can protect it.
pub const ROLE: &str = "ec2-quarantine:role";
pub const ROLE_ISOLATION: &str = "isolation";
/// The allow-all group an interface passes through on its way to isolation (see `network`).
pub const ROLE_INTERIM: &str = "interim";

const MAX_VALUE_CHARS: usize = 256;

pub fn status_value(outcome: InstanceOutcome) -> &'static str {
    match outcome {
        InstanceOutcome::Contained => "contained",
        InstanceOutcome::Partial => "partial",
        InstanceOutcome::NotContained | InstanceOutcome::Rejected => "not-contained",
        // Never written: a dry run writes no tag. What a real run would write is "contained".
        InstanceOutcome::DryRun => "contained",
        InstanceOutcome::Released => crate::incident::RELEASED,
    }
}

/// The tags the instance should carry after this run. Pure.
pub fn desired(
    existing: &BTreeMap<String, String>,
    outcome: InstanceOutcome,
    incident: &str,
    reason: &str,
    steps: &[StepReport],
    now: &str,
) -> BTreeMap<String, String> {
    let keep_or = |key: &str, value: &str| {
        existing
            .get(key)
            .cloned()
            .unwrap_or_else(|| truncate(value))
    };
    let done: Vec<String> = steps
        .iter()
        .filter(|s| s.status == Status::Done)
        .map(|s| {
            serde_json::to_value(s.step)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    let changes = if done.is_empty() {
        keep_or(CHANGES, "none")
    } else {
        truncate(&done.join(","))
    };
    BTreeMap::from([
        (STATUS.to_owned(), status_value(outcome).to_owned()),
        (CONTAINED_AT.to_owned(), keep_or(CONTAINED_AT, now)),
        (INCIDENT.to_owned(), keep_or(INCIDENT, incident)),
        (REASON.to_owned(), keep_or(REASON, reason)),
        (CHANGES.to_owned(), changes),
    ])
}

fn truncate(value: &str) -> String {
    value.chars().take(MAX_VALUE_CHARS).collect()
}

pub async fn tag_instance(
    clients: &Clients,
    facts: &InstanceFacts,
    wanted: &BTreeMap<String, String>,
) -> StepReport {
    let started = Instant::now();
    step_report(
        Step::TagInstance,
        started,
        apply(clients, facts, wanted).await,
    )
}

async fn apply(
    clients: &Clients,
    facts: &InstanceFacts,
    wanted: &BTreeMap<String, String>,
) -> Result<StepResult, AwsError> {
    let differing: Vec<Tag> = wanted
        .iter()
        .filter(|(k, v)| facts.tags.get(*k) != Some(*v))
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    if differing.is_empty() {
        return Ok(StepResult::unchanged(format!(
            "{STATUS}={} already set",
            wanted.get(STATUS).map(String::as_str).unwrap_or_default()
        )));
    }
    let keys: Vec<String> = differing
        .iter()
        .filter_map(|t| t.key().map(str::to_owned))
        .collect();
    clients
        .ec2
        .create_tags()
        .resources(&facts.instance_id)
        .set_tags(Some(differing))
        .send()
        .await
        .map_err(aws_err("CreateTags"))?;
    let read = clients
        .ec2
        .describe_tags()
        .filters(
            Filter::builder()
                .name("resource-id")
                .values(&facts.instance_id)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("key")
                .set_values(Some(keys.clone()))
                .build(),
        )
        .send()
        .await
        .map_err(aws_err("DescribeTags"))?;
    let actual: BTreeMap<&str, &str> = read
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value().unwrap_or(""))))
        .collect();
    // Concurrent invocations for one instance write these tags at the same time and the last
    // write wins, so only what they agree on is checked: the incident (one per instance, from
    // the record) and that a status is there.
    let incident_ok = actual.get(INCIDENT).copied() == wanted.get(INCIDENT).map(String::as_str)
        || !keys.iter().any(|k| k == INCIDENT);
    let status_ok = actual.contains_key(STATUS) || !keys.iter().any(|k| k == STATUS);
    if !incident_ok || !status_ok {
        return Err(AwsError::local(
            "DescribeTags",
            format!(
                "read back {INCIDENT}={:?} {STATUS}={:?}, expected {:?} and a status",
                actual.get(INCIDENT),
                actual.get(STATUS),
                wanted.get(INCIDENT)
            ),
        ));
    }
    Ok(StepResult::done(format!(
        "{STATUS}={} ({} tag(s) written)",
        wanted.get(STATUS).map(String::as_str).unwrap_or_default(),
        keys.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: Step, status: Status) -> StepReport {
        StepReport {
            step,
            status,
            detail: String::new(),
            ms: 0,
            error: None,
            changes: Vec::new(),
        }
    }

    #[test]
    fn a_first_containment_records_time_incident_reason_and_the_steps_done() {
        let tags = desired(
            &BTreeMap::new(),
            InstanceOutcome::Contained,
            "evt-1",
            "tag Quarantine=true set",
            &[
                step(Step::MoveNetworkInterfaces, Status::Done),
                step(Step::DetachAutoScaling, Status::Unchanged),
                step(Step::ReplaceInstanceProfile, Status::Done),
            ],
            "2026-11-23T10:00:00Z",
        );
        assert_eq!(tags[STATUS], "contained");
        assert_eq!(tags[CONTAINED_AT], "2026-11-23T10:00:00Z");
        assert_eq!(tags[INCIDENT], "evt-1");
        assert_eq!(
            tags[CHANGES],
            "move-network-interfaces,replace-instance-profile"
        );
    }

    #[test]
    fn a_rerun_keeps_the_first_runs_time_incident_and_changes() {
        let existing = desired(
            &BTreeMap::new(),
            InstanceOutcome::Contained,
            "evt-1",
            "first",
            &[step(Step::MoveNetworkInterfaces, Status::Done)],
            "2026-11-23T10:00:00Z",
        );
        let again = desired(
            &existing,
            InstanceOutcome::Contained,
            "evt-2",
            "second",
            &[step(Step::MoveNetworkInterfaces, Status::Unchanged)],
            "2026-11-24T10:00:00Z",
        );
        assert_eq!(again, existing);
    }

    #[test]
    fn a_failed_cut_is_tagged_not_contained() {
        let tags = desired(
            &BTreeMap::new(),
            InstanceOutcome::NotContained,
            "e",
            "r",
            &[],
            "t",
        );
        assert_eq!(tags[STATUS], "not-contained");
    }

    #[test]
    fn long_values_are_cut_to_what_ec2_accepts() {
        let reason = "x".repeat(300);
        let tags = desired(
            &BTreeMap::new(),
            InstanceOutcome::Contained,
            "e",
            &reason,
            &[],
            "t",
        );
        assert_eq!(tags[REASON].chars().count(), 256);
    }
}
