//! The two EBS completion events the encrypted copies follow, from JSON to a request, with no
//! I/O (the shapes are those of the EBS User Guide, "Amazon EventBridge events for Amazon
//! EBS"; both come from source `aws.ec2`):
//!
//! - "EBS Multi-Volume Snapshots Completion Status", `detail.event` `createSnapshots`: the
//!   snapshots of one `CreateSnapshots` call, in `detail.snapshots[].snapshot_id` (ARNs);
//! - "EBS Snapshot Notification", `detail.event` `copySnapshot`: the copy in
//!   `detail.snapshot_id`, its source in `detail.source` (ARNs).
//!
//! `aws_lambda_events` has no type for either. Whether a snapshot is evidence of this function
//! is not in the event: that takes a read, so it is decided later, not here.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde_json::Value;

use crate::event::{EventError, Request};

pub const EC2_SOURCE: &str = "aws.ec2";
pub const MULTI_VOLUME: &str = "EBS Multi-Volume Snapshots Completion Status";
pub const SNAPSHOT_NOTIFICATION: &str = "EBS Snapshot Notification";
const CREATE_SNAPSHOTS: &str = "createSnapshots";
const COPY_SNAPSHOT: &str = "copySnapshot";

/// More snapshots than an instance has volumes: not a real `CreateSnapshots` set.
pub const MAX_SNAPSHOTS_PER_EVENT: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEvent {
    pub event_id: Option<String>,
    pub region: Option<String>,
    /// The account the event comes from: a member's, when `member-account.yaml` forwards it.
    pub account: Option<String>,
    /// `detail.result`: `succeeded`, or `failed` with `cause`.
    pub succeeded: bool,
    pub cause: String,
    pub kind: SnapshotEventKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotEventKind {
    /// A `CreateSnapshots` set completed: its snapshot ids, in the event's order.
    Created { snapshot_ids: Vec<String> },
    /// A `CopySnapshot` completed: the new snapshot and the one it copies.
    Copied { copy_id: String, source_id: String },
}

/// Whether `(source, detail-type)` is one of the two events handled here.
pub fn is_snapshot_event(source: &str, detail_type: &str) -> bool {
    source == EC2_SOURCE && (detail_type == MULTI_VOLUME || detail_type == SNAPSHOT_NOTIFICATION)
}

pub fn parse(event: EventBridgeEvent<Value>) -> Result<Request, EventError> {
    let detail = &event.detail;
    if !detail.is_object() {
        return Err(malformed(format!("detail must be an object, not {detail}")));
    }
    let name = string(detail, "event")?;
    let wanted = if event.detail_type == MULTI_VOLUME {
        CREATE_SNAPSHOTS
    } else {
        COPY_SNAPSHOT
    };
    if name != wanted {
        return Ok(Request::Ignore {
            reason: format!(
                "{:?} events {name:?} are not handled (only {wanted:?}: the encrypted copies of \
                 evidence snapshots follow it)",
                event.detail_type
            ),
        });
    }
    let succeeded = match string(detail, "result")? {
        "succeeded" => true,
        "failed" => false,
        other => {
            return Err(malformed(format!(
                "detail.result must be succeeded or failed, not {other:?}"
            )))
        }
    };
    let cause = match detail.get("cause") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(cause)) => cause.clone(),
        Some(other) => {
            return Err(malformed(format!(
                "detail.cause must be a string, not {other}"
            )))
        }
    };
    let kind = if wanted == CREATE_SNAPSHOTS {
        created(detail)?
    } else {
        SnapshotEventKind::Copied {
            copy_id: snapshot_id_of(string(detail, "snapshot_id")?, "detail.snapshot_id")?,
            source_id: snapshot_id_of(string(detail, "source")?, "detail.source")?,
        }
    };
    Ok(Request::Snapshots(SnapshotEvent {
        event_id: event.id.filter(|id| !id.is_empty()),
        region: event.region,
        account: event.account.filter(|a| !a.is_empty()),
        succeeded,
        cause,
        kind,
    }))
}

fn created(detail: &Value) -> Result<SnapshotEventKind, EventError> {
    let items = match detail.get("snapshots") {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(malformed(format!(
                "detail.snapshots must be a list, not {other}"
            )))
        }
        None => return Err(malformed("detail.snapshots is missing".to_owned())),
    };
    if items.is_empty() {
        return Err(malformed("detail.snapshots is empty".to_owned()));
    }
    if items.len() > MAX_SNAPSHOTS_PER_EVENT {
        return Err(malformed(format!(
            "detail.snapshots names {} snapshots; one set has at most {MAX_SNAPSHOTS_PER_EVENT}",
            items.len()
        )));
    }
    let mut snapshot_ids: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("detail.snapshots[{i}].snapshot_id");
        let arn = item
            .get("snapshot_id")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(format!("{field} must be a snapshot ARN")))?;
        let id = snapshot_id_of(arn, &field)?;
        if !snapshot_ids.contains(&id) {
            snapshot_ids.push(id);
        }
    }
    Ok(SnapshotEventKind::Created { snapshot_ids })
}

fn string<'a>(detail: &'a Value, field: &str) -> Result<&'a str, EventError> {
    match detail.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(malformed(format!(
            "detail.{field} must be a string, not {other}"
        ))),
        None => Err(malformed(format!("detail.{field} is missing"))),
    }
}

/// `arn:PARTITION:ec2:...:snapshot/snap-...`. The region and account fields are not read: the
/// EBS documentation's own samples put the region in either place.
fn snapshot_id_of(arn: &str, field: &str) -> Result<String, EventError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let id =
        (parts.len() == 6 && parts[0] == "arn" && parts[1].starts_with("aws") && parts[2] == "ec2")
            .then(|| parts[5].strip_prefix("snapshot/"))
            .flatten()
            .filter(|id| is_snapshot_id(id));
    id.map(str::to_owned)
        .ok_or_else(|| malformed(format!("{field} {arn:?} is not an EBS snapshot ARN")))
}

pub fn is_snapshot_id(id: &str) -> bool {
    id.strip_prefix("snap-").is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn malformed(message: String) -> EventError {
    EventError::MalformedSnapshotEvent(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Trigger;
    use serde_json::json;

    fn trigger() -> Trigger {
        Trigger {
            key: "Quarantine".into(),
            value: "true".into(),
            guardduty_min_severity: 7.0,
        }
    }

    fn envelope(detail_type: &str, detail: Value) -> Value {
        json!({
            "version": "0", "id": "5c2e1f4a-8d3b-4e6f-9a1c-2b3d4e5f6a7b",
            "detail-type": detail_type, "source": "aws.ec2", "account": "123456789012",
            "time": "2026-11-23T10:05:00Z", "region": "us-east-1",
            "resources": ["arn:aws:ec2::us-east-1:snapshot/snap-0123456789abcdef0"],
            "detail": detail
        })
    }

    fn created_event(result: &str) -> Value {
        envelope(
            MULTI_VOLUME,
            json!({
                "event": "createSnapshots", "result": result, "cause": "", "request-id": "",
                "startTime": "2026-11-23T10:00:00Z", "endTime": "2026-11-23T10:05:00Z",
                "snapshots": [
                    {"snapshot_id": "arn:aws:ec2::us-east-1:snapshot/snap-0123456789abcdef0",
                     "source": "arn:aws:ec2::us-east-1:volume/vol-0123456789abcdef0", "status": "completed"},
                    {"snapshot_id": "arn:aws:ec2:us-east-1::snapshot/snap-0fedcba9876543210",
                     "source": "arn:aws:ec2::us-east-1:volume/vol-0fedcba9876543210", "status": "completed"}
                ]
            }),
        )
    }

    fn copied_event(result: &str) -> Value {
        envelope(
            SNAPSHOT_NOTIFICATION,
            json!({
                "event": "copySnapshot", "result": result, "cause": "", "request-id": "",
                "snapshot_id": "arn:aws:ec2:us-east-1::snapshot/snap-0aaaaaaaaaaaaaaaa",
                "source": "arn:aws:ec2:us-east-1::snapshot/snap-0123456789abcdef0",
                "startTime": "2026-11-23T10:05:00Z", "endTime": "2026-11-23T10:09:00Z",
                "Incremental": "false"
            }),
        )
    }

    #[test]
    fn a_completed_snapshot_set_names_its_snapshots_whichever_arn_layout_it_uses() {
        let request = Request::from_value(created_event("succeeded"), &trigger()).unwrap();
        let Request::Snapshots(event) = request else {
            panic!("{request:?}")
        };
        assert!(event.succeeded);
        assert_eq!(event.region.as_deref(), Some("us-east-1"));
        assert_eq!(
            event.kind,
            SnapshotEventKind::Created {
                snapshot_ids: vec![
                    "snap-0123456789abcdef0".into(),
                    "snap-0fedcba9876543210".into()
                ]
            }
        );
    }

    #[test]
    fn a_completed_copy_names_the_copy_and_its_source() {
        let mut event = copied_event("failed");
        event["detail"]["cause"] = json!("Source snapshot ID is not valid");
        let Request::Snapshots(event) = Request::from_value(event, &trigger()).unwrap() else {
            panic!()
        };
        assert!(!event.succeeded);
        assert_eq!(event.cause, "Source snapshot ID is not valid");
        assert_eq!(
            event.kind,
            SnapshotEventKind::Copied {
                copy_id: "snap-0aaaaaaaaaaaaaaaa".into(),
                source_id: "snap-0123456789abcdef0".into()
            }
        );
    }

    #[test]
    fn other_snapshot_notifications_are_ignored() {
        let mut event = copied_event("succeeded");
        event["detail"]["event"] = json!("createSnapshot");
        let request = Request::from_value(event, &trigger()).unwrap();
        assert!(
            matches!(&request, Request::Ignore { reason } if reason.contains("\"createSnapshot\"")),
            "{request:?}"
        );
    }

    #[test]
    fn a_malformed_snapshot_event_names_the_field() {
        let mut cases: Vec<(Value, &str)> = Vec::new();
        let mut e = created_event("succeeded");
        e["detail"]["result"] = json!("done");
        cases.push((e, "detail.result must be succeeded or failed"));
        let mut e = created_event("succeeded");
        e["detail"]["snapshots"] = json!([]);
        cases.push((e, "detail.snapshots is empty"));
        let mut e = created_event("succeeded");
        e["detail"].as_object_mut().unwrap().remove("snapshots");
        cases.push((e, "detail.snapshots is missing"));
        let mut e = created_event("succeeded");
        e["detail"]["snapshots"][1]["snapshot_id"] =
            json!("arn:aws:ec2::us-east-1:volume/vol-0123456789abcdef0");
        cases.push((e, "detail.snapshots[1].snapshot_id"));
        let mut e = created_event("succeeded");
        e["detail"]["snapshots"][0] = json!({"source": "x"});
        cases.push((e, "detail.snapshots[0].snapshot_id must be a snapshot ARN"));
        let mut e = copied_event("succeeded");
        e["detail"]["source"] = json!(42);
        cases.push((e, "detail.source must be a string"));
        let mut e = copied_event("succeeded");
        e["detail"]["snapshot_id"] = json!("snap-0aaaaaaaaaaaaaaaa");
        cases.push((e, "detail.snapshot_id"));
        let mut e = copied_event("succeeded");
        e["detail"].as_object_mut().unwrap().remove("event");
        cases.push((e, "detail.event is missing"));
        let mut e = copied_event("succeeded");
        e["detail"] = json!("copySnapshot");
        cases.push((e, "detail must be an object"));
        let mut e = created_event("succeeded");
        let many: Vec<Value> = (0..=MAX_SNAPSHOTS_PER_EVENT)
            .map(|n| json!({"snapshot_id": format!("arn:aws:ec2:us-east-1::snapshot/snap-{n:017x}")}))
            .collect();
        e["detail"]["snapshots"] = json!(many);
        cases.push((e, "names 101 snapshots"));
        for (event, expected) in cases {
            let err = Request::from_value(event.clone(), &trigger())
                .expect_err(&format!("{event} must be invalid"));
            assert!(
                matches!(&err, EventError::MalformedSnapshotEvent(m) if m.contains(expected)),
                "error for {event} should say {expected:?}: {err}"
            );
        }
    }

    #[test]
    fn snapshot_ids_have_eight_or_seventeen_lowercase_hex_digits() {
        assert!(is_snapshot_id("snap-01234567"));
        assert!(is_snapshot_id("snap-0123456789abcdef0"));
        assert!(!is_snapshot_id("snap-0123456789ABCDEF0"));
        assert!(!is_snapshot_id("snap-012345678"));
        assert!(!is_snapshot_id("vol-01234567"));
    }
}
