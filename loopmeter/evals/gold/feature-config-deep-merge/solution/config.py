"""Layered settings: defaults <- file <- environment."""

import copy


def merge(base, override):
    result = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def merge_all(*layers):
    result = {}
    for layer in layers:
        result = merge(result, layer)
    return result


DEFAULTS = {"server": {"host": "127.0.0.1", "port": 8080}, "log": {"level": "info"}}
