"""samconfig.toml: the defaults `sam build` / `sam deploy --guided` start from."""

from __future__ import annotations

import re
import tomllib

import pytest

from template_helpers import REPO, parameter_defaults

SAMCONFIG = REPO / "samconfig.toml"


@pytest.fixture(scope="module")
def config() -> dict:
    return tomllib.loads(SAMCONFIG.read_text())


def parse_overrides(value) -> dict[str, str]:
    """parameter_overrides as SAM reads it (its own parser when installed)."""
    items = tuple(value) if isinstance(value, list) else (value,)
    try:
        from samcli.cli.types import CfnParameterOverridesType
    except ImportError:
        out = {}
        for item in items:
            for m in re.finditer(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))', item):
                out[m.group(1)] = m.group(2) if m.group(2) is not None else m.group(3)
        return out
    return dict(CfnParameterOverridesType().convert(items, None, None))


def test_stack_and_deploy_defaults(config):
    d = config["default"]
    assert config["version"] == 0.1
    assert d["global"]["parameters"]["stack_name"] == "ec2-quarantine"
    deploy = d["deploy"]["parameters"]
    caps = deploy["capabilities"].split() if isinstance(deploy["capabilities"], str) else deploy["capabilities"]
    assert "CAPABILITY_IAM" in caps
    # The template names no IAM resource (test_template.test_no_named_iam_resources).
    assert "CAPABILITY_NAMED_IAM" not in caps
    assert deploy["confirm_changeset"] is True
    assert deploy["resolve_s3"] is True


def test_parameter_overrides_are_the_template_defaults(config, template):
    overrides = parse_overrides(config["default"]["deploy"]["parameters"]["parameter_overrides"])
    defaults = parameter_defaults(template)
    unknown = set(overrides) - set(template["Parameters"])
    assert not unknown, f"samconfig overrides unknown parameters {sorted(unknown)}"
    assert overrides == defaults, "samconfig.toml and template.yaml defaults differ"
