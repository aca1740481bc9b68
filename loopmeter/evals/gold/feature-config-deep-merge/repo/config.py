"""Layered settings: defaults <- file <- environment."""


def merge(base, override):
    result = dict(base)
    result.update(override)
    return result


DEFAULTS = {"server": {"host": "127.0.0.1", "port": 8080}, "log": {"level": "info"}}
