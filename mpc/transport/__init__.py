"""grpc.aio transport: moves bytes, checks identities, maps errors to status codes."""
