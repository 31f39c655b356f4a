//! The function's result: what was asked, what each step did to each instance, and what the
//! instance looked like before. It is returned, logged as one JSON line, and carried by the
//! error when the invocation fails, so a failed containment is never reported as a bare string.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aws::AwsError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every instance is contained and every step succeeded.
    Contained,
    /// At least one step failed on at least one instance; each instance says how far it got.
    Partial,
    /// The event did not ask for containment; nothing was called.
    Ignored,
    /// `DRY_RUN` or `"dry_run": true`: everything was read, nothing was changed, and each step
    /// lists the changes a real run would make.
    DryRun,
    /// A release: every instance is back as the incident record says it was.
    Released,
    /// An EBS snapshot event about evidence was handled (see `evidence`).
    Evidence,
    /// A sweep that found nothing to contain: every account was read, and every instance
    /// carrying the trigger tag was left alone with a reason (see `sweep`). A sweep that
    /// contained something reports `contained` or `partial`.
    Swept,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The account the instances are in, when the event named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub instances: Vec<InstanceReport>,
    /// What an EBS snapshot event did to evidence snapshots ([`crate::evidence_copy`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<crate::evidence_copy::EvidenceReport>,
    /// What a sweep found in each account and did with it ([`crate::sweep`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sweep: Vec<crate::sweep::AccountSweep>,
}

impl Report {
    pub fn ignored(reason: String) -> Self {
        Self {
            outcome: Outcome::Ignored,
            reason: Some(reason),
            account: None,
            instances: Vec::new(),
            evidence: Vec::new(),
            sweep: Vec::new(),
        }
    }

    /// `ignored` when none of the snapshots is evidence, `partial` when anything failed.
    pub fn from_evidence(
        reason: String,
        evidence: Vec<crate::evidence_copy::EvidenceReport>,
    ) -> Self {
        use crate::evidence_copy::EvidenceAction;
        let outcome = if evidence.iter().any(|e| e.action == EvidenceAction::Failed) {
            Outcome::Partial
        } else if evidence
            .iter()
            .all(|e| e.action == EvidenceAction::NotEvidence)
        {
            Outcome::Ignored
        } else {
            Outcome::Evidence
        };
        Self {
            outcome,
            reason: Some(reason),
            account: None,
            instances: Vec::new(),
            evidence,
            sweep: Vec::new(),
        }
    }

    pub fn from_instances(reason: String, instances: Vec<InstanceReport>) -> Self {
        let all_contained = instances
            .iter()
            .all(|i| i.outcome == InstanceOutcome::Contained);
        Self {
            outcome: if all_contained {
                Outcome::Contained
            } else {
                Outcome::Partial
            },
            reason: Some(reason),
            account: None,
            instances,
            evidence: Vec::new(),
            sweep: Vec::new(),
        }
    }

    /// A dry run: nothing changed, whatever each instance's steps say.
    pub fn dry_run(reason: String, instances: Vec<InstanceReport>) -> Self {
        Self {
            outcome: Outcome::DryRun,
            reason: Some(reason),
            instances,
            evidence: Vec::new(),
            account: None,
            sweep: Vec::new(),
        }
    }

    /// The report of a release: `released` when every instance is, `partial` otherwise.
    pub fn from_released(reason: String, instances: Vec<InstanceReport>) -> Self {
        let all_released = instances
            .iter()
            .all(|i| i.outcome == InstanceOutcome::Released);
        Self {
            outcome: if all_released {
                Outcome::Released
            } else {
                Outcome::Partial
            },
            reason: Some(reason),
            instances,
            evidence: Vec::new(),
            account: None,
            sweep: Vec::new(),
        }
    }

    /// A failed step anywhere makes the invocation fail, so that Lambda retries it and, once
    /// retries are spent, hands it to the on-failure destination. In a dry run only a failed
    /// read fails a step.
    pub fn has_failures(&self) -> bool {
        self.instances.iter().any(|i| {
            !matches!(
                i.outcome,
                InstanceOutcome::Contained | InstanceOutcome::DryRun | InstanceOutcome::Released
            ) || i.steps.iter().any(|s| s.status == Status::Failed)
        }) || self
            .evidence
            .iter()
            .any(|e| e.action == crate::evidence_copy::EvidenceAction::Failed)
            || self.sweep.iter().any(crate::sweep::AccountSweep::failed)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"report_error\":{:?}}}", e.to_string()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceOutcome {
    /// Cut off and every step done or already in place.
    Contained,
    /// The network and credential cuts hold, but another step failed (evidence or clean-up).
    Partial,
    /// The network or the credential cut failed: the instance is NOT contained.
    NotContained,
    /// The instance could not be read (unknown, terminated), or, for a release, has no
    /// containment to undo: nothing was changed.
    Rejected,
    /// A dry run read the instance; nothing was changed. Its steps say what a real run would do.
    DryRun,
    /// Release: everything the record holds is restored, or was already.
    Released,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstanceReport {
    pub instance_id: String,
    pub vpc_id: Option<String>,
    pub outcome: InstanceOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
    pub steps: Vec<StepReport>,
    pub snapshots: Vec<SnapshotRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<OriginalState>,
    /// The instance as described before any change.
    pub metadata: Value,
}

impl InstanceReport {
    pub fn step(&self, step: Step) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.step == step)
    }
}

/// Step names as they appear in the report and the logs. Ordered as they are declared, which is
/// the order the tags name them in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    DescribeInstance,
    RecordIncident,
    IsolationGroup,
    MoveNetworkInterfaces,
    ReplaceInstanceProfile,
    RevokeCredentials,
    DetachAutoScaling,
    DeregisterTargetGroups,
    DeregisterClassicLoadBalancers,
    ProtectInstance,
    KeepVolumes,
    SnapshotVolumes,
    TagInstance,
    /// Release: the incident record read, and whether it allows a release.
    ReadIncidentRecord,
    RestoreNetworkInterfaces,
    RestoreInstanceProfile,
    /// Release: this instance's ARN out of the deny on the original role.
    RestoreCredentials,
    RegisterTargetGroups,
    RegisterClassicLoadBalancers,
    AttachAutoScaling,
    /// Taking the member role of the instance's account; when it fails, nothing else runs.
    AssumeMemberRole,
}

impl Step {
    /// The steps whose failure leaves the instance reachable or its credentials usable.
    pub fn is_containment_cut(self) -> bool {
        matches!(
            self,
            Step::IsolationGroup
                | Step::MoveNetworkInterfaces
                | Step::ReplaceInstanceProfile
                | Step::RevokeCredentials
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Changed, and the change was read back.
    Done,
    /// Already as containment wants it; nothing was changed.
    Unchanged,
    /// Not applicable to this instance or turned off by configuration; the detail says which.
    Skipped,
    Failed,
    /// Dry run only: a real run would make the changes listed with the step; none was made.
    Planned,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepReport {
    pub step: Step,
    pub status: Status,
    pub detail: String,
    pub ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<AwsError>,
    /// Dry run only: each change a real run would make, in the order it would make them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<PlannedChange>,
}

/// One mutating AWS call a real run would make, and on what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedChange {
    /// The API operation (`ModifyNetworkInterfaceAttribute`, `DetachInstances`, ...).
    pub action: String,
    /// What it changes: an id, ARN or name (`eni-...`, a target group ARN, a role name).
    pub target: String,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub snapshot_id: String,
    pub volume_id: String,
}

/// What containment changed, as it was before, so that a release can put it back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OriginalState {
    pub network_interfaces: Vec<InterfaceGroups>,
    /// `None` when the instance had no profile; absent from a re-run that found the isolation
    /// profile already in place (the earlier run recorded the original).
    pub instance_profile_arn: Option<String>,
    pub auto_scaling_group: Option<String>,
    pub target_groups: Vec<TargetRegistration>,
    pub classic_load_balancers: Vec<String>,
    /// Interfaces and profile already isolated when this run read them: their true original
    /// was recorded by the run that isolated them, and is not overwritten with isolated state.
    pub already_isolated: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceGroups {
    pub network_interface_id: String,
    pub vpc_id: String,
    pub private_ip_addresses: Vec<String>,
    pub groups: Vec<String>,
    /// The interface's connection tracking timeouts before containment shortened them, as
    /// `DescribeInstances` showed them; absent when it showed none (older records, or instance
    /// types without configurable timeouts), and then a release leaves them as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_tracking: Option<ConnectionTracking>,
}

/// Idle timeouts in seconds, as `ConnectionTrackingConfiguration` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionTracking {
    pub tcp_established_timeout: Option<i32>,
    pub udp_stream_timeout: Option<i32>,
    pub udp_timeout: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRegistration {
    pub target_group_arn: String,
    /// The instance id, or the interface address for an `ip` target group.
    pub target_id: String,
    pub port: Option<i32>,
}
