"""`python -m mpc` runs the command-line interface."""

from mpc.cli.app import main

raise SystemExit(main())
