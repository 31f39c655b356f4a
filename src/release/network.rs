//! Every recorded interface back on the security groups it had before containment, and its
//! connection tracking timeouts back where they were ([`timeouts_to_restore`]): the recorded
//! ones; where none were recorded and the interface has the ones containment sets, AWS's
//! defaults; otherwise they are left alone, since containment did not set them.
//!
//! IAM: `ec2:ModifyNetworkInterfaceAttribute`, `ec2:DescribeNetworkInterfaces`.
//!
//! Only interfaces still attached to the instance are changed: one detached since containment
//! may now serve something else, and putting the suspect's groups on it is not what anyone
//! asked for; it is named in the detail. Interfaces attached after containment are not in the
//! record and are left alone, also named. Idempotent: an interface already on its recorded
//! groups is not written.

use std::collections::BTreeSet;
use std::time::Instant;

use aws_sdk_ec2::types::ConnectionTrackingSpecificationRequest;
use futures::future::join_all;

use crate::aws::{aws_err, AwsError, Clients};
use crate::contain::instance::InstanceFacts;
use crate::contain::{step_report, StepResult};
use crate::report::{ConnectionTracking, InterfaceGroups, Step, StepReport};

pub async fn restore_interfaces(
    clients: &Clients,
    facts: &InstanceFacts,
    recorded: Option<&[InterfaceGroups]>,
) -> StepReport {
    let started = Instant::now();
    let Some(recorded) = recorded.filter(|r| !r.is_empty()) else {
        return step_report(
            Step::RestoreNetworkInterfaces,
            started,
            Ok(StepResult::skipped(
                "the record holds no interface groups (containment did not get to record them); \
                 the interfaces are left as they are",
            )),
        );
    };
    let results = join_all(recorded.iter().map(|eni| restore_one(clients, facts, eni))).await;
    let mut parts = Vec::new();
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(part) => parts.push(part),
            Err(e) => failures.push(e),
        }
    }
    let unrecorded: Vec<&str> = facts
        .interfaces
        .iter()
        .filter(|i| !recorded.iter().any(|r| r.network_interface_id == i.id))
        .map(|i| i.id.as_str())
        .collect();
    if !unrecorded.is_empty() {
        parts.push(StepResult::unchanged(format!(
            "{} not in the record (attached after containment, or already isolated when it \
             was claimed): left on their groups",
            unrecorded.join(", ")
        )));
    }
    let result = match failures.into_iter().next() {
        // One failed interface fails the step; the others' outcome goes into the message.
        Some(e) => Err(AwsError {
            message: format!("{}; {}", e.message, StepResult::merge(parts).detail),
            ..e
        }),
        None => Ok(StepResult::merge(parts)),
    };
    step_report(Step::RestoreNetworkInterfaces, started, result)
}

async fn restore_one(
    clients: &Clients,
    facts: &InstanceFacts,
    recorded: &InterfaceGroups,
) -> Result<StepResult, AwsError> {
    let eni = recorded.network_interface_id.as_str();
    let Some(now) = super::attached(facts, eni) else {
        return Ok(StepResult::skipped(format!(
            "{eni} is no longer attached to {}: not changed",
            facts.instance_id
        )));
    };
    let wanted: BTreeSet<&str> = recorded.groups.iter().map(String::as_str).collect();
    let current: BTreeSet<&str> = now.groups.iter().map(String::as_str).collect();
    let mut changes = Vec::new();
    if wanted != current {
        clients
            .ec2
            .modify_network_interface_attribute()
            .network_interface_id(eni)
            .set_groups(Some(recorded.groups.clone()))
            .send()
            .await
            .map_err(aws_err("ModifyNetworkInterfaceAttribute"))?;
        changes.push(format!("{eni} -> {}", recorded.groups.join(",")));
    }
    let conntrack = match timeouts_to_restore(recorded.connection_tracking, now.connection_tracking)
    {
        Timeouts::Write { timeouts, why } => {
            restore_timeouts(clients, eni, &timeouts).await?;
            changes.push(format!("{eni} conntrack {}{why}", describe(&timeouts)));
            String::new()
        }
        Timeouts::Leave(why) => format!(" ({eni}: {why})"),
    };
    let read = read_groups(clients, eni).await?;
    if read
        != wanted
            .iter()
            .map(|g| g.to_string())
            .collect::<BTreeSet<_>>()
    {
        return Err(AwsError::local(
            "DescribeNetworkInterfaces",
            format!(
                "read back {eni} on {read:?}, expected {:?}",
                recorded.groups
            ),
        ));
    }
    Ok(if changes.is_empty() {
        StepResult::unchanged(format!(
            "{eni} already on {}{conntrack}",
            recorded.groups.join(",")
        ))
    } else {
        StepResult::done(format!("{}{conntrack}", changes.join(", ")))
    })
}

/// What a release does with one interface's connection tracking timeouts.
#[derive(Debug, PartialEq, Eq)]
enum Timeouts {
    /// Written, with what the report adds to say why.
    Write {
        timeouts: ConnectionTracking,
        why: &'static str,
    },
    /// Left as they are, and why.
    Leave(String),
}

fn timeouts_of((tcp, udp_stream, udp): (i32, i32, i32)) -> ConnectionTracking {
    ConnectionTracking {
        tcp_established_timeout: Some(tcp),
        udp_stream_timeout: Some(udp_stream),
        udp_timeout: Some(udp),
    }
}

/// Pure: the recorded timeouts go back (written even when they are in place: the same values
/// again change nothing). Without a record, only the timeouts containment sets are undone, to
/// AWS's defaults, which is what an interface has until someone sets them; any others were set
/// by someone else and are not the release's to change.
fn timeouts_to_restore(
    recorded: Option<ConnectionTracking>,
    current: Option<ConnectionTracking>,
) -> Timeouts {
    use crate::contain::network::{CONNTRACK_TIMEOUTS, DEFAULT_CONNTRACK_TIMEOUTS};
    match (recorded, current) {
        (Some(timeouts), _) => Timeouts::Write { timeouts, why: "" },
        (None, Some(now)) if now == timeouts_of(CONNTRACK_TIMEOUTS) => Timeouts::Write {
            timeouts: timeouts_of(DEFAULT_CONNTRACK_TIMEOUTS),
            why: " (AWS's defaults: the original timeouts were not recorded, and the interface \
                  had the ones containment sets)",
        },
        (None, Some(now)) => Timeouts::Leave(format!(
            "connection tracking timeouts not recorded; left at {}, which containment does not set",
            describe(&now)
        )),
        (None, None) => Timeouts::Leave(
            "its connection tracking timeouts were not recorded, and EC2 reports none: left as \
             they are"
                .to_owned(),
        ),
    }
}

async fn restore_timeouts(
    clients: &Clients,
    eni: &str,
    timeouts: &ConnectionTracking,
) -> Result<(), AwsError> {
    clients
        .ec2
        .modify_network_interface_attribute()
        .network_interface_id(eni)
        .connection_tracking_specification(
            ConnectionTrackingSpecificationRequest::builder()
                .set_tcp_established_timeout(timeouts.tcp_established_timeout)
                .set_udp_stream_timeout(timeouts.udp_stream_timeout)
                .set_udp_timeout(timeouts.udp_timeout)
                .build(),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(aws_err("ModifyNetworkInterfaceAttribute"))
}

fn describe(t: &ConnectionTracking) -> String {
    let part = |v: Option<i32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_owned());
    format!(
        "{}/{}/{}",
        part(t.tcp_established_timeout),
        part(t.udp_stream_timeout),
        part(t.udp_timeout)
    )
}

async fn read_groups(clients: &Clients, eni: &str) -> Result<BTreeSet<String>, AwsError> {
    let output = clients
        .ec2
        .describe_network_interfaces()
        .network_interface_ids(eni)
        .send()
        .await
        .map_err(aws_err("DescribeNetworkInterfaces"))?;
    Ok(output
        .network_interfaces()
        .iter()
        .flat_map(|n| n.groups())
        .filter_map(|g| g.group_id().map(str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{
        ConnectionTrackingSpecificationResponse, Instance, InstanceNetworkInterface,
    };

    use super::*;
    use crate::contain::instance::facts_of;

    #[test]
    fn the_timeouts_described_before_containment_are_kept_for_the_record() {
        let instance = Instance::builder()
            .instance_id("i-12345678")
            .vpc_id("vpc-1")
            .network_interfaces(
                InstanceNetworkInterface::builder()
                    .network_interface_id("eni-1")
                    .connection_tracking_configuration(
                        ConnectionTrackingSpecificationResponse::builder()
                            .tcp_established_timeout(432000)
                            .udp_stream_timeout(180)
                            .udp_timeout(30)
                            .build(),
                    )
                    .build(),
            )
            .network_interfaces(
                InstanceNetworkInterface::builder()
                    .network_interface_id("eni-2")
                    .build(),
            )
            .build();
        let facts = facts_of("i-12345678", &instance);
        let timeouts = facts.interfaces[0].connection_tracking.unwrap();
        assert_eq!(
            timeouts,
            ConnectionTracking {
                tcp_established_timeout: Some(432000),
                udp_stream_timeout: Some(180),
                udp_timeout: Some(30),
            }
        );
        assert_eq!(describe(&timeouts), "432000/180/30");
        assert_eq!(facts.interfaces[1].connection_tracking, None);
    }

    #[test]
    fn recorded_timeouts_are_restored_whatever_the_interface_has_now() {
        let recorded = ConnectionTracking {
            tcp_established_timeout: Some(3600),
            udp_stream_timeout: None,
            udp_timeout: Some(45),
        };
        assert_eq!(
            timeouts_to_restore(Some(recorded), Some(timeouts_of((60, 60, 30)))),
            Timeouts::Write {
                timeouts: recorded,
                why: ""
            }
        );
    }

    #[test]
    fn unrecorded_timeouts_that_containment_set_go_back_to_awss_defaults() {
        match timeouts_to_restore(None, Some(timeouts_of((60, 60, 30)))) {
            Timeouts::Write { timeouts, why } => {
                assert_eq!(describe(&timeouts), "432000/180/30");
                assert!(why.contains("AWS's defaults"), "{why}");
            }
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn unrecorded_timeouts_that_containment_did_not_set_are_left_alone() {
        match timeouts_to_restore(None, Some(timeouts_of((600, 60, 30)))) {
            Timeouts::Leave(why) => assert!(why.contains("left at 600/60/30"), "{why}"),
            other => panic!("expected them left, got {other:?}"),
        }
        assert!(matches!(
            timeouts_to_restore(None, None),
            Timeouts::Leave(_)
        ));
    }

    #[test]
    fn records_without_timeouts_still_parse() {
        let old: InterfaceGroups = serde_json::from_str(
            r#"{"network_interface_id": "eni-1", "vpc_id": "vpc-1",
                "private_ip_addresses": [], "groups": ["sg-1"]}"#,
        )
        .unwrap();
        assert_eq!(old.connection_tracking, None);
    }
}
