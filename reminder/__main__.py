"""`python -m reminder`, and the `reminder` command's entry point.

The entry point imports the CLI only when it is called. Render workers (started by
multiprocessing's forkserver) re-run the main script of the process that started them:
for the `reminder` script that is now this small module instead of the whole
application (about 0.4 s of CPU and 35 MiB for each worker).
"""


def main() -> None:
    from reminder.cli import main as cli  # noqa: PLC0415 - see the module docstring

    cli()


if __name__ == "__main__":
    main()
