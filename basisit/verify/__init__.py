"""The nightly compliance run: targets, waivers, results, history (`basisit verify`)."""
