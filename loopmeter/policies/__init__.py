"""Policies: the YAML schema, presets, decisions, and the hash-chained audit log."""

from loopmeter.policies.execmatch import exec_candidates
from loopmeter.policies.loader import (
    PRESETS,
    PolicyText,
    is_preset_name,
    list_presets,
    load_policy,
    parse_policy,
    policy_content,
    preset_path,
)
from loopmeter.policies.policy import Decision, Policy

__all__ = ["PRESETS", "Decision", "Policy", "PolicyText", "exec_candidates", "is_preset_name", "list_presets",
           "load_policy", "parse_policy", "policy_content", "preset_path"]
