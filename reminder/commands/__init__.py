"""The commands of `reminder`, one module per area; cli.py wires them."""
