"""Sans-I/O protocol engines: pure objects that take messages in and give messages out."""

from mpc.events import Output, Send

__all__ = ["Output", "Send"]
