"""Policies: the YAML schema, presets, decisions, and the hash-chained audit log."""

from loopmeter.policies.execmatch import exec_candidates
from loopmeter.policies.loader import PRESETS, list_presets, load_policy, parse_policy, preset_path
from loopmeter.policies.policy import Decision, Policy

__all__ = ["PRESETS", "Decision", "Policy", "exec_candidates", "list_presets", "load_policy", "parse_policy",
           "preset_path"]
