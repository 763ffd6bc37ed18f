"""The cloud backend: Pulumi programs (stacks/kommune, stacks/zentral) for the Verwaltungscloud.

- config:     the stack config (the one place programs read it) and its generator
- plan:       what a tenant consists of, as plain data (networks, security groups from policy, ports)
- components: the ComponentResources (Tenant, SiteNetwork, Servers, SiteDns)
- program:    the programs themselves; stacks/*/__main__.py only call them
"""
