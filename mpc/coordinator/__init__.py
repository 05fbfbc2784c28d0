"""The coordinator: starts computations across the nodes and adds up their output shares."""
