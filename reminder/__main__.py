"""`python -m reminder`."""

from reminder.cli import main

main()
