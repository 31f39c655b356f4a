//! Round trip 1: `DescribeInstances` for one instance, reduced to the facts every step works
//! from, and the instance's description kept as evidence before anything is changed. Beside it,
//! in the same round trip, `DescribeNetworkInterfaces` for the interfaces attached to it: only
//! that call reports each interface's connection tracking timeouts, which containment shortens
//! and a release puts back.
//!
//! IAM: `ec2:DescribeInstances`, `ec2:DescribeNetworkInterfaces`. Accepts every state but `terminated`: a terminated instance has
//! nothing left to contain, and saying "contained" about it would be a lie.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ec2::types::{Filter, Instance, InstanceLifecycleType, InstanceStateName};
use serde_json::{json, Value};

use crate::aws::{aws_err, AwsError, Clients};
use crate::report::ConnectionTracking;

#[derive(Clone, Debug, PartialEq)]
pub struct InstanceFacts {
    pub instance_id: String,
    pub state: String,
    pub vpc_id: Option<String>,
    pub interfaces: Vec<Interface>,
    pub profile_arn: Option<String>,
    pub volumes: Vec<Volume>,
    pub root_device_name: Option<String>,
    pub root_device_is_ebs: bool,
    pub spot: bool,
    pub tags: BTreeMap<String, String>,
    /// The description as read before any change, for the report.
    pub metadata: Value,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub id: String,
    pub vpc_id: String,
    pub groups: Vec<String>,
    pub private_ips: Vec<String>,
    pub ipv6_addresses: Vec<String>,
    /// As `DescribeNetworkInterfaces` reported them (`None` when it reported none); recorded at
    /// the claim so that a release can put them back.
    pub connection_tracking: Option<ConnectionTracking>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub device_name: String,
    pub volume_id: String,
    pub delete_on_termination: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DescribeError {
    #[error("instance {0} does not exist in this account and region")]
    NotFound(String),
    #[error("instance {0} is terminated; there is nothing left to contain")]
    Terminated(String),
    #[error(transparent)]
    Aws(#[from] AwsError),
}

pub async fn describe(
    clients: &Clients,
    instance_id: &str,
) -> Result<InstanceFacts, DescribeError> {
    let (described, timeouts) = tokio::join!(
        clients
            .ec2
            .describe_instances()
            .instance_ids(instance_id)
            .send(),
        connection_tracking(clients, instance_id),
    );
    let output = described
        .map_err(aws_err("DescribeInstances"))
        .map_err(|e| {
            if e.has_code("InvalidInstanceID.NotFound") || e.has_code("InvalidInstanceID.Malformed")
            {
                DescribeError::NotFound(instance_id.to_owned())
            } else {
                DescribeError::Aws(e)
            }
        })?;
    let instance = output
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.instance_id() == Some(instance_id))
        .ok_or_else(|| DescribeError::NotFound(instance_id.to_owned()))?;
    let mut facts = facts_of(instance_id, instance);
    match timeouts {
        Ok(timeouts) => merge_connection_tracking(&mut facts, &timeouts),
        // Containment does not wait on bookkeeping: without the timeouts, a release finds none
        // recorded and decides from the interface's timeouts then.
        Err(e) => tracing::warn!(instance_id, error = %e, "connection tracking timeouts not read"),
    }
    if facts.state == InstanceStateName::Terminated.as_str() {
        return Err(DescribeError::Terminated(instance_id.to_owned()));
    }
    Ok(facts)
}

/// The connection tracking timeouts of each interface attached to the instance, by interface id,
/// as `DescribeNetworkInterfaces` reports them (`DescribeInstances` does not).
async fn connection_tracking(
    clients: &Clients,
    instance_id: &str,
) -> Result<HashMap<String, ConnectionTracking>, AwsError> {
    let interfaces: Vec<_> = clients
        .ec2
        .describe_network_interfaces()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .values(instance_id)
                .build(),
        )
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(aws_err("DescribeNetworkInterfaces"))?;
    Ok(interfaces
        .iter()
        .filter_map(|eni| {
            let c = eni.connection_tracking_configuration()?;
            Some((
                eni.network_interface_id()?.to_owned(),
                ConnectionTracking {
                    tcp_established_timeout: c.tcp_established_timeout(),
                    udp_stream_timeout: c.udp_stream_timeout(),
                    udp_timeout: c.udp_timeout(),
                },
            ))
        })
        .collect())
}

/// Pure: the timeouts `DescribeNetworkInterfaces` reported, over what `DescribeInstances` showed.
pub fn merge_connection_tracking(
    facts: &mut InstanceFacts,
    timeouts: &HashMap<String, ConnectionTracking>,
) {
    for interface in &mut facts.interfaces {
        if let Some(t) = timeouts.get(&interface.id) {
            interface.connection_tracking = Some(*t);
        }
    }
}

/// Pure: the SDK's description reduced to what the steps need.
pub fn facts_of(instance_id: &str, instance: &Instance) -> InstanceFacts {
    let instance_vpc = instance.vpc_id().map(str::to_owned);
    let interfaces = instance
        .network_interfaces()
        .iter()
        .filter_map(|eni| {
            Some(Interface {
                id: eni.network_interface_id()?.to_owned(),
                vpc_id: eni
                    .vpc_id()
                    .map(str::to_owned)
                    .or_else(|| instance_vpc.clone())?,
                groups: eni
                    .groups()
                    .iter()
                    .filter_map(|g| g.group_id().map(str::to_owned))
                    .collect(),
                private_ips: eni
                    .private_ip_addresses()
                    .iter()
                    .filter_map(|a| a.private_ip_address().map(str::to_owned))
                    .collect(),
                ipv6_addresses: eni
                    .ipv6_addresses()
                    .iter()
                    .filter_map(|a| a.ipv6_address().map(str::to_owned))
                    .collect(),
                connection_tracking: eni.connection_tracking_configuration().map(|c| {
                    ConnectionTracking {
                        tcp_established_timeout: c.tcp_established_timeout(),
                        udp_stream_timeout: c.udp_stream_timeout(),
                        udp_timeout: c.udp_timeout(),
                    }
                }),
            })
        })
        .collect();
    let volumes = instance
        .block_device_mappings()
        .iter()
        .filter_map(|m| {
            let ebs = m.ebs()?;
            Some(Volume {
                device_name: m.device_name()?.to_owned(),
                volume_id: ebs.volume_id()?.to_owned(),
                delete_on_termination: ebs.delete_on_termination().unwrap_or(false),
            })
        })
        .collect();
    let tags = instance
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned())))
        .collect();
    InstanceFacts {
        instance_id: instance_id.to_owned(),
        state: instance
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        vpc_id: instance_vpc,
        interfaces,
        profile_arn: instance
            .iam_instance_profile()
            .and_then(|p| p.arn())
            .map(str::to_owned),
        volumes,
        root_device_name: instance.root_device_name().map(str::to_owned),
        root_device_is_ebs: instance
            .root_device_type()
            .is_none_or(|t| t.as_str() == "ebs"),
        spot: instance.instance_lifecycle() == Some(&InstanceLifecycleType::Spot),
        tags,
        metadata: metadata_of(instance),
    }
}

/// The SDK's types do not serialize, so the forensic record names its fields explicitly.
fn metadata_of(i: &Instance) -> Value {
    let interfaces: Vec<Value> = i
        .network_interfaces()
        .iter()
        .map(|n| {
            json!({
                "network_interface_id": n.network_interface_id(),
                "vpc_id": n.vpc_id(),
                "subnet_id": n.subnet_id(),
                "mac_address": n.mac_address(),
                "device_index": n.attachment().and_then(|a| a.device_index()),
                "groups": n.groups().iter().map(|g| json!({"group_id": g.group_id(), "group_name": g.group_name()})).collect::<Vec<_>>(),
                "private_ip_addresses": n.private_ip_addresses().iter().map(|a| a.private_ip_address()).collect::<Vec<_>>(),
                "ipv6_addresses": n.ipv6_addresses().iter().map(|a| a.ipv6_address()).collect::<Vec<_>>(),
                "public_ip": n.association().and_then(|a| a.public_ip()),
            })
        })
        .collect();
    let block_devices: Vec<Value> = i
        .block_device_mappings()
        .iter()
        .map(|m| {
            json!({
                "device_name": m.device_name(),
                "volume_id": m.ebs().and_then(|e| e.volume_id()),
                "delete_on_termination": m.ebs().and_then(|e| e.delete_on_termination()),
                "attach_time": m.ebs().and_then(|e| e.attach_time()).map(|t| t.to_string()),
            })
        })
        .collect();
    let tags: BTreeMap<&str, &str> = i
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value().unwrap_or(""))))
        .collect();
    json!({
        "instance_id": i.instance_id(),
        "instance_type": i.instance_type().map(|t| t.as_str()),
        "image_id": i.image_id(),
        "state": i.state().and_then(|s| s.name()).map(|n| n.as_str()),
        "launch_time": i.launch_time().map(|t| t.to_string()),
        "availability_zone": i.placement().and_then(|p| p.availability_zone()),
        "vpc_id": i.vpc_id(),
        "subnet_id": i.subnet_id(),
        "private_ip_address": i.private_ip_address(),
        "private_dns_name": i.private_dns_name(),
        "public_ip_address": i.public_ip_address(),
        "public_dns_name": i.public_dns_name(),
        "key_name": i.key_name(),
        "architecture": i.architecture().map(|a| a.as_str()),
        "platform_details": i.platform_details(),
        "instance_lifecycle": i.instance_lifecycle().map(|l| l.as_str()),
        "root_device_name": i.root_device_name(),
        "root_device_type": i.root_device_type().map(|t| t.as_str()),
        "iam_instance_profile_arn": i.iam_instance_profile().and_then(|p| p.arn()),
        "security_groups": i.security_groups().iter().map(|g| json!({"group_id": g.group_id(), "group_name": g.group_name()})).collect::<Vec<_>>(),
        "network_interfaces": interfaces,
        "block_device_mappings": block_devices,
        "metadata_options": i.metadata_options().map(|m| json!({
            "http_tokens": m.http_tokens().map(|t| t.as_str()),
            "http_endpoint": m.http_endpoint().map(|e| e.as_str()),
        })),
        "tags": tags,
    })
}
