//! What keeps the instance, its disks and their contents, planned: protection, volumes kept on
//! termination, snapshots ([`crate::contain::protection`], [`crate::contain::evidence`]). Nothing
//! is leased or snapshotted; snapshots a record or an earlier run holds are reported as taken.
//!
//! IAM: `ec2:DescribeInstanceAttribute`, `ec2:DescribeSnapshots`.

use std::time::Instant;

use super::{change, report, Plan};
use crate::aws::{AwsError, Clients};
use crate::contain::instance::InstanceFacts;
use crate::contain::{evidence, protection, tags};
use crate::incident::Record;
use crate::report::{SnapshotRecord, Step, StepReport};

pub(super) async fn plan_protection(
    clients: &Clients,
    facts: &InstanceFacts,
) -> Result<Plan, AwsError> {
    if facts.spot {
        return Ok(Plan::skipped(
            "Spot instances cannot take termination or stop protection",
        ));
    }
    let id = &facts.instance_id;
    let wanted = protection::wanted(facts);
    let now = protection::read_protection(clients, id).await?;
    let changes = protection::plan(now, wanted)
        .into_iter()
        .map(|attribute| change("ModifyInstanceAttribute", id, attribute.would(id)))
        .collect();
    Ok(Plan::changes(
        changes,
        protection::with_limits(protection::ALREADY_ON, wanted),
    ))
}

pub(super) fn plan_keep_volumes(facts: &InstanceFacts) -> Plan {
    if facts.volumes.is_empty() {
        return Plan::skipped("no EBS volume attached (instance-store volumes cannot be kept)");
    }
    let deleting: Vec<String> = facts
        .volumes
        .iter()
        .filter(|v| v.delete_on_termination)
        .map(|v| format!("{} ({})", v.volume_id, v.device_name))
        .collect();
    let changes = if deleting.is_empty() {
        Vec::new()
    } else {
        vec![change(
            "ModifyInstanceAttribute",
            &facts.instance_id,
            format!(
                "would keep {} when {} terminates (DeleteOnTermination=false)",
                deleting.join(", "),
                facts.instance_id
            ),
        )]
    };
    Plan::changes(
        changes,
        format!(
            "{} volume(s) already kept on termination",
            facts.volumes.len()
        ),
    )
}

pub(super) async fn plan_snapshots(
    clients: &Clients,
    enabled: bool,
    facts: &InstanceFacts,
    incident: &str,
    claimed: Option<&Record>,
) -> (StepReport, Vec<SnapshotRecord>) {
    let started = Instant::now();
    if !enabled {
        let plan = Plan::skipped("turned off by SNAPSHOT_VOLUMES=false");
        return (report(Step::SnapshotVolumes, started, Ok(plan)), Vec::new());
    }
    if facts.volumes.is_empty() {
        let plan =
            Plan::skipped("no EBS volume attached (instance-store volumes cannot be snapshotted)");
        return (report(Step::SnapshotVolumes, started, Ok(plan)), Vec::new());
    }
    if let Some(taken) = claimed.and_then(|r| r.snapshots.clone()) {
        let plan = Plan::unchanged(format!(
            "{} snapshot(s) already taken for incident {incident}",
            taken.len()
        ));
        return (report(Step::SnapshotVolumes, started, Ok(plan)), taken);
    }
    let existing = match evidence::existing(clients, &facts.instance_id, incident).await {
        Ok(existing) => existing,
        Err(e) => return (report(Step::SnapshotVolumes, started, Err(e)), Vec::new()),
    };
    let missing: Vec<&str> = facts
        .volumes
        .iter()
        .map(|v| v.volume_id.as_str())
        .filter(|v| !existing.contains_key(*v))
        .collect();
    let changes = if missing.is_empty() {
        Vec::new()
    } else {
        vec![change(
            "CreateSnapshots",
            &facts.instance_id,
            format!(
                "would snapshot {} of {} in one crash-consistent call, tagged {}={} and \
                 {}={incident}",
                missing.join(", "),
                facts.instance_id,
                tags::SNAPSHOT_INSTANCE,
                facts.instance_id,
                tags::INCIDENT,
            ),
        )]
    };
    let plan = Plan::changes(
        changes,
        format!(
            "{} volume(s) already snapshotted for incident {incident}",
            existing.len()
        ),
    );
    let snapshots = existing
        .into_iter()
        .map(|(volume_id, snapshot_id)| SnapshotRecord {
            snapshot_id,
            volume_id,
        })
        .collect();
    (report(Step::SnapshotVolumes, started, Ok(plan)), snapshots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contain::instance::Volume;
    use crate::report::Status;
    use serde_json::Value;

    #[test]
    fn only_volumes_still_deleted_on_termination_are_planned() {
        let volume = |id: &str, device: &str, deleted: bool| Volume {
            device_name: device.into(),
            volume_id: id.into(),
            delete_on_termination: deleted,
        };
        let mut facts = InstanceFacts {
            instance_id: "i-12345678".into(),
            state: "running".into(),
            vpc_id: None,
            interfaces: Vec::new(),
            profile_arn: None,
            volumes: vec![
                volume("vol-a", "/dev/sda1", true),
                volume("vol-b", "/dev/sdf", false),
            ],
            root_device_name: Some("/dev/sda1".into()),
            root_device_is_ebs: true,
            spot: false,
            tags: Default::default(),
            metadata: Value::Null,
        };
        let plan = plan_keep_volumes(&facts);
        assert_eq!(plan.changes.len(), 1);
        assert!(plan.changes[0].detail.contains("vol-a (/dev/sda1)"));
        assert!(!plan.changes[0].detail.contains("vol-b"));
        facts.volumes[0].delete_on_termination = false;
        assert_eq!(plan_keep_volumes(&facts).status, Status::Unchanged);
        facts.volumes.clear();
        assert_eq!(plan_keep_volumes(&facts).status, Status::Skipped);
    }
}
