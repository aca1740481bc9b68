"""The Textual dashboard. Imported only by `loopmeter dash` (textual loads there, never at CLI start)."""
