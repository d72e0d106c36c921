"""`python -m reminder`, and the `reminder` command's entry point.

The entry point imports the CLI only when it is called. Render workers (started by
multiprocessing's forkserver) re-run the main script of the process that started them:
for the `reminder` script that is now this small module instead of the whole
application (about 0.4 s of CPU and 35 MiB for each worker).

Two costs of a short command that do nothing for it are left out:

- Start-up (the imports, the command's modules) allocates much and frees almost nothing:
  the cyclic garbage collector only slows it down (by about a tenth). It is paused until
  the command's module is loaded (``reminder.cli.LazyGroup.get_command`` switches it
  back on, before the command does any work, once it has frozen what start-up made:
  the collector never walks those objects again).
- The interpreter's teardown (freeing every module and object one by one, a last
  collection): 0.15-0.25 s after every command. By the time the command returns it has
  closed what it opened (the store is disposed when its click context closes, files are
  written in ``with`` blocks); ``_leave`` runs the exit handlers (logging), flushes the
  standard streams and ends the process. Only when nothing else runs, though: a thread
  or a child process still alive (a process pool a failure left open) is stopped by the
  interpreter's own shutdown, in its order, so the process then exits the usual way.
"""

import atexit
import gc
import os
import sys
import threading


def main() -> None:
    gc.disable()  # see the module docstring
    from reminder.cli import main as cli  # noqa: PLC0415 - see the module docstring

    try:
        cli()
    except SystemExit as exc:
        _leave(_status(exc.code))
    _leave(0)


def _status(code: object) -> int:
    """What the interpreter would exit with for ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _leave(status: int) -> None:
    """End the process without the interpreter's teardown (see the module docstring)."""
    children = sys.modules.get("multiprocessing")
    if threading.active_count() > 1 or (children and children.active_children()):
        sys.exit(status)
    atexit._run_exitfuncs()  # what the teardown runs first (private, there since 2.x)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`reminder tasks | head`)
            status = status or 120  # as the interpreter says it
    os._exit(status)


if __name__ == "__main__":
    main()
