"""Lookup `basisit_model`: derived data of one host, computed by the basisit model on demand.

    lookup('basisit_model', 'firewall_forward', host=inventory_hostname)
    -> [{'rule': 'client-dns', 'proto': 'udp', 'src': [...], 'dst': '...', 'ports': [53]}, ...]

The large derived values (a gateway's forward rule set, the VPN hub's peers) are not inventory
variables of every host; a role asks for them where it needs them. The estate is the one the
inventory plugin read (`basisit_inventory_dir`, set on group all), loaded once per process and
kept while its files are unchanged (basisit.derived). Values: see basisit.derived.VALUES.
"""

from __future__ import annotations

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

try:
    from basisit import derived
    from basisit.validate import InventoryError
except ImportError as e:  # pragma: no cover - reported to the user below
    _IMPORT_ERROR: Exception | None = e
else:
    _IMPORT_ERROR = None

DOCUMENTATION = """
name: basisit_model
short_description: a host's derived data (firewall rule sets, VPN peers, log senders) from the basisit model
description:
  - Computes the named value for one host with the basisit model (basisit.policy), from the
    inventory directory the basisit inventory plugin read. The estate is loaded once per process.
  - Values are C(firewall_inbound), C(firewall_outbound), C(firewall_outbound_rules),
    C(firewall_forward) (a site router's forward rule set, [] for other hosts), C(vpn_peers)
    (the VPN hub's WireGuard peers, [] for other hosts) and C(log_senders) (a log host's senders,
    source address to host name, {} for other hosts).
options:
  _terms:
    description: the names of the values
    required: true
  host:
    description: the host's inventory name (usually C(inventory_hostname))
    type: str
    required: true
  inventory_dir:
    description: the basisit inventory directory
    type: str
    vars:
      - name: basisit_inventory_dir
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if _IMPORT_ERROR is not None:
            raise AnsibleLookupError(f"basisit_model: cannot import the basisit package ({_IMPORT_ERROR})")
        self.set_options(var_options=variables, direct=kwargs)
        host, inv_dir = self.get_option("host"), self.get_option("inventory_dir")
        if not inv_dir:
            raise AnsibleLookupError(
                "basisit_model: no inventory directory (basisit_inventory_dir is set by the basisit "
                "inventory plugin; or pass inventory_dir=...)"
            )
        try:
            return [derived.value(inv_dir, str(t), str(host)) for t in terms]
        except derived.UnknownValue as e:
            raise AnsibleLookupError(f"basisit_model: {e}") from None
        except InventoryError as e:
            raise AnsibleLookupError(f"basisit_model: the inventory {inv_dir} is invalid:\n{e.report()}") from None
