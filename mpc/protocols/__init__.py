"""Sans-I/O protocol engines: pure objects that take messages in and give messages out (the events
they exchange are in mpc/events.py). Importing this package imports nothing else, so that
mpc/protocols/names.py serves the configuration without numpy."""
