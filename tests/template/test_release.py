"""The release function: same build as the containment function, no event source, and a
break-glass role of its own that can undo exactly what containment did and nothing more.
"""

from __future__ import annotations

import re

from template_helpers import (
    ACCOUNT,
    REGION,
    as_list,
    function,
    function_role,
    getatt,
    ref,
    release_function,
    resources_of_type,
    role_statements,
    sample_value,
    service_authorization_data,
)

# Every AWS call of src/release/: the role must allow exactly these. sts:AssumeRole (a member
# account's release role) is not among them: it comes only with MemberRoleName, in a policy of
# its own (RELEASE_MEMBER_ACTIONS), as for the containment role.
RELEASE_ACTIONS = {
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "dynamodb:GetItem",
    # Also for TransactWriteItems, whose two updates (record, kept copy) each need it.
    "dynamodb:UpdateItem",
    "ec2:DescribeInstances",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeIamInstanceProfileAssociations",
    "ec2:DescribeTags",
    "ec2:ModifyNetworkInterfaceAttribute",
    "ec2:ReplaceIamInstanceProfileAssociation",
    "ec2:AssociateIamInstanceProfile",
    "ec2:DisassociateIamInstanceProfile",
    "ec2:CreateTags",
    "ec2:DeleteTags",
    "iam:PassRole",
    "iam:GetInstanceProfile",
    "iam:GetRolePolicy",
    "iam:PutRolePolicy",
    "iam:DeleteRolePolicy",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:AttachInstances",
    "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:RegisterTargets",
    "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
}

# What the release role gets, besides RELEASE_ACTIONS, only when MemberRoleName is set.
RELEASE_MEMBER_ACTIONS = {"sts:AssumeRole"}

# What containment keeps (evidence, protection) and what release must never be able to undo.
NEVER = {
    "ec2:DeleteSnapshot",
    "ec2:ModifySnapshotAttribute",
    "ec2:ModifyInstanceAttribute",
    "ec2:TerminateInstances",
    "ec2:DeleteSecurityGroup",
    "dynamodb:PutItem",
    "dynamodb:DeleteItem",
    "iam:AttachRolePolicy",
    "iam:UpdateAssumeRolePolicy",
}


def release_role(template):
    return function_role(template, release_function(template)[1])


def allows(template) -> set[str]:
    _, role = release_role(template)
    return {a for s in role_statements(role) if s["Effect"] == "Allow" for a in as_list(s["Action"])}


def test_the_release_function_is_the_same_build_in_release_mode(template):
    _, contain = function(template)
    _, release = release_function(template)
    for key in ("CodeUri", "Handler", "Runtime", "Architectures"):
        assert release["Properties"][key] == contain["Properties"][key], key
    assert release["Metadata"] == contain["Metadata"], "sam build builds the binary once for both"
    variables = release["Properties"]["Environment"]["Variables"]
    assert variables["FUNCTION_MODE"] == "release"
    assert contain["Properties"]["Environment"]["Variables"]["FUNCTION_MODE"] == "contain"
    for shared in ("ISOLATION_INSTANCE_PROFILE", "INCIDENT_TABLE"):
        assert variables[shared] == contain["Properties"]["Environment"]["Variables"][shared], shared


def test_nothing_but_a_direct_invocation_reaches_the_release_function(template):
    name, release = release_function(template)
    assert "Events" not in release["Properties"]
    for rule in resources_of_type(template, "AWS::Events::Rule").values():
        for target in rule["Properties"]["Targets"]:
            assert getatt(target["Arn"])[0] != name
    for perm in resources_of_type(template, "AWS::Lambda::Permission").values():
        fn = perm["Properties"]["FunctionName"]
        assert (getatt(fn) or (ref(fn),))[0] != name, "no resource policy: IAM decides who may invoke it"
    assert release["Properties"]["EventInvokeConfig"]["MaximumRetryAttempts"] == 0


def test_the_release_function_has_its_own_role_and_log_group(template):
    contain_role, _ = function_role(template)
    name, role = release_role(template)
    assert name != contain_role
    assert role["Properties"]["Path"] == "/ec2-quarantine/"
    assert not role["Properties"].get("ManagedPolicyArns")
    _, release = release_function(template)
    _, contain = function(template)
    group = ref(release["Properties"]["LoggingConfig"]["LogGroup"])
    assert group != ref(contain["Properties"]["LoggingConfig"]["LogGroup"])
    assert template["Resources"][group]["DeletionPolicy"] == "Retain"


def test_the_release_role_allows_exactly_the_calls_of_a_release(template):
    _, role = release_role(template)
    for s in role_statements(role):
        assert "NotAction" not in s and "NotResource" not in s
        for a in as_list(s["Action"]):
            assert "*" not in a, f"wildcard action {a!r}"
    got = allows(template)
    assert got == RELEASE_ACTIONS, f"missing {sorted(RELEASE_ACTIONS - got)}, unexpected {sorted(got - RELEASE_ACTIONS)}"
    assert not got & NEVER


def test_the_release_role_assumes_member_roles_only_in_a_policy_of_its_own_with_member_role_name(template):
    name, role = release_role(template)
    attached = {
        policy_name: policy
        for policy_name, policy in resources_of_type(template, "AWS::IAM::Policy").items()
        if {ref(r) for r in policy["Properties"]["Roles"]} & {name}
    }
    assert set(attached) == {"MemberReleaseRoleAssumption"}
    policy = attached["MemberReleaseRoleAssumption"]
    assert policy["Condition"] == "MemberRoleSet"
    assert [ref(r) for r in policy["Properties"]["Roles"]] == [name]
    statements = as_list(policy["Properties"]["PolicyDocument"]["Statement"])
    # The one condition: with OrganizationId, only roles of that organization.
    assert all(s["Effect"] == "Allow" for s in statements)
    assert all(
        s["Condition"] == {"Fn::If": ["OrganizationIdSet", {"StringEquals": {"aws:ResourceOrgID": {"Ref": "OrganizationId"}}}, {"Ref": "AWS::NoValue"}]}
        for s in statements
    )
    assert {a for s in statements for a in as_list(s["Action"])} == RELEASE_MEMBER_ACTIONS
    # Only the member release role under the guarded path, in any account (which one, the record says).
    (s,) = statements
    assert sample_value(template, s["Resource"]).startswith("arn:aws:iam::*:role/ec2-quarantine/")
    assert "sts:AssumeRole" not in allows(template), "not in the role itself: the role is the same with or without members"
    assert not (RELEASE_ACTIONS | RELEASE_MEMBER_ACTIONS) & NEVER


def test_the_release_role_uses_resource_level_permissions_wherever_possible(template):
    sar = service_authorization_data()
    _, role = release_role(template)
    for s in role_statements(role):
        for action in as_list(s["Action"]):
            service, name = action.split(":")
            rtypes = sar[service]["Actions"][name.lower()].get("Resources", [])
            for res in as_list(s["Resource"]):
                arn = sample_value(template, res)
                if arn == "*":
                    assert not rtypes, f"{action} supports {rtypes} but is granted on *"
                    continue
                formats = [
                    f.replace("${Partition}", "aws").replace("${Region}", REGION).replace("${Account}", ACCOUNT)
                    for t in rtypes
                    for f in sar[service]["Resources"][t.lower()]["ARNFormats"]
                ]
                assert any(re.fullmatch(f, arn) for f in formats), f"{action} on {arn} ({rtypes})"


def test_the_release_role_passes_roles_only_to_ec2_and_never_the_stacks_own(template):
    name, role = release_role(template)
    stmts = role_statements(role)
    passes = [s for s in stmts if s["Effect"] == "Allow" and "iam:PassRole" in as_list(s["Action"])]
    assert len(passes) == 1
    assert passes[0]["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    (deny,) = [s for s in stmts if s["Effect"] == "Deny"]
    assert {"iam:PassRole", "iam:PutRolePolicy", "iam:DeleteRolePolicy"} <= set(as_list(deny["Action"]))
    assert "Condition" not in deny
    denied = [sample_value(template, r).replace("*", ".*") for r in as_list(deny["Resource"])]
    contain_role, _ = function_role(template)
    iso_role = next(
        ref(r)
        for p in resources_of_type(template, "AWS::IAM::InstanceProfile").values()
        for r in p["Properties"]["Roles"]
    )
    for own in (name, contain_role, iso_role):
        arn = sample_value(template, {"Fn::GetAtt": [own, "Arn"]})
        assert any(re.fullmatch(d, arn) for d in denied), f"{arn} is not protected from the release role"
    assert not any(re.fullmatch(d, f"arn:aws:iam::{ACCOUNT}:role/web-server") for d in denied)


def test_the_release_role_writes_only_its_own_tag_keys(template):
    _, role = release_role(template)
    tagging = [s for s in role_statements(role) if {"ec2:CreateTags", "ec2:DeleteTags"} & set(as_list(s["Action"]))]
    assert tagging
    for s in tagging:
        assert s["Condition"]["ForAllValues:StringLike"]["aws:TagKeys"] == ["ec2-quarantine:*"]
        assert s["Condition"]["Null"]["aws:TagKeys"] == "false", "DeleteTags without keys deletes every tag"
        # The instance, and (CreateTags only) its interfaces and volumes: their marks move to
        # released.
        kinds = {sample_value(template, r).split(":")[5].split("/")[0] for r in as_list(s["Resource"])}
        if "ec2:DeleteTags" in as_list(s["Action"]):
            assert kinds == {"instance"}, kinds
        else:
            assert kinds == {"network-interface", "volume"}, kinds


def test_the_containment_role_still_cannot_release(template):
    """Release's permissions stay out of the role every tag event runs with."""
    _, role = function_role(template)
    granted = {a for s in role_statements(role) if s["Effect"] == "Allow" for a in as_list(s["Action"])}
    for action in ("ec2:DisassociateIamInstanceProfile", "iam:DeleteRolePolicy", "autoscaling:AttachInstances",
                   "elasticloadbalancing:RegisterTargets", "ec2:DeleteTags"):
        assert action not in granted, action


def test_the_stack_outputs_the_release_function(template):
    name, _ = release_function(template)
    assert getatt(template["Outputs"]["ReleaseFunctionArn"]["Value"]) == (name, "Arn")
