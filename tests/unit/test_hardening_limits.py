"""The core-dump check reads pam_limits' files the way pam_limits does (tests/compliance/test_hardening.py)."""

from __future__ import annotations

from basisit.verify import suite as hardening

BASE = """# Managed by Ansible (basisit base).
*       hard    core    0
*       soft    core    0
root    hard    core    0
root    soft    core    0
"""


def test_the_standards_file_gives_every_user_and_root_a_hard_core_limit_of_0():
    assert hardening.configured_hard_limit(BASE, "*", "core") == "0"
    assert hardening.configured_hard_limit(BASE, "root", "core") == "0"


def test_without_the_file_no_line_sets_the_limit():
    debian = "# /etc/security/limits.conf\n#*               soft    core            0\n#root            hard    core            100000\n"
    assert hardening.configured_hard_limit(debian, "*", "core") is None


def test_a_later_line_wins_and_a_soft_line_does_not_count():
    text = BASE + "*  -  core  unlimited\nroot soft core unlimited  # comment\n"
    assert hardening.configured_hard_limit(text, "*", "core") == "unlimited"
    assert hardening.configured_hard_limit(text, "root", "core") == "0"
