"""loopmeter: run coding agents in loops inside sandboxes and measure what they are worth."""

__version__ = "0.1.0"
__all__ = ["__version__"]
