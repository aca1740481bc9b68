"""Outcomes: where agent sessions worked, and the pull requests and merges their spend produced.

`identity.repo_identity` is the one definition of a repository's identity (a normalised
remote URL, else a git top-level path); session rows (store table `session`) carry it.
"""
