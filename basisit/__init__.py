"""basisit: inventory, provisioning and compliance for the Basis-IT of Saarland's Kommunen."""

__version__ = "0.1.0"
