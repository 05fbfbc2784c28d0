# Imported before any test module: mpc sets which gRPC listener its servers run before grpc loads
# (mpc/__init__.py), so the suite's in-process nodes run what `mpc node` runs.
import mpc  # noqa: F401
