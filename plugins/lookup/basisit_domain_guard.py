"""Lookup `basisit_domain_guard`: a converge never provisions a second domain for a Kommune.

    lookup('basisit_domain_guard', 'refusal', state=basisit_state_dir, slug='nalbach',
           host='nalbach-dc1', short='dc1', sam_exists=false)           -> '' or the refusal
    lookup('basisit_domain_guard', 'record', state=..., slug=..., host=..., realm=...,
           administrator_sid=<samba-tool user show Administrator output>)
                                                                          -> the record's JSON text
    lookup('basisit_domain_guard', 'mismatch', state=..., slug=..., host=..., administrator_sid=...)
                                                                          -> '' or why not to record

The decisions are basisit/domainguard.py's (unit-tested there); the record is
`<state>/domains/<slug>.json` on the control host. A malformed record is an error naming its file.
"""

from __future__ import annotations

import json

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from basisit import domainguard as g

DOCUMENTATION = """
name: basisit_domain_guard
short_description: the control host's record of a Kommune's domain, and the guard against provisioning a second one
description:
  - refusal returns why a converge must not touch a primary DC host without a domain database of a Kommune whose
    domain is recorded ('' when it may); record returns the record's JSON text for the domain SID of
    administrator_sid; mismatch returns why a database with another SID must not be recorded ('' when it may).
options:
  _terms:
    description: refusal, record or mismatch
    required: true
  state: {description: the state directory (basisit_state_dir), required: true}
  slug: {description: the Kommune, required: true}
  host: {description: the DC's inventory name, required: true}
  short: {description: the DC's short name (refusal)}
  sam_exists: {description: whether the host holds a domain database (refusal), type: bool}
  realm: {description: the Kerberos realm (record)}
  administrator_sid: {description: output of samba-tool user show Administrator --attributes=objectSid}
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if len(terms) != 1 or terms[0] not in ("refusal", "record", "mismatch"):
            raise AnsibleLookupError(f"basisit_domain_guard: one of refusal, record, mismatch; got {terms}")
        what = terms[0]
        try:
            state, slug, host = kwargs["state"], kwargs["slug"], kwargs["host"]
            path = g.record_path(state, slug)
            record = g.read_record(state, slug)
            if what == "refusal":
                return [g.refusal(slug, host, kwargs.get("short", host), bool(kwargs["sam_exists"]), record, path)]
            sid = g.domain_sid(kwargs["administrator_sid"])
            if what == "mismatch":
                return [g.mismatch(slug, host, sid, record, path)]
            return [json.dumps(g.record_doc(slug, kwargs["realm"], sid, host), indent=2) + "\n"]
        except KeyError as e:
            raise AnsibleLookupError(f"basisit_domain_guard {what}: option {e} is required") from None
        except g.RecordError as e:
            raise AnsibleLookupError(f"basisit_domain_guard: {e}") from None
