"""The `mpc` command line: one module per group of subcommands, registered in app.py."""
