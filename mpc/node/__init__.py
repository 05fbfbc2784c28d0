"""The node daemon: a party's private store, its sessions and its gRPC services."""
