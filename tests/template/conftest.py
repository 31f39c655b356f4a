"""Fixtures for tests/template (defined in template_helpers.py, which the tests also import).

Run from the repository root:  python -m pytest tests/template
"""

from template_helpers import aws_session, moto_endpoint, template  # noqa: F401 (fixtures)
