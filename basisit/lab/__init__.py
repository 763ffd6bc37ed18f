"""The lab: the model's sites realised as systemd-nspawn containers on the local machine.

See docs/lab.md. Pure parts (names, plans, file contents) live in `names` and `plan`; side
effects (processes, links, mounts, cgroups) in `system`, `image` and `host`; `cli` wires them
to `basisit lab image|up|down|status`.
"""
