"""Pulumi program of the central site (stack `zentral`; see docs/pulumi.md)."""

from basisit.cloud.program import main

main(expect_zentral=True)
