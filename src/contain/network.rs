//! The network cut: every interface of the instance onto the per-VPC isolation group, a group
//! with no rules but the optional responder ingress (`FORENSIC_INGRESS_CIDRS` on
//! `FORENSIC_INGRESS_PORTS`), and no outbound rule at all. With `CUT_TRACKED_CONNECTIONS`, each
//! interface first gets shorter connection tracking timeouts and passes through the per-VPC
//! interim group (allow-all, `<name>-interim`), so that connections already open are cut too.
//!
//! IAM: `ec2:DescribeSecurityGroups`, `ec2:CreateSecurityGroup`, `ec2:CreateTags` (tag on
//! create), `ec2:RevokeSecurityGroupIngress`, `ec2:RevokeSecurityGroupEgress`,
//! `ec2:AuthorizeSecurityGroupIngress`, `ec2:AuthorizeSecurityGroupEgress` (interim group only),
//! `ec2:ModifyNetworkInterfaceAttribute`, `ec2:DescribeNetworkInterfaces`.
//!
//! Accepts any state but terminated: interfaces of a stopped instance are moved too, so that it
//! comes back isolated if someone starts it.
//!
//! Idempotent: the groups are looked up by their `ec2-quarantine:role` tag in each VPC before
//! they are created, and one invocation ensures each VPC's groups once, however many of its
//! instances sit there. Only a group the function created is used: it may tag a group only as it
//! creates it, so a group of that name made by someone else is passed over and the group is
//! created as `<name>-<vpc id>` instead ([`candidate_names`]). A concurrent invocation that wins
//! the create makes ours fail with `InvalidGroup.Duplicate`; we then adopt the winner's group,
//! so a VPC always ends with exactly one of each. Interfaces
//! are set per interface with `ModifyNetworkInterfaceAttribute`, never with
//! `ModifyInstanceAttribute Groups`, which fails on instances with more than one interface.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_ec2::types::{
    ConnectionTrackingSpecificationRequest, Filter, IpPermission, ResourceType, SecurityGroup, Tag,
    TagSpecification,
};
use futures::future::join_all;
use tokio::sync::OnceCell;

use super::instance::InstanceFacts;
use super::progress::Progress;
use super::rules::{self, Atom};
use super::tags;
use super::{step_report, StepResult};
use crate::aws::{aws_err, AwsError, Clients};
use crate::config::ResponderAccess;
use crate::consistency::{until_settled, until_visible};
use crate::report::{InterfaceGroups, Status, Step, StepReport};

/// Which group: the isolation group, or the interim one an interface passes through first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Role {
    Isolation,
    Interim,
}

impl Role {
    fn tag_value(self) -> &'static str {
        match self {
            Role::Isolation => tags::ROLE_ISOLATION,
            Role::Interim => tags::ROLE_INTERIM,
        }
    }

    fn description(self) -> &'static str {
        match self {
            Role::Isolation => "ec2-quarantine isolation: no traffic in or out",
            Role::Interim => {
                "ec2-quarantine interim: untracked allow-all, held only while an interface moves to isolation"
            }
        }
    }
}

/// One kind of group: its name and the exact rules it must have.
struct Kind {
    name: String,
    ingress: BTreeSet<Atom>,
    egress: BTreeSet<Atom>,
}

/// The isolation groups of one invocation, shared by all its instances, and the interim groups
/// when tracked connections are cut (`CUT_TRACKED_CONNECTIONS`).
pub struct IsolationGroups {
    isolation: Kind,
    interim: Option<Kind>,
    /// One `DescribeSecurityGroups` by name (both names) for every VPC, started alongside the
    /// first `DescribeInstances` so that an existing group costs no round trip of its own.
    by_name: OnceCell<Result<HashMap<GroupKey, SecurityGroup>, AwsError>>,
    ensured: Mutex<HashMap<GroupKey, Arc<GroupOnce>>>,
}

/// A group by what it is for and its VPC.
type GroupKey = (Role, String);

/// What one invocation does to one group, once however many of its instances need it.
#[derive(Default)]
struct GroupOnce {
    ensured: OnceCell<Result<EnsuredGroup, AwsError>>,
    verified: OnceCell<Result<Option<String>, AwsError>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnsuredGroup {
    pub group_id: String,
    pub vpc_id: String,
    pub result: StepResult,
    /// Created by this invocation and given its rules without reading it back: the read-back
    /// runs beside the interface moves instead of in front of them ([`IsolationGroups::verify`]).
    pub unverified: bool,
}

/// The interim group's name for an isolation group name.
pub fn interim_name(isolation_name: &str) -> String {
    format!("{isolation_name}-interim")
}

impl IsolationGroups {
    /// Isolation groups only: interfaces move straight onto them.
    pub fn new(name: impl Into<String>, responders: &ResponderAccess) -> Self {
        Self {
            isolation: Kind {
                name: name.into(),
                ingress: rules::allowed_ingress(responders),
                egress: BTreeSet::new(),
            },
            interim: None,
            by_name: OnceCell::new(),
            ensured: Mutex::new(HashMap::new()),
        }
    }

    /// With `cut`, each interface passes through the VPC's interim group first: see
    /// [`move_one`] for why.
    pub fn cutting_tracked_connections(mut self, cut: bool) -> Self {
        self.interim = cut.then(|| Kind {
            name: interim_name(&self.isolation.name),
            ingress: rules::allow_all(),
            egress: rules::allow_all(),
        });
        self
    }

    fn kind(&self, role: Role) -> Option<&Kind> {
        match role {
            Role::Isolation => Some(&self.isolation),
            Role::Interim => self.interim.as_ref(),
        }
    }

    /// Looks our groups up in every VPC at once, by their role tag. Safe to call from every
    /// instance's task: the first call does the work and the others wait for its answer.
    pub async fn prefetch(&self, clients: &Clients) {
        self.by_name
            .get_or_init(|| async {
                let mut roles = vec![Role::Isolation.tag_value().to_owned()];
                if self.interim.is_some() {
                    roles.push(Role::Interim.tag_value().to_owned());
                }
                let filter = Filter::builder()
                    .name(format!("tag:{}", tags::ROLE))
                    .set_values(Some(roles))
                    .build();
                let groups = describe_groups(clients, vec![filter]).await?;
                let mut by_vpc = HashMap::new();
                for role in [Role::Isolation, Role::Interim] {
                    let Some(kind) = self.kind(role) else {
                        continue;
                    };
                    let vpcs: BTreeSet<&str> = groups.iter().filter_map(|g| g.vpc_id()).collect();
                    for vpc_id in vpcs {
                        if let Some(group) = ours(&groups, &kind.name, role.tag_value(), vpc_id) {
                            by_vpc.insert((role, vpc_id.to_owned()), group.clone());
                        }
                    }
                }
                Ok(by_vpc)
            })
            .await;
    }

    /// Whether `groups` is exactly one of our groups in `vpc_id`, as the prefetch found them:
    /// an interface left on the interim group by an interrupted run is no original state.
    pub fn is_ours(&self, vpc_id: &str, groups: &[String]) -> bool {
        [Role::Isolation, Role::Interim]
            .into_iter()
            .filter_map(|role| self.known_as(role, vpc_id))
            .any(|group| groups == [group])
    }

    fn known_as(&self, role: Role, vpc_id: &str) -> Option<String> {
        match self.by_name.get() {
            Some(Ok(by_vpc)) => by_vpc
                .get(&(role, vpc_id.to_owned()))?
                .group_id()
                .map(str::to_owned),
            _ => None,
        }
    }

    /// The isolation group of `vpc_id`, found, created or stripped of its rules; once per VPC
    /// per invocation.
    pub async fn ensure(&self, clients: &Clients, vpc_id: &str) -> Result<EnsuredGroup, AwsError> {
        self.ensure_role(clients, Role::Isolation, vpc_id).await
    }

    /// The interim group of `vpc_id`, with exactly its allow-all rules; `None` when tracked
    /// connections are not cut.
    pub async fn ensure_interim(
        &self,
        clients: &Clients,
        vpc_id: &str,
    ) -> Option<Result<EnsuredGroup, AwsError>> {
        self.interim.as_ref()?;
        Some(self.ensure_role(clients, Role::Interim, vpc_id).await)
    }

    fn cells(&self, role: Role, vpc_id: &str) -> Arc<GroupOnce> {
        let mut ensured = self.ensured.lock().unwrap_or_else(|p| p.into_inner());
        ensured
            .entry((role, vpc_id.to_owned()))
            .or_default()
            .clone()
    }

    async fn ensure_role(
        &self,
        clients: &Clients,
        role: Role,
        vpc_id: &str,
    ) -> Result<EnsuredGroup, AwsError> {
        self.cells(role, vpc_id)
            .ensured
            .get_or_init(|| self.ensure_uncached(clients, role, vpc_id))
            .await
            .clone()
    }

    /// Reads a group this invocation created back, once, and removes any rule it has beyond its
    /// own (a default rule other than the one AWS documents). `Some` says what it had to fix.
    async fn verify(
        &self,
        clients: &Clients,
        role: Role,
        group: &EnsuredGroup,
    ) -> Result<Option<String>, AwsError> {
        if !group.unverified {
            return Ok(None);
        }
        self.cells(role, &group.vpc_id)
            .verified
            .get_or_init(|| async {
                let Some(kind) = self.kind(role) else {
                    return Ok(None);
                };
                let described = read_group(clients, &group.group_id).await?;
                let (removed, added) =
                    converge_rules(clients, &described, &kind.ingress, &kind.egress).await?;
                Ok((removed + added > 0).then(|| {
                    format!(
                        "{} read back with other rules than its own: removed {removed} and \
                         added {added}",
                        group.group_id
                    )
                }))
            })
            .await
            .clone()
    }

    /// An interim group without its allow-all rules was closed by an invocation whose interface
    /// could not leave it ([`close_interim`]): every interface still on it moves onto the VPC's
    /// isolation group before the rules come back. One that cannot keeps the group closed, and
    /// this invocation's moves go straight to isolation.
    async fn free_interim(
        &self,
        clients: &Clients,
        interim: &str,
        vpc_id: &str,
    ) -> Result<(), AwsError> {
        let held = interfaces_on(clients, interim).await?;
        if held.is_empty() {
            return Ok(());
        }
        let keep_closed = |e: AwsError| AwsError {
            message: format!(
                "the interim group {interim} holds {} and stays closed until they can move to \
                 isolation: {}",
                held.join(", "),
                e.message
            ),
            ..e
        };
        // Boxed: ensuring the interim group may ensure the isolation group, through this.
        let isolation = Box::pin(self.ensure(clients, vpc_id))
            .await
            .map_err(keep_closed)?;
        for result in join_all(
            held.iter()
                .map(|eni| set_groups(clients, eni, &isolation.group_id)),
        )
        .await
        {
            result.map_err(keep_closed)?;
        }
        Ok(())
    }

    async fn ensure_uncached(
        &self,
        clients: &Clients,
        role: Role,
        vpc_id: &str,
    ) -> Result<EnsuredGroup, AwsError> {
        let Some(kind) = self.kind(role) else {
            return Err(AwsError::local(
                "CreateSecurityGroup",
                "tracked connections are not cut: there is no interim group".to_owned(),
            ));
        };
        self.prefetch(clients).await;
        let known = match self.by_name.get() {
            Some(Ok(by_vpc)) => by_vpc.get(&(role, vpc_id.to_owned())).cloned(),
            // The shared lookup failed (a transient error); ask again for this VPC alone.
            _ => {
                let found = describe_groups(clients, tagged_in(role.tag_value(), vpc_id)).await?;
                ours(&found, &kind.name, role.tag_value(), vpc_id).cloned()
            }
        };
        let (group, created) = match known {
            Some(group) => (group, false),
            None => create_or_adopt_as(clients, &kind.name, vpc_id, role).await?,
        };
        let group_id = group.group_id().unwrap_or_default().to_owned();
        // A group just created has the rules AWS gives every new group, so its rules are set
        // from that without reading it first, and read back beside the moves ([`Self::verify`]).
        if role == Role::Interim && !created && needs_change(&group, &kind.ingress, &kind.egress) {
            self.free_interim(clients, &group_id, vpc_id).await?;
        }
        let (removed, added) = if created {
            write_rules(clients, &group, &kind.ingress, &kind.egress).await?
        } else {
            converge_rules(clients, &group, &kind.ingress, &kind.egress).await?
        };
        let rules = match (role, kind.ingress.len()) {
            (Role::Interim, _) => "only allow-all rules in and out".to_owned(),
            (Role::Isolation, 0) => "no rules".to_owned(),
            (Role::Isolation, n) => format!("only {n} responder ingress rule(s)"),
        };
        let mut detail = match (created, removed, added) {
            (true, _, _) => format!("created {group_id} in {vpc_id} with {rules}"),
            (false, 0, 0) => format!("{group_id} in {vpc_id} has {rules}"),
            (false, r, a) => {
                format!("removed {r} and added {a} rule(s): {group_id} in {vpc_id} has {rules}")
            }
        };
        if role == Role::Interim {
            detail = format!("interim {detail}");
        }
        let result = if created || removed > 0 || added > 0 {
            StepResult::done(detail)
        } else {
            StepResult::unchanged(detail)
        };
        Ok(EnsuredGroup {
            group_id,
            vpc_id: vpc_id.to_owned(),
            result,
            unverified: created,
        })
    }
}

// The function's role may tag a security group only as it creates it, with `ec2-quarantine:`
// keys only, and may only change rules and move interfaces onto a group that carries this tag.
fn role_tag(role: Role) -> Tag {
    Tag::builder()
        .key(tags::ROLE)
        .value(role.tag_value())
        .build()
}

fn is_tagged(group: &SecurityGroup, role: &str) -> bool {
    group
        .tags()
        .iter()
        .any(|t| t.key() == Some(tags::ROLE) && t.value() == Some(role))
}

/// The names a group of kind `name` may have in `vpc_id`, in the order they are tried: its own,
/// then one that names the VPC, for when a group ec2-quarantine did not create holds the first
/// (it is never adopted: the function may tag a group only as it creates it).
pub fn candidate_names(name: &str, vpc_id: &str) -> [String; 2] {
    [name.to_owned(), format!("{name}-{vpc_id}")]
}

/// When every candidate name is held by a group ec2-quarantine did not create: a name nobody can
/// guess, `<name>-<vpc id>-<8 hex digits>`, so that squatting names cannot block the cut.
fn unguessable_name(name: &str, vpc_id: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let mixed = nanos ^ NEXT.fetch_add(1, Ordering::Relaxed).rotate_left(16) ^ std::process::id();
    format!("{name}-{vpc_id}-{mixed:08x}")
}

/// Pure: our group for the role tagged `role` in `vpc_id` among `groups`: tagged with the role,
/// under a candidate name (the first first), else under an unguessable name (the lowest id, so
/// that every invocation picks the same one).
pub(crate) fn ours<'a>(
    groups: &'a [SecurityGroup],
    name: &str,
    role: &str,
    vpc_id: &str,
) -> Option<&'a SecurityGroup> {
    let tagged = || {
        groups
            .iter()
            .filter(move |g| g.vpc_id() == Some(vpc_id) && is_tagged(g, role))
    };
    let by_candidate = candidate_names(name, vpc_id)
        .into_iter()
        .find_map(|candidate| tagged().find(|g| g.group_name() == Some(candidate.as_str())));
    let unguessable = format!("{name}-{vpc_id}-");
    by_candidate.or_else(|| {
        tagged()
            .filter(|g| g.group_name().is_some_and(|n| n.starts_with(&unguessable)))
            .min_by_key(|g| g.group_id())
    })
}

/// The groups of one VPC tagged with a role.
pub(crate) fn tagged_in(role: &str, vpc_id: &str) -> Vec<Filter> {
    vec![
        Filter::builder()
            .name(format!("tag:{}", tags::ROLE))
            .values(role)
            .build(),
        Filter::builder().name("vpc-id").values(vpc_id).build(),
    ]
}

fn by_names(names: Vec<String>, vpc_id: &str) -> Vec<Filter> {
    vec![
        Filter::builder()
            .name("group-name")
            .set_values(Some(names))
            .build(),
        Filter::builder().name("vpc-id").values(vpc_id).build(),
    ]
}

pub(crate) async fn describe_groups(
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

/// The group named `name` in `vpc_id`, if there is one, whoever made it.
pub async fn find(
    clients: &Clients,
    name: &str,
    vpc_id: &str,
) -> Result<Option<SecurityGroup>, AwsError> {
    let filters = by_names(vec![name.to_owned()], vpc_id);
    Ok(describe_groups(clients, filters).await?.into_iter().next())
}

/// Creates the isolation group; if another invocation created it first, adopts that one
/// instead.
pub async fn create_or_adopt(
    clients: &Clients,
    name: &str,
    vpc_id: &str,
) -> Result<SecurityGroup, AwsError> {
    Ok(create_or_adopt_as(clients, name, vpc_id, Role::Isolation)
        .await?
        .0)
}

/// The group, and whether this call created it: a created group is described, not read, so that
/// its rules can be set one round trip sooner. A name held by a group ec2-quarantine did not
/// create is passed over for the next candidate; one held by ours was created concurrently and
/// is adopted.
async fn create_or_adopt_as(
    clients: &Clients,
    name: &str,
    vpc_id: &str,
    role: Role,
) -> Result<(SecurityGroup, bool), AwsError> {
    let mut squatters = Vec::new();
    let [own, vpc_named] = candidate_names(name, vpc_id);
    for candidate in [own, vpc_named, unguessable_name(name, vpc_id)] {
        match create_as(clients, &candidate, vpc_id, role).await {
            Ok(group) => return Ok((group, true)),
            Err(e) if e.has_code("InvalidGroup.Duplicate") => {
                // The winner's group may not be visible to a filtered Describe for seconds yet.
                let found = until_settled(|| find(clients, &candidate, vpc_id), Option::is_some)
                    .await?
                    .ok_or_else(|| {
                        AwsError::local(
                            "DescribeSecurityGroups",
                            format!(
                                "group {candidate} in {vpc_id} was reported as a duplicate but \
                                 cannot be found"
                            ),
                        )
                    })?;
                if is_tagged(&found, role.tag_value()) {
                    return Ok((found, false));
                }
                squatters.push(format!(
                    "{candidate} ({})",
                    found.group_id().unwrap_or_default()
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Err(AwsError::local(
        "CreateSecurityGroup",
        format!(
            "every name the {} group may have in {vpc_id} is held by a group ec2-quarantine did \
             not create (no {}={} tag): {}",
            role.tag_value(),
            tags::ROLE,
            role.tag_value(),
            squatters.join(", ")
        ),
    ))
}

/// A new group, described as AWS creates every security group in a VPC (its tags, no inbound
/// rule, one outbound rule to all IPv4 addresses).
async fn create_as(
    clients: &Clients,
    name: &str,
    vpc_id: &str,
    role: Role,
) -> Result<SecurityGroup, AwsError> {
    let output = clients
        .ec2
        .create_security_group()
        .group_name(name)
        .description(role.description())
        .vpc_id(vpc_id)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .tags(role_tag(role))
                .build(),
        )
        .send()
        .await
        .map_err(aws_err("CreateSecurityGroup"))?;
    Ok(SecurityGroup::builder()
        .group_id(output.group_id().unwrap_or_default())
        .group_name(name)
        .vpc_id(vpc_id)
        .tags(role_tag(role))
        .ip_permissions_egress(rules::permission_of(&rules::default_egress()))
        .build())
}

/// Brings the group's rules to exactly `ingress` inbound and `egress` outbound, and reads it back
/// until it shows that. Returns (rules revoked, rules added). A concurrent invocation may make
/// the same change first: `InvalidPermission.NotFound` on a revoke and
/// `InvalidPermission.Duplicate` on an authorize then mean "already so", and the group is read
/// again.
async fn converge_rules(
    clients: &Clients,
    group: &SecurityGroup,
    ingress: &BTreeSet<Atom>,
    egress: &BTreeSet<Atom>,
) -> Result<(usize, usize), AwsError> {
    const ROUNDS: usize = 3;
    let group_id = group.group_id().unwrap_or_default();
    let mut current = group.clone();
    let (mut revoked, mut added) = (0, 0);
    for _ in 0..ROUNDS {
        if !needs_change(&current, ingress, egress) {
            return Ok((revoked, added));
        }
        let (r, a) = write_rules(clients, &current, ingress, egress).await?;
        revoked += r;
        added += a;
        // Rules just changed may read back stale for seconds: a stale read would only lead to
        // the same change again.
        current = until_settled(
            || read_group(clients, group_id),
            |g| !needs_change(g, ingress, egress),
        )
        .await?;
    }
    Err(AwsError::local(
        "DescribeSecurityGroups",
        format!("{group_id} still has other rules than wanted after {ROUNDS} rounds"),
    ))
}

fn needs_change(group: &SecurityGroup, ingress: &BTreeSet<Atom>, egress: &BTreeSet<Atom>) -> bool {
    rules::atoms_of(group.ip_permissions()) != *ingress
        || rules::atoms_of(group.ip_permissions_egress()) != *egress
}

/// One round of changes from `group` as given to exactly `ingress` and `egress`, all at once.
async fn write_rules(
    clients: &Clients,
    group: &SecurityGroup,
    ingress: &BTreeSet<Atom>,
    egress: &BTreeSet<Atom>,
) -> Result<(usize, usize), AwsError> {
    let group_id = group.group_id().unwrap_or_default();
    let has_in = rules::atoms_of(group.ip_permissions());
    let has_out = rules::atoms_of(group.ip_permissions_egress());
    let unwanted_in: Vec<&Atom> = has_in.difference(ingress).collect();
    let missing_in: Vec<&Atom> = ingress.difference(&has_in).collect();
    let unwanted_out: Vec<&Atom> = has_out.difference(egress).collect();
    let missing_out: Vec<&Atom> = egress.difference(&has_out).collect();
    let (ri, ro, ai, ao) = tokio::join!(
        change(clients, group_id, &unwanted_in, Change::RevokeIngress),
        change(clients, group_id, &unwanted_out, Change::RevokeEgress),
        change(clients, group_id, &missing_in, Change::AuthorizeIngress),
        change(clients, group_id, &missing_out, Change::AuthorizeEgress),
    );
    Ok((ri? + ro?, ai? + ao?))
}

/// A group just created may be missing from a filtered Describe for seconds.
async fn read_group(clients: &Clients, group_id: &str) -> Result<SecurityGroup, AwsError> {
    let filters = || vec![Filter::builder().name("group-id").values(group_id).build()];
    until_settled(
        || async {
            Ok(describe_groups(clients, filters())
                .await?
                .into_iter()
                .next())
        },
        Option::is_some,
    )
    .await?
    .ok_or_else(|| {
        AwsError::local(
            "DescribeSecurityGroups",
            format!("{group_id} cannot be found"),
        )
    })
}

#[derive(Clone, Copy)]
enum Change {
    RevokeIngress,
    RevokeEgress,
    AuthorizeIngress,
    AuthorizeEgress,
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
    // A group this invocation just created may be unknown to EC2 for seconds yet.
    let result = until_visible(|| send_change(clients, group_id, &permissions, kind)).await;
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

async fn send_change(
    clients: &Clients,
    group_id: &str,
    permissions: &[IpPermission],
    kind: Change,
) -> Result<(), AwsError> {
    let permissions = Some(permissions.to_vec());
    match kind {
        Change::RevokeIngress => clients
            .ec2
            .revoke_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(permissions)
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err("RevokeSecurityGroupIngress")),
        Change::RevokeEgress => clients
            .ec2
            .revoke_security_group_egress()
            .group_id(group_id)
            .set_ip_permissions(permissions)
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err("RevokeSecurityGroupEgress")),
        Change::AuthorizeIngress => clients
            .ec2
            .authorize_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(permissions)
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err("AuthorizeSecurityGroupIngress")),
        Change::AuthorizeEgress => clients
            .ec2
            .authorize_security_group_egress()
            .group_id(group_id)
            .set_ip_permissions(permissions)
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err("AuthorizeSecurityGroupEgress")),
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

/// `claimed` ends once the interfaces' original groups are in the incident record (or cannot be):
/// the groups are found or created before that, the interfaces moved only after.
pub async fn isolate(
    clients: &Clients,
    groups: &IsolationGroups,
    facts: &InstanceFacts,
    progress: &Progress,
    claimed: impl Future<Output = ()>,
) -> NetworkCut {
    let started = Instant::now();
    let vpcs: Vec<&str> = {
        let mut v: Vec<&str> = facts.interfaces.iter().map(|i| i.vpc_id.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let (isolation, interim) = tokio::join!(
        join_all(vpcs.iter().map(|vpc| groups.ensure(clients, vpc))),
        join_all(vpcs.iter().map(|vpc| groups.ensure_interim(clients, vpc))),
    );
    let ensured: BTreeMap<&str, Result<EnsuredGroup, AwsError>> =
        vpcs.iter().copied().zip(isolation).collect();
    let interim: BTreeMap<&str, Option<Result<EnsuredGroup, AwsError>>> =
        vpcs.iter().copied().zip(interim).collect();

    let mut original = Vec::new();
    let mut already_isolated = Vec::new();
    for eni in &facts.interfaces {
        match ensured.get(eni.vpc_id.as_str()) {
            Some(Ok(g)) if eni.groups == [g.group_id.as_str()] => {
                already_isolated.push(eni.id.clone())
            }
            // Left there by an interrupted run, which recorded the original groups.
            _ if is_on_interim(&interim, &eni.vpc_id, &eni.groups) => {}
            _ => original.push(InterfaceGroups {
                network_interface_id: eni.id.clone(),
                vpc_id: eni.vpc_id.clone(),
                private_ip_addresses: eni.private_ips.clone(),
                groups: eni.groups.clone(),
                connection_tracking: eni.connection_tracking,
            }),
        }
    }

    // The rules a create just set are read back while the interfaces move: the writes that set
    // them have succeeded, and the read-back only guards against a new group carrying a rule
    // AWS does not document.
    let verify_isolation = join_all(
        ensured
            .values()
            .filter_map(|g| g.as_ref().ok())
            .map(|g| groups.verify(clients, Role::Isolation, g)),
    );
    // The interim group is not read back: an extra rule on an allow-all group changes nothing,
    // and a read-back that put its rules back could reopen a group an interface stuck on it had
    // closed ([`close_interim`]).
    let (moved, group_report) = tokio::join!(
        async {
            claimed.await;
            let moved_at = Instant::now();
            let moved = move_interfaces(clients, facts, &ensured, &interim, progress).await;
            step_report(Step::MoveNetworkInterfaces, moved_at, moved)
        },
        async {
            let verified_isolation = verify_isolation.await;
            let report = step_report(
                Step::IsolationGroup,
                started,
                combine_groups(&ensured, &interim).and_then(|mut result| {
                    let mut fixed = Vec::new();
                    for verified in verified_isolation {
                        fixed.extend(verified?);
                    }
                    if !fixed.is_empty() {
                        result.detail = format!("{}; {}", result.detail, fixed.join("; "));
                    }
                    Ok(result)
                }),
            );
            progress.finished(&report);
            report
        },
    );
    progress.finished(&moved);
    NetworkCut {
        group: group_report,
        interfaces: moved,
        original,
        already_isolated,
    }
}

fn is_on_interim(
    interim: &BTreeMap<&str, Option<Result<EnsuredGroup, AwsError>>>,
    vpc_id: &str,
    groups: &[String],
) -> bool {
    matches!(interim.get(vpc_id), Some(Some(Ok(g))) if groups == [g.group_id.as_str()])
}

/// The isolation groups decide the step; an interim group that could not be ensured is reported
/// by the move, which goes ahead without it.
fn combine_groups(
    ensured: &BTreeMap<&str, Result<EnsuredGroup, AwsError>>,
    interim: &BTreeMap<&str, Option<Result<EnsuredGroup, AwsError>>>,
) -> Result<StepResult, AwsError> {
    if ensured.is_empty() {
        return Ok(StepResult::skipped("the instance has no network interface"));
    }
    let mut results = Vec::new();
    for group in ensured.values() {
        results.push(group.clone()?.result);
    }
    results.extend(
        interim
            .values()
            .filter_map(|g| g.as_ref()?.as_ref().ok())
            .map(|g| g.result.clone()),
    );
    Ok(StepResult::merge(results))
}

/// Idle timeouts for the flows the interim group cannot untrack (ICMP, and flows AWS tracks
/// automatically): the documented minimums (TCP established, UDP stream, UDP).
pub(crate) const CONNTRACK_TIMEOUTS: (i32, i32, i32) = (60, 60, 30);

/// AWS's defaults for an interface whose timeouts were never set (TCP established, UDP stream,
/// UDP), from `ConnectionTrackingConfiguration` in the EC2 API reference: what a release sets
/// where containment shortened timeouts it could not record.
pub(crate) const DEFAULT_CONNTRACK_TIMEOUTS: (i32, i32, i32) = (432_000, 180, 30);

/// One interface's way to isolation.
struct Move<'a> {
    eni: &'a str,
    isolation: &'a str,
    /// `Some(Err)`: tracked connections are cut, but the VPC's interim group is not usable.
    interim: Option<Result<&'a str, String>>,
}

async fn move_interfaces(
    clients: &Clients,
    facts: &InstanceFacts,
    ensured: &BTreeMap<&str, Result<EnsuredGroup, AwsError>>,
    interim: &BTreeMap<&str, Option<Result<EnsuredGroup, AwsError>>>,
    progress: &Progress,
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
            Some(Ok(g)) => to_move.push(Move {
                eni: eni.id.as_str(),
                isolation: g.group_id.as_str(),
                interim: match interim.get(eni.vpc_id.as_str()) {
                    Some(Some(Ok(i))) => Some(Ok(i.group_id.as_str())),
                    Some(Some(Err(e))) => Some(Err(e.to_string())),
                    _ => None,
                },
            }),
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
    let results = join_all(to_move.iter().map(|m| move_one(clients, m))).await;
    let mut moved = Vec::new();
    for result in results {
        match result {
            Ok(sequence) => moved.push(sequence),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    progress.written(
        Step::MoveNetworkInterfaces,
        match (&first_error, to_move.is_empty()) {
            (Some(_), _) => Status::Failed,
            (None, true) => Status::Unchanged,
            (None, false) => Status::Done,
        },
    );
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
    Ok(StepResult::done(format!("moved {}", moved.join("; "))))
}

/// Security groups only judge new flows against their rules: a connection the instance already
/// has (a reverse shell) is tracked, and a tracked flow outlives the rules that let it in. A flow
/// allowed by rules open to every address in both directions is not tracked, and removing those
/// rules cuts it at once. So the interface first goes onto the interim group, whose allow-all
/// rules make its flows untracked, then straight onto the isolation group, which removes them.
/// No pause between the two: the change of groups is what untracks, and every moment on the
/// interim group is a moment open to all.
///
/// The shorter timeouts are for the flows the interim group cannot untrack (ICMP, flows AWS
/// tracks automatically), which outlive the move onto the isolation group until they idle out.
/// They only have to be in place before that last move, so they are set beside the interim move,
/// in the same round trip, not before it.
///
/// Returns the sequence, as the report shows it.
async fn move_one(clients: &Clients, m: &Move<'_>) -> Result<String, AwsError> {
    let (shortened, through) = tokio::join!(
        async {
            match m.interim {
                Some(_) => Some(shorten_timeouts(clients, m.eni).await),
                None => None,
            }
        },
        async {
            match &m.interim {
                Some(Ok(interim)) => Some(set_groups(clients, m.eni, interim).await),
                _ => None,
            }
        },
    );
    let mut sequence = Vec::new();
    let (tcp, udp_stream, udp) = CONNTRACK_TIMEOUTS;
    // Not every instance type takes these timeouts; the cut does not depend on them.
    match shortened {
        Some(Ok(())) => sequence.push(format!("conntrack {tcp}/{udp_stream}/{udp}")),
        Some(Err(e)) => sequence.push(format!("conntrack timeouts not shortened ({e})")),
        None => {}
    }
    let on_interim = match (&m.interim, &through) {
        (Some(Ok(interim)), Some(Ok(()))) => Some(*interim),
        _ => None,
    };
    match (&m.interim, through) {
        (Some(Ok(interim)), Some(Ok(()))) => sequence.push(format!("{interim} -> {}", m.isolation)),
        (Some(Ok(interim)), Some(Err(e))) => sequence.push(format!(
            "not moved through {interim} ({e}), tracked connections may survive: -> {}",
            m.isolation
        )),
        (Some(Err(e)), _) => sequence.push(format!(
            "no interim group ({e}), tracked connections may survive: -> {}",
            m.isolation
        )),
        _ => sequence.push(format!("-> {}", m.isolation)),
    }
    if let Err(e) = set_groups(clients, m.eni, m.isolation).await {
        return Err(match on_interim {
            Some(interim) => left_on_interim(clients, m, interim, e).await,
            None => e,
        });
    }
    Ok(format!("{}: {}", m.eni, sequence.join(", ")))
}

/// The move onto isolation failed with the interface on the interim group: the group is closed
/// at once ([`close_interim`]), and the error says where the interface is and what was done.
async fn left_on_interim(clients: &Clients, m: &Move<'_>, interim: &str, e: AwsError) -> AwsError {
    let closed = close_interim(clients, interim).await;
    AwsError {
        message: format!(
            "{} not moved onto {} ({}); it is left on the interim group {interim}; {closed}",
            m.eni, m.isolation, e.message
        ),
        ..e
    }
}

async fn shorten_timeouts(clients: &Clients, eni: &str) -> Result<(), AwsError> {
    let (tcp, udp_stream, udp) = CONNTRACK_TIMEOUTS;
    clients
        .ec2
        .modify_network_interface_attribute()
        .network_interface_id(eni)
        .connection_tracking_specification(
            ConnectionTrackingSpecificationRequest::builder()
                .tcp_established_timeout(tcp)
                .udp_stream_timeout(udp_stream)
                .udp_timeout(udp)
                .build(),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(aws_err("ModifyNetworkInterfaceAttribute"))
}

/// A group this invocation just created may be unknown to EC2 for seconds yet.
async fn set_groups(clients: &Clients, eni: &str, group: &str) -> Result<(), AwsError> {
    until_visible(|| async {
        clients
            .ec2
            .modify_network_interface_attribute()
            .network_interface_id(eni)
            .groups(group)
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err("ModifyNetworkInterfaceAttribute"))
    })
    .await
}

/// Fail closed: an interface that could not leave the allow-all interim group must not stay open
/// on it, so the interim group loses every rule and becomes an isolation group itself. An
/// invocation that later needs the interim group first moves every interface it finds on it onto
/// the isolation group, and puts the allow-all rules back only once none is left
/// ([`IsolationGroups::free_interim`]). Returns what the report says.
async fn close_interim(clients: &Clients, interim: &str) -> String {
    let closed = async {
        let group = read_group(clients, interim).await?;
        converge_rules(clients, &group, &BTreeSet::new(), &BTreeSet::new()).await
    };
    match closed.await {
        Ok(_) => format!("the rules of {interim} were revoked, so it lets nothing in or out"),
        Err(e) => format!(
            "the rules of {interim} could not be revoked either ({e}): an interface on it may be \
             open"
        ),
    }
}

/// Reads the moved interfaces back: each must hold exactly its isolation group. A read may be
/// stale for seconds, so one that still shows other groups is read again within the visibility
/// budget. One found on the interim group was moved there by a concurrent invocation for the
/// same instance after our last move, and that invocation's own isolation move may never come
/// (it may be cut short), so it is moved on to the isolation group again and read back once
/// more.
async fn verify_interfaces(clients: &Clients, moved: &[Move<'_>]) -> Result<(), AwsError> {
    const ROUNDS: usize = 3;
    let mut pending: Vec<&Move<'_>> = moved.iter().collect();
    for _ in 0..ROUNDS {
        let ids: Vec<String> = pending.iter().map(|m| m.eni.to_owned()).collect();
        let read = until_settled(
            || read_interface_groups(clients, &ids),
            |groups| pending.iter().all(|m| m.isolated_or_interim(groups)),
        )
        .await?;
        let mut again = Vec::new();
        for m in pending {
            let actual = read.get(m.eni).map(Vec::as_slice).unwrap_or_default();
            match (actual, &m.interim) {
                ([group], _) if group == m.isolation => {}
                ([group], Some(Ok(interim))) if group == interim => again.push(m),
                _ => {
                    return Err(AwsError::local(
                        "DescribeNetworkInterfaces",
                        format!(
                            "read back {} with groups {actual:?}, expected only {}",
                            m.eni, m.isolation
                        ),
                    ))
                }
            }
        }
        if again.is_empty() {
            return Ok(());
        }
        let moved_on = join_all(again.iter().map(|m| async move {
            match (set_groups(clients, m.eni, m.isolation).await, &m.interim) {
                (Err(e), Some(Ok(interim))) => Err(left_on_interim(clients, m, interim, e).await),
                (result, _) => result,
            }
        }))
        .await;
        for result in moved_on {
            result?;
        }
        pending = again;
    }
    Err(AwsError::local(
        "DescribeNetworkInterfaces",
        format!(
            "{} kept coming back on the interim group after {ROUNDS} moves to isolation",
            pending.iter().map(|m| m.eni).collect::<Vec<_>>().join(", ")
        ),
    ))
}

impl Move<'_> {
    fn isolated_or_interim(&self, groups: &HashMap<String, Vec<String>>) -> bool {
        match groups.get(self.eni).map(Vec::as_slice) {
            Some([group]) => {
                group == self.isolation || matches!(&self.interim, Some(Ok(i)) if group == i)
            }
            _ => false,
        }
    }
}

/// The interfaces that have `group` among their groups.
async fn interfaces_on(clients: &Clients, group: &str) -> Result<Vec<String>, AwsError> {
    let mut found = Vec::new();
    let mut pages = clients
        .ec2
        .describe_network_interfaces()
        .filters(Filter::builder().name("group-id").values(group).build())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(aws_err("DescribeNetworkInterfaces"))?;
        found.extend(
            page.network_interfaces()
                .iter()
                .filter_map(|n| n.network_interface_id().map(str::to_owned)),
        );
    }
    Ok(found)
}

/// Each interface's groups, by interface id.
async fn read_interface_groups(
    clients: &Clients,
    ids: &[String],
) -> Result<HashMap<String, Vec<String>>, AwsError> {
    let output = clients
        .ec2
        .describe_network_interfaces()
        .set_network_interface_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(aws_err("DescribeNetworkInterfaces"))?;
    Ok(output
        .network_interfaces()
        .iter()
        .filter_map(|n| {
            let groups = n
                .groups()
                .iter()
                .filter_map(|g| g.group_id())
                .map(str::to_owned);
            Some((n.network_interface_id()?.to_owned(), groups.collect()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISO: &str = tags::ROLE_ISOLATION;

    fn group(id: &str, name: &str, vpc: &str, role: Option<Role>) -> SecurityGroup {
        let group = SecurityGroup::builder()
            .group_id(id)
            .group_name(name)
            .vpc_id(vpc);
        match role {
            Some(role) => group.tags(role_tag(role)).build(),
            None => group.build(),
        }
    }

    #[test]
    fn our_group_is_the_one_tagged_with_its_role_under_its_own_name_first() {
        let groups = [
            group("sg-other-vpc", "iso", "vpc-2", Some(Role::Isolation)),
            group("sg-vpc-named", "iso-vpc-1", "vpc-1", Some(Role::Isolation)),
            group("sg-own-name", "iso", "vpc-1", Some(Role::Isolation)),
            group("sg-interim", "iso-interim", "vpc-1", Some(Role::Interim)),
        ];
        let found = ours(&groups, "iso", ISO, "vpc-1");
        assert_eq!(found.and_then(|g| g.group_id()), Some("sg-own-name"));
    }

    #[test]
    fn with_both_names_squatted_the_lowest_unguessably_named_group_is_ours() {
        let groups = [
            group("sg-by-hand", "iso", "vpc-1", None),
            group("sg-by-hand-2", "iso-vpc-1", "vpc-1", None),
            group("sg-b", "iso-vpc-1-0000beef", "vpc-1", Some(Role::Isolation)),
            group("sg-a", "iso-vpc-1-0000cafe", "vpc-1", Some(Role::Isolation)),
            group(
                "sg-c",
                "other-vpc-1-00000001",
                "vpc-1",
                Some(Role::Isolation),
            ),
        ];
        let found = ours(&groups, "iso", ISO, "vpc-1");
        assert_eq!(found.and_then(|g| g.group_id()), Some("sg-a"));
        assert!(unguessable_name("iso", "vpc-1").starts_with("iso-vpc-1-"));
        assert_ne!(
            unguessable_name("iso", "vpc-1"),
            unguessable_name("iso", "vpc-1")
        );
    }

    #[test]
    fn a_group_ec2_quarantine_did_not_create_is_never_ours_whatever_its_name() {
        let groups = [
            group("sg-by-hand", "iso", "vpc-1", None),
            group("sg-wrong-role", "iso-vpc-1", "vpc-1", Some(Role::Interim)),
        ];
        assert_eq!(ours(&groups, "iso", ISO, "vpc-1"), None);
        let groups = [
            group("sg-by-hand", "iso", "vpc-1", None),
            group("sg-ours", "iso-vpc-1", "vpc-1", Some(Role::Isolation)),
        ];
        let found = ours(&groups, "iso", ISO, "vpc-1");
        assert_eq!(found.and_then(|g| g.group_id()), Some("sg-ours"));
    }

    #[test]
    fn the_second_name_names_the_vpc() {
        assert_eq!(
            candidate_names("ec2-quarantine-isolation", "vpc-1"),
            [
                "ec2-quarantine-isolation".to_owned(),
                "ec2-quarantine-isolation-vpc-1".to_owned()
            ]
        );
    }
}
