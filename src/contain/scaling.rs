//! Takes the instance out of its Auto Scaling group without lowering the desired capacity: the
//! group launches a healthy replacement, and the suspect stays for forensics instead of being
//! terminated by a scale-in or a failed health check (termination protection does not stop
//! Auto Scaling).
//!
//! IAM: `autoscaling:DescribeAutoScalingInstances`, `autoscaling:DetachInstances`,
//! `autoscaling:DescribeLifecycleHooks`, `autoscaling:RecordLifecycleActionHeartbeat`.
//!
//! By lifecycle state ([`plan`]): `InService` and `Standby` are detached; `Detaching` and
//! `Detached` are already leaving; `Terminating:Wait` (a termination lifecycle hook holds the
//! instance) cannot be detached, so a heartbeat on each such hook restarts its wait and the
//! report says when Auto Scaling terminates it anyway; every other state (`Pending:*`,
//! `Warmed:*`, `Terminating`, ...) cannot be detached now and is reported as evidence at risk,
//! with the state. An instance in a group is never reported as outside one.
//!
//! Idempotent: membership is read first and detach is called only for a member, so a re-run or
//! an instance outside any group makes no change.

use std::time::Instant;

use futures::future::join_all;

use super::{step_report, unrecorded, Recorder, StepResult};
use crate::aws::{aws_err, AwsError, Clients};
use crate::incident::{GroupRecord, ORIGINAL_AUTO_SCALING_GROUP};
use crate::report::{Step, StepReport};

pub struct ScalingCut {
    pub report: StepReport,
    pub original_group: Option<String>,
}

/// The instance's place in an Auto Scaling group: the group and its lifecycle state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub group: String,
    pub state: String,
}

/// The instance's group and lifecycle state, if it is in one (in any state).
pub(crate) async fn lifecycle(
    clients: &Clients,
    instance_id: &str,
) -> Result<Option<Member>, AwsError> {
    let output = clients
        .autoscaling
        .describe_auto_scaling_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(aws_err("DescribeAutoScalingInstances"))?;
    Ok(output
        .auto_scaling_instances()
        .iter()
        .filter(|i| i.instance_id() == Some(instance_id))
        .find_map(|i| {
            Some(Member {
                group: i.auto_scaling_group_name()?.to_owned(),
                state: i.lifecycle_state().unwrap_or_default().to_owned(),
            })
        }))
}

/// The group the instance is in, if any. Instances already leaving it count as out of it.
pub(crate) async fn membership(
    clients: &Clients,
    instance_id: &str,
) -> Result<Option<String>, AwsError> {
    Ok(lifecycle(clients, instance_id)
        .await?
        .filter(|m| !leaving(&m.state))
        .map(|m| m.group))
}

fn leaving(state: &str) -> bool {
    matches!(
        state,
        "Detaching"
            | "Detached"
            | "Terminating"
            | "Terminating:Wait"
            | "Terminating:Proceed"
            | "Terminated"
    )
}

/// What the step does, by the lifecycle state (Auto Scaling user guide, "Amazon EC2 Auto Scaling
/// instance lifecycle").
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    NotAMember,
    /// Already on its way out by a detach: nothing to do.
    Detached {
        group: String,
        state: String,
    },
    /// `InService` or `Standby`: the only states `DetachInstances` accepts.
    Detach {
        group: String,
    },
    /// `Terminating:Wait`: a termination lifecycle hook holds it; a heartbeat restarts the wait.
    Heartbeat {
        group: String,
    },
    /// Any other state: it cannot be detached now, and Auto Scaling may terminate it.
    AtRisk {
        group: String,
        state: String,
    },
}

/// Pure: what to do with the instance in its group.
pub(crate) fn plan(member: Option<&Member>) -> Plan {
    let Some(Member { group, state }) = member.cloned() else {
        return Plan::NotAMember;
    };
    match state.as_str() {
        "InService" | "Standby" => Plan::Detach { group },
        "Detaching" | "Detached" => Plan::Detached { group, state },
        // A warm pool's instances are held by the group's termination hooks too.
        "Terminating:Wait" | "Warmed:Terminating:Wait" => Plan::Heartbeat { group },
        _ => Plan::AtRisk { group, state },
    }
}

pub async fn detach(
    clients: &Clients,
    instance_id: &str,
    recorder: Option<Recorder<'_>>,
) -> ScalingCut {
    let started = Instant::now();
    let cut = |result, original_group| ScalingCut {
        report: step_report(Step::DetachAutoScaling, started, result),
        original_group,
    };
    let member = match lifecycle(clients, instance_id).await {
        Ok(member) => member,
        Err(e) => return cut(Err(e.at_risk()), None),
    };
    let group = match plan(member.as_ref()) {
        Plan::NotAMember => {
            return cut(
                Ok(StepResult::unchanged("not in an Auto Scaling group")),
                None,
            )
        }
        Plan::Detached { group, state } => {
            return cut(
                Ok(StepResult::unchanged(format!(
                    "already leaving {group} ({state})"
                ))),
                None,
            )
        }
        Plan::Heartbeat { group } => {
            return cut(Err(keep_alive(clients, instance_id, &group).await), None)
        }
        Plan::AtRisk { group, state } => {
            let error = AwsError::local(
                "DetachInstances",
                format!(
                    "{instance_id} is {state} in {group}, and Auto Scaling detaches only \
                     instances InService or in Standby"
                ),
            );
            return cut(Err(error.at_risk()), None);
        }
        Plan::Detach { group } => group,
    };
    // The record and the change go out together: a failed record never held the change back
    // (containment first), and waiting for it would only add a round trip.
    let record = GroupRecord {
        name: Some(group.clone()),
    };
    let (remembered, detached) = tokio::join!(
        async {
            match recorder {
                Some(r) => r.remember(ORIGINAL_AUTO_SCALING_GROUP, &record).await,
                None => Ok(()),
            }
        },
        detach_from(clients, instance_id, &group),
    );
    cut(unrecorded(detached, remembered), Some(group))
}

/// An instance a termination lifecycle hook holds in `Terminating:Wait` cannot be detached: a
/// heartbeat on every such hook restarts its wait, which gives the responders time. It is
/// still terminated when a wait runs out or the hook's global timeout is reached, so the result
/// is always evidence at risk, with when.
async fn keep_alive(clients: &Clients, instance_id: &str, group: &str) -> AwsError {
    let hooks = match clients
        .autoscaling
        .describe_lifecycle_hooks()
        .auto_scaling_group_name(group)
        .send()
        .await
    {
        Ok(output) => output.lifecycle_hooks().to_vec(),
        Err(e) => return AwsError::from_sdk("DescribeLifecycleHooks", e).at_risk(),
    };
    let terminating: Vec<_> = hooks
        .iter()
        .filter(|h| h.lifecycle_transition() == Some("autoscaling:EC2_INSTANCE_TERMINATING"))
        .collect();
    // Every hook gets its heartbeat, whatever another's answer: each holds the instance alone.
    let beats = join_all(terminating.iter().map(|hook| async move {
        let name = hook.lifecycle_hook_name().unwrap_or_default();
        let beat = clients
            .autoscaling
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(group)
            .lifecycle_hook_name(name)
            .instance_id(instance_id)
            .send()
            .await;
        match beat {
            Ok(_) => format!(
                "heartbeat on {name}: held another {} s, at most {} s after its termination began",
                hook.heartbeat_timeout().unwrap_or_default(),
                hook.global_timeout().unwrap_or_default()
            ),
            Err(e) => format!(
                "no heartbeat on {name} ({})",
                AwsError::from_sdk("RecordLifecycleActionHeartbeat", e)
            ),
        }
    }))
    .await;
    let kept: Vec<String> = beats;
    let message = match kept.is_empty() {
        true => format!(
            "{instance_id} is Terminating:Wait in {group}, held by no termination hook we can \
             see: it cannot be detached"
        ),
        false => format!(
            "{instance_id} is Terminating:Wait in {group} and cannot be detached; {}",
            kept.join("; ")
        ),
    };
    AwsError::local("RecordLifecycleActionHeartbeat", message).at_risk()
}

async fn detach_from(
    clients: &Clients,
    instance_id: &str,
    group: &str,
) -> Result<StepResult, AwsError> {
    clients
        .autoscaling
        .detach_instances()
        .auto_scaling_group_name(group)
        .instance_ids(instance_id)
        .should_decrement_desired_capacity(false)
        .send()
        .await
        .map_err(aws_err("DetachInstances"))
        .map_err(AwsError::at_risk)?;
    match membership(clients, instance_id).await? {
        None => Ok(StepResult::done(format!(
            "detached from {group}; desired capacity kept, so the group replaces it"
        ))),
        Some(still) => Err(AwsError::local(
            "DescribeAutoScalingInstances",
            format!("read back {instance_id} still in {still}").to_owned(),
        )
        .at_risk()),
    }
}

impl AwsError {
    /// While the instance stays in its group, Auto Scaling may terminate it and its evidence
    /// with it, whatever its termination protection says: the report must say so.
    fn at_risk(mut self) -> Self {
        self.message = format!(
            "{} (evidence at risk: Auto Scaling can still terminate the instance)",
            self.message
        );
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(state: &str) -> Member {
        Member {
            group: "web".into(),
            state: state.into(),
        }
    }

    #[test]
    fn in_service_and_standby_are_detached() {
        for state in ["InService", "Standby"] {
            assert_eq!(
                plan(Some(&member(state))),
                Plan::Detach {
                    group: "web".into()
                },
                "{state}"
            );
        }
    }

    #[test]
    fn a_terminating_wait_gets_a_heartbeat_and_other_states_are_at_risk_never_outside() {
        assert_eq!(
            plan(Some(&member("Terminating:Wait"))),
            Plan::Heartbeat {
                group: "web".into()
            }
        );
        for state in [
            "Pending",
            "Pending:Wait",
            "Pending:Proceed",
            "Warmed:Pending",
            "Warmed:Running",
            "EnteringStandby",
            "Terminating",
            "Terminating:Proceed",
            "Quarantined",
        ] {
            assert_eq!(
                plan(Some(&member(state))),
                Plan::AtRisk {
                    group: "web".into(),
                    state: state.into()
                },
                "{state}"
            );
        }
        assert_eq!(plan(None), Plan::NotAMember);
        assert!(matches!(
            plan(Some(&member("Detaching"))),
            Plan::Detached { .. }
        ));
    }
}
