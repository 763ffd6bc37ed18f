"""Pulumi program of a Kommune's tenant; the stack name is the Kommune's slug (see docs/pulumi.md)."""

from basisit.cloud.program import main

main(expect_zentral=False)
