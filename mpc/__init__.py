"""mpc: secure multiparty computation daemons (secure sum, average, voting) over mutual-TLS gRPC."""

__version__ = "0.1.0"
