"""`basisit drift`: what the converge would change on a realised site (docs/drift.md)."""
