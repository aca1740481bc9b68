"""Vendors' admin and analytics APIs: billed and vendor-reported usage, beside what loopmeter measures.

`base.py` holds the protocol every connector follows, the registry, the shared HTTP client
(paging, 429, 5xx, 401/403), key and endpoint lookup and the sync that writes
`vendor_usage` and `sync_cursor`. One module per vendor (anthropic.py, openai.py, ...)
exposes `CONNECTOR`. Importing this package imports nothing heavy.
"""
