//! The network cut: every interface of the instance onto the per-VPC isolation group, a group
//! with no rules but the optional responder ingress (`FORENSIC_INGRESS_CIDRS` on
//! `FORENSIC_INGRESS_PORTS`), and no outbound rule at all.
//!
//! IAM: `ec2:DescribeSecurityGroups`, `ec2:CreateSecurityGroup`, `ec2:CreateTags` (tag on
//! create), `ec2:RevokeSecurityGroupIngress`, `ec2:RevokeSecurityGroupEgress`,
//! `ec2:AuthorizeSecurityGroupIngress`, `ec2:ModifyNetworkInterfaceAttribute`,
//! `ec2:DescribeNetworkInterfaces`.
//!
//! Accepts any state but terminated: interfaces of a stopped instance are moved too, so that it
//! comes back isolated if someone starts it.
//!
//! Idempotent: the group is looked up by name in each VPC before it is created, and one
//! invocation ensures each VPC's group once, however many of its instances sit there. A
//! concurrent invocation that wins the create makes ours fail with `InvalidGroup.Duplicate`;
//! we then adopt the winner's group, so a VPC always ends with exactly one. Interfaces are set
//! per interface with `ModifyNetworkInterfaceAttribute`, never with `ModifyInstanceAttribute
//! Groups`, which fails on instances with more than one interface.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_ec2::types::{
    Filter, IpPermission, ResourceType, SecurityGroup, Tag, TagSpecification,
};
use futures::future::join_all;
use tokio::sync::OnceCell;

use super::instance::InstanceFacts;
use super::rules::{self, Atom};
use super::tags;
use super::{step_report, StepResult};
use crate::aws::{aws_err, AwsError, Clients};
use crate::config::ResponderAccess;
use crate::report::{InterfaceGroups, Step, StepReport};

/// The isolation groups of one invocation, shared by all its instances.
pub struct IsolationGroups {
    name: String,
    /// The group's only rules: inbound from the responders, if configured.
    allowed_ingress: BTreeSet<Atom>,
    /// One `DescribeSecurityGroups` by name for every VPC, started alongside the first
    /// `DescribeInstances` so that an existing group costs no round trip of its own.
    by_name: OnceCell<Result<HashMap<String, SecurityGroup>, AwsError>>,
    ensured: Mutex<HashMap<String, Arc<EnsureOnce>>>,
}

type EnsureOnce = OnceCell<Result<EnsuredGroup, AwsError>>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnsuredGroup {
    pub group_id: String,
    pub vpc_id: String,
    pub result: StepResult,
}

impl IsolationGroups {
    pub fn new(name: impl Into<String>, responders: &ResponderAccess) -> Self {
        Self {
            name: name.into(),
            allowed_ingress: rules::allowed_ingress(responders),
            by_name: OnceCell::new(),
            ensured: Mutex::new(HashMap::new()),
        }
    }

    /// Looks the group up in every VPC at once. Safe to call from every instance's task: the
    /// first call does the work and the others wait for its answer.
    pub async fn prefetch(&self, clients: &Clients) {
        self.by_name
            .get_or_init(|| async {
                let groups = describe_groups(clients, vec![name_filter(&self.name)]).await?;
                Ok(groups
                    .into_iter()
                    .filter_map(|g| Some((g.vpc_id()?.to_owned(), g)))
                    .collect())
            })
            .await;
    }

    /// The id of `vpc_id`'s isolation group as the prefetch found it, if it existed then.
    pub fn known(&self, vpc_id: &str) -> Option<String> {
        match self.by_name.get() {
            Some(Ok(by_vpc)) => by_vpc.get(vpc_id)?.group_id().map(str::to_owned),
            _ => None,
        }
    }

    /// The isolation group of `vpc_id`, found, created or stripped of its rules; once per VPC
    /// per invocation.
    pub async fn ensure(&self, clients: &Clients, vpc_id: &str) -> Result<EnsuredGroup, AwsError> {
        let cell = {
            let mut ensured = self.ensured.lock().unwrap_or_else(|p| p.into_inner());
            ensured.entry(vpc_id.to_owned()).or_default().clone()
        };
        cell.get_or_init(|| self.ensure_uncached(clients, vpc_id))
            .await
            .clone()
    }

    async fn ensure_uncached(
        &self,
        clients: &Clients,
        vpc_id: &str,
    ) -> Result<EnsuredGroup, AwsError> {
        self.prefetch(clients).await;
        let known = match self.by_name.get() {
            Some(Ok(by_vpc)) => by_vpc.get(vpc_id).cloned(),
            // The shared lookup failed (a transient error); ask again for this VPC alone.
            _ => find(clients, &self.name, vpc_id).await?,
        };
        let (group, created) = match known {
            Some(group) => (group, false),
            None => (create_or_adopt(clients, &self.name, vpc_id).await?, true),
        };
        let group_id = group.group_id().unwrap_or_default().to_owned();
        let tagged = tag_as_isolation(clients, &group).await?;
        let (removed, added) = converge_rules(clients, &group, &self.allowed_ingress).await?;
        let rules = match self.allowed_ingress.len() {
            0 => "no rules".to_owned(),
            n => format!("only {n} responder ingress rule(s)"),
        };
        let mut detail = match (created, removed, added) {
            (true, _, _) => format!("created {group_id} in {vpc_id} with {rules}"),
            (false, 0, 0) => format!("{group_id} in {vpc_id} has {rules}"),
            (false, r, a) => {
                format!("removed {r} and added {a} rule(s): {group_id} in {vpc_id} has {rules}")
            }
        };
        if tagged && !created {
            detail.push_str(&format!(
                " (tagged {}={})",
                tags::ROLE,
                tags::ROLE_ISOLATION
            ));
        }
        let result = if created || tagged || removed > 0 || added > 0 {
            StepResult::done(detail)
        } else {
            StepResult::unchanged(detail)
        };
        Ok(EnsuredGroup {
            group_id,
            vpc_id: vpc_id.to_owned(),
            result,
        })
    }
}

// The function's role may only write `ec2-quarantine:` keys, and may only change rules and move
// interfaces onto a group that carries this tag: no `Name` tag, and the tag comes first.
fn role_tag() -> Tag {
    Tag::builder()
        .key(tags::ROLE)
        .value(tags::ROLE_ISOLATION)
        .build()
}

fn is_tagged_isolation(group: &SecurityGroup) -> bool {
    group
        .tags()
        .iter()
        .any(|t| t.key() == Some(tags::ROLE) && t.value() == Some(tags::ROLE_ISOLATION))
}

/// A group of the right name made by hand lacks the role tag; the guard policy and the
/// function's own permissions key on it, so it is added before anything else.
async fn tag_as_isolation(clients: &Clients, group: &SecurityGroup) -> Result<bool, AwsError> {
    if is_tagged_isolation(group) {
        return Ok(false);
    }
    clients
        .ec2
        .create_tags()
        .resources(group.group_id().unwrap_or_default())
        .tags(role_tag())
        .send()
        .await
        .map_err(aws_err("CreateTags"))?;
    Ok(true)
}

fn name_filter(name: &str) -> Filter {
    Filter::builder().name("group-name").values(name).build()
}

async fn describe_groups(
    clients: &Clients,
    filters: Vec<Filter>,
) -> Result<Vec<SecurityGroup>, AwsError> {
    let mut groups = Vec::new();
    let mut pages = clients
        .ec2
        .describe_security_groups()
        .set_filters(Some(filters))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        groups.extend(
            page.map_err(aws_err("DescribeSecurityGroups"))?
                .security_groups()
                .iter()
                .cloned(),
        );
    }
    Ok(groups)
}

/// The group named `name` in `vpc_id`, if there is one.
pub async fn find(
    clients: &Clients,
    name: &str,
    vpc_id: &str,
) -> Result<Option<SecurityGroup>, AwsError> {
    let filters = vec![
        name_filter(name),
        Filter::builder().name("vpc-id").values(vpc_id).build(),
    ];
    Ok(describe_groups(clients, filters).await?.into_iter().next())
}

/// Creates the group; if another invocation created it first, adopts that one instead.
pub async fn create_or_adopt(
    clients: &Clients,
    name: &str,
    vpc_id: &str,
) -> Result<SecurityGroup, AwsError> {
    let created = clients
        .ec2
        .create_security_group()
        .group_name(name)
        .description("ec2-quarantine isolation: no traffic in or out")
        .vpc_id(vpc_id)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .tags(
                    Tag::builder()
                        .key(tags::ROLE)
                        .value(tags::ROLE_ISOLATION)
                        .build(),
                )
                .tags(Tag::builder().key("Name").value(name).build())
                .build(),
        )
        .send()
        .await
        .map_err(aws_err("CreateSecurityGroup"));
    match created {
        Ok(output) => {
            let group_id = output.group_id().unwrap_or_default();
            let groups = describe_groups(
                clients,
                vec![Filter::builder().name("group-id").values(group_id).build()],
            )
            .await?;
            groups.into_iter().next().ok_or_else(|| {
                AwsError::local(
                    "DescribeSecurityGroups",
                    format!("created group {group_id} cannot be read"),
                )
            })
        }
        Err(e) if e.has_code("InvalidGroup.Duplicate") => {
            find(clients, name, vpc_id).await?.ok_or_else(|| {
                AwsError::local(
                    "DescribeSecurityGroups",
                    format!(
                        "group {name} in {vpc_id} was reported as a duplicate but cannot be found"
                    ),
                )
            })
        }
        Err(e) => Err(e),
    }
}

/// Brings the group's rules to exactly `allowed` inbound and nothing outbound, and reads it back
/// until it shows that. Returns (rules revoked, rules added). A concurrent invocation may make
/// the same change first: `InvalidPermission.NotFound` on a revoke and
/// `InvalidPermission.Duplicate` on an authorize then mean "already so", and the group is read
/// again.
async fn converge_rules(
    clients: &Clients,
    group: &SecurityGroup,
    allowed: &BTreeSet<Atom>,
) -> Result<(usize, usize), AwsError> {
    const ROUNDS: usize = 3;
    let group_id = group.group_id().unwrap_or_default();
    let mut current = group.clone();
    let (mut revoked, mut added) = (0, 0);
    for _ in 0..ROUNDS {
        let ingress = rules::atoms_of(current.ip_permissions());
        let unwanted_ingress: Vec<&Atom> = ingress.difference(allowed).collect();
        let missing: Vec<&Atom> = allowed.difference(&ingress).collect();
        let egress = rules::atoms_of(current.ip_permissions_egress());
        let egress: Vec<&Atom> = egress.iter().collect();
        if unwanted_ingress.is_empty() && missing.is_empty() && egress.is_empty() {
            return Ok((revoked, added));
        }
        let (i, e, a) = tokio::join!(
            change(clients, group_id, &unwanted_ingress, Change::RevokeIngress),
            change(clients, group_id, &egress, Change::RevokeEgress),
            change(clients, group_id, &missing, Change::AuthorizeIngress),
        );
        revoked += i? + e?;
        added += a?;
        current = describe_groups(
            clients,
            vec![Filter::builder().name("group-id").values(group_id).build()],
        )
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            AwsError::local("DescribeSecurityGroups", format!("{group_id} disappeared"))
        })?;
    }
    Err(AwsError::local(
        "DescribeSecurityGroups",
        format!("{group_id} still has other rules than the responder access after {ROUNDS} rounds"),
    ))
}

#[derive(Clone, Copy)]
enum Change {
    RevokeIngress,
    RevokeEgress,
    AuthorizeIngress,
}

/// Applies one kind of change to `atoms`; returns how many it changed. Already-done answers
/// count as done by someone else, not as failures.
async fn change(
    clients: &Clients,
    group_id: &str,
    atoms: &[&Atom],
    kind: Change,
) -> Result<usize, AwsError> {
    if atoms.is_empty() {
        return Ok(0);
    }
    let permissions: Vec<IpPermission> = atoms.iter().map(|a| rules::permission_of(a)).collect();
    let result = match kind {
        Change::RevokeIngress => clients
            .ec2
            .revoke_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(permissions))
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err("RevokeSecurityGroupIngress")),
        Change::RevokeEgress => clients
            .ec2
            .revoke_security_group_egress()
            .group_id(group_id)
            .set_ip_permissions(Some(permissions))
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err("RevokeSecurityGroupEgress")),
        Change::AuthorizeIngress => clients
            .ec2
            .authorize_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(permissions))
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err("AuthorizeSecurityGroupIngress")),
    };
    match result {
        Ok(()) => Ok(atoms.len()),
        Err(e)
            if e.has_code("InvalidPermission.NotFound")
                || e.has_code("InvalidPermission.Duplicate") =>
        {
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

/// The result of the network cut for one instance.
pub struct NetworkCut {
    pub group: StepReport,
    pub interfaces: StepReport,
    pub original: Vec<InterfaceGroups>,
    /// Interfaces found already on their isolation group: their original groups were recorded by
    /// the run that moved them.
    pub already_isolated: Vec<String>,
}

pub async fn isolate(
    clients: &Clients,
    groups: &IsolationGroups,
    facts: &InstanceFacts,
) -> NetworkCut {
    let started = Instant::now();
    let vpcs: Vec<&str> = {
        let mut v: Vec<&str> = facts.interfaces.iter().map(|i| i.vpc_id.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let ensured: BTreeMap<&str, Result<EnsuredGroup, AwsError>> = vpcs
        .iter()
        .copied()
        .zip(join_all(vpcs.iter().map(|vpc| groups.ensure(clients, vpc))).await)
        .collect();
    let group_report = step_report(Step::IsolationGroup, started, combine_groups(&ensured));

    let mut original = Vec::new();
    let mut already_isolated = Vec::new();
    for eni in &facts.interfaces {
        match ensured.get(eni.vpc_id.as_str()) {
            Some(Ok(g)) if eni.groups == [g.group_id.as_str()] => {
                already_isolated.push(eni.id.clone())
            }
            _ => original.push(InterfaceGroups {
                network_interface_id: eni.id.clone(),
                vpc_id: eni.vpc_id.clone(),
                private_ip_addresses: eni.private_ips.clone(),
                groups: eni.groups.clone(),
            }),
        }
    }

    let moved_at = Instant::now();
    let moved = move_interfaces(clients, facts, &ensured).await;
    NetworkCut {
        group: group_report,
        interfaces: step_report(Step::MoveNetworkInterfaces, moved_at, moved),
        original,
        already_isolated,
    }
}

fn combine_groups(
    ensured: &BTreeMap<&str, Result<EnsuredGroup, AwsError>>,
) -> Result<StepResult, AwsError> {
    if ensured.is_empty() {
        return Ok(StepResult::skipped("the instance has no network interface"));
    }
    let mut results = Vec::new();
    for group in ensured.values() {
        results.push(group.clone()?.result);
    }
    Ok(StepResult::merge(results))
}

async fn move_interfaces(
    clients: &Clients,
    facts: &InstanceFacts,
    ensured: &BTreeMap<&str, Result<EnsuredGroup, AwsError>>,
) -> Result<StepResult, AwsError> {
    if facts.interfaces.is_empty() {
        return Ok(StepResult::skipped("the instance has no network interface"));
    }
    // Interfaces whose VPC has a group are moved even when another VPC's group failed: a partial
    // cut is better than none, and the failure is still reported.
    let mut to_move = Vec::new();
    let mut unchanged = Vec::new();
    let mut first_error = None;
    for eni in &facts.interfaces {
        match ensured.get(eni.vpc_id.as_str()) {
            Some(Ok(g)) if eni.groups == [g.group_id.as_str()] => unchanged.push(eni.id.as_str()),
            Some(Ok(g)) => to_move.push((eni.id.as_str(), g.group_id.as_str())),
            Some(Err(e)) => {
                first_error.get_or_insert_with(|| {
                    AwsError::local(
                        e.operation,
                        format!(
                            "{} not moved: no isolation group in {} ({e})",
                            eni.id, eni.vpc_id
                        ),
                    )
                });
            }
            None => {}
        }
    }
    let results = join_all(to_move.iter().map(|(eni, group)| async move {
        clients
            .ec2
            .modify_network_interface_attribute()
            .network_interface_id(*eni)
            .groups(*group)
            .send()
            .await
            .map_err(aws_err("ModifyNetworkInterfaceAttribute"))
    }))
    .await;
    for result in results {
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    if !to_move.is_empty() {
        verify_interfaces(clients, &to_move)
            .await
            .map_err(|e| first_error.take().unwrap_or(e))?;
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if to_move.is_empty() {
        return Ok(StepResult::unchanged(format!(
            "{} already on the isolation group",
            unchanged.join(", ")
        )));
    }
    let moved: Vec<String> = to_move
        .iter()
        .map(|(eni, g)| format!("{eni} -> {g}"))
        .collect();
    Ok(StepResult::done(format!("moved {}", moved.join(", "))))
}

/// Reads the moved interfaces back: each must hold exactly its isolation group.
async fn verify_interfaces(clients: &Clients, moved: &[(&str, &str)]) -> Result<(), AwsError> {
    let output = clients
        .ec2
        .describe_network_interfaces()
        .set_network_interface_ids(Some(moved.iter().map(|(eni, _)| eni.to_string()).collect()))
        .send()
        .await
        .map_err(aws_err("DescribeNetworkInterfaces"))?;
    for (eni, group) in moved {
        let actual: Vec<&str> = output
            .network_interfaces()
            .iter()
            .filter(|n| n.network_interface_id() == Some(eni))
            .flat_map(|n| n.groups())
            .filter_map(|g| g.group_id())
            .collect();
        if actual != [*group] {
            return Err(AwsError::local(
                "DescribeNetworkInterfaces",
                format!("read back {eni} with groups {actual:?}, expected only {group}"),
            ));
        }
    }
    Ok(())
}
