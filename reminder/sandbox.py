"""The sandbox templates run in, and the budget of one render.

A deployment's templates are code written by an administrator, not by an attacker, but
a mistake in one (a loop inside a loop, a width of 10**9) must not stop the daemon or
eat the machine's memory. Every render therefore gets, on top of Jinja2's sandbox:

1. a time budget (2 s of the rendering thread's CPU time): a watchdog thread raises
   ``Overrun`` in the rendering thread once the budget is spent. The exception derives from
   ``BaseException``, so neither Jinja2's own ``except Exception`` nor a template (which
   has no try/except) can swallow it; it is delivered between two bytecodes, which
   stops any loop of Python code. What runs inside one C call (a ``str`` method, a
   ``join``) cannot be interrupted: those calls are bounded by the checks below instead.
   Python code that the interpreter runs where an exception cannot propagate (a gc
   callback, a ``__del__``) swallows a shot delivered inside it; the watchdog fires again
   every ``REFIRE_S`` while the render goes on, and the daemon installs no gc callback.
2. size checks made before a value is built, where its size can be known from the
   arguments: repetition (``*``), powers (``**``), ``%`` and ``str.format`` widths,
   ``center``/``ljust``/``rjust``/``zfill``/``expandtabs``, ``join``, ``replace``,
   ``translate`` and the filters ``center``, ``indent``, ``format``, ``join``,
   ``replace``, ``wordwrap``, ``urlize``, ``batch``, ``slice``, ``sum``, ``tojson``;
   ``lipsum`` is capped;
3. a check of every value a call, a filter, ``*``, ``%`` or a namespace assignment
   returns, of every ``{{ … }}`` printed and of every block a template captures (macros,
   ``{% set %}…{% endset %}``, ``{% filter %}``): at most ``MAX_OUTPUT`` characters,
   containers at most ``MAX_SEQUENCE`` items and a ``MAX_OUTPUT`` weight (items and
   characters, nested ones included), and all of them together at most
   ``MAX_PRODUCED`` in one render (what a render can hold in memory);
4. the rendered text, read as it is generated and stopped past ``MAX_OUTPUT``.

A refusal is a ``SecurityError`` (a ``TemplateError``): ``Renderer`` reports it as a
template problem of that template, with its line.
"""

from __future__ import annotations

import ctypes
import operator
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import wraps
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext, Macro
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum

MAX_SEQUENCE = 100_000  # characters or items a `*`, a width or a container may have
MAX_POWER_BITS = 4_096  # bits a `**` may produce
MAX_OUTPUT = 1_000_000  # characters of one rendered part, or of any one value
MAX_PRODUCED = 10_000_000  # characters and items all checked values of one render hold
MAX_SECONDS = 2.0  # time of one render
MAX_LIPSUM = 100  # paragraphs (and words in one) `lipsum` may produce
MAX_INDENT = 100  # `tojson(indent=…)`
# what a template reads of ``loop``: values, not its methods (``cycle``, ``changed``)
_LOOP_COUNTERS = frozenset(
    {
        "index",
        "index0",
        "revindex",
        "revindex0",
        "first",
        "last",
        "length",
        "depth",
        "depth0",
        "previtem",
        "nextitem",
    }
)


class Overrun(BaseException):
    """Raised in a rendering thread by the watchdog: the render ran past its time."""


def _cpu_clock(thread: int) -> int:
    """The clock of a thread's CPU time (Linux and most Unixes), or the monotonic one."""
    try:
        return time.pthread_getcpuclockid(thread)
    except (AttributeError, OSError):
        return time.CLOCK_MONOTONIC


WALL_FACTOR = 4  # the backstop: this many times the budget in wall time, plus WALL_SLACK_S
WALL_SLACK_S = 5.0
POLL_S = 0.25
REFIRE_S = 1.0


class _Watchdog:
    """One thread that interrupts renders past their budget.

    The budget is CPU time of the rendering thread: a machine under load or a suspended
    VM does not fail a template, a loop does. ``arm``/``disarm`` cost a lock each; the
    thread sleeps until the nearest budget could be spent and waits on an event while
    nothing renders. It fires at a render (a ticket) once its budget is spent, and again
    every ``REFIRE_S`` while the render goes on (a shot can be swallowed, see the module
    docstring); ``disarm`` clears a shot that was fired but not yet delivered, so the
    exception never reaches code outside the render.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # thread → (ticket, its CPU clock, the clock's reading at which the budget is spent,
        # the monotonic moment past which it is spent whatever the CPU clock says)
        self._renders: dict[int, tuple[int, int, float, float]] = {}
        self._fired: dict[int, tuple[int, float]] = {}  # thread → (ticket shot at, when)
        self._tickets = 0
        self._wake = threading.Event()
        self._next = float("inf")  # when the thread wakes next (monotonic)
        self._thread: threading.Thread | None = None
        self._set_async = ctypes.pythonapi.PyThreadState_SetAsyncExc

    def arm(self, seconds: float) -> int:
        thread = threading.get_ident()
        clock = _cpu_clock(thread)
        spent_at = time.clock_gettime(clock) + seconds
        wake_by = time.monotonic() + seconds  # CPU time runs no faster than this
        # a backstop in wall time, far beyond what load makes of the budget: a CPU clock
        # that does not advance (a platform without one per thread) cannot stop the watch
        backstop = time.monotonic() + WALL_FACTOR * seconds + WALL_SLACK_S
        with self._lock:
            self._tickets += 1
            if self._fired.pop(thread, None) is not None:
                self._set_async(ctypes.c_ulong(thread), None)  # a stale shot: cleared
            self._renders[thread] = (self._tickets, clock, spent_at, backstop)
            if wake_by < self._next:
                self._next = wake_by
                self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="render-watchdog", daemon=True
                )
                self._thread.start()
            return self._tickets

    def disarm(self, ticket: int) -> None:
        thread = threading.get_ident()
        with self._lock:
            if self._renders.get(thread, (0, 0, 0.0, 0.0))[0] == ticket:
                del self._renders[thread]
            if self._fired.get(thread, (0, 0.0))[0] == ticket:
                del self._fired[thread]
                self._set_async(ctypes.c_ulong(thread), None)  # not delivered yet: cleared

    def _watch(self) -> None:
        while True:
            with self._lock:
                waiting = []
                for thread, (ticket, clock, spent_at, backstop) in list(self._renders.items()):
                    shot, shot_at = self._fired.get(thread, (0, 0.0))
                    if shot == ticket and time.monotonic() < shot_at + REFIRE_S:
                        waiting.append(shot_at + REFIRE_S - time.monotonic())
                        continue  # shot at, not yet disarmed: delivered between two bytecodes
                    try:
                        left = spent_at - time.clock_gettime(clock)
                    except OSError:  # no CPU clock to read: the thread is gone, or the
                        # clock cannot be read from here; then the wall-time backstop rules
                        if thread not in {t.ident for t in threading.enumerate()}:
                            del self._renders[thread]
                            continue
                        left = backstop - time.monotonic()
                    if left <= 0 or time.monotonic() >= backstop:
                        # shot again if the render still runs REFIRE_S later: an exception
                        # set while the thread ran C code has been seen to go missing
                        self._fired[thread] = (ticket, time.monotonic())
                        self._set_async(ctypes.c_ulong(thread), ctypes.py_object(Overrun))
                        waiting.append(REFIRE_S)  # to look again, render alone or not
                    else:
                        waiting.append(left)
                # while anything renders, look again at least every POLL_S: a wake-up that
                # raced with ``arm`` costs at most that
                sleep_s = min(*waiting, POLL_S) if waiting else None
                self._next = time.monotonic() + sleep_s if sleep_s else float("inf")
                self._wake.clear()
            self._wake.wait(sleep_s)


WATCHDOG = _Watchdog()
_spent = threading.local()  # .left: what the current render may still produce


def start_budget() -> None:
    _spent.left = MAX_PRODUCED


def spend(size: int) -> None:
    left = getattr(_spent, "left", MAX_PRODUCED) - size
    if left < 0:
        raise SecurityError(f"values larger than {MAX_PRODUCED} in all (the render budget)")
    _spent.left = left


def weight(value: Any, limit: int = MAX_OUTPUT) -> int:
    """Characters and items of a value, nested ones included; stops counting past
    ``limit``. A list of 100 references to one long string weighs 100 of them: that is
    what ``str()`` of it makes."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, dict):
            total += len(item)
            stack += item.keys()
            stack += item.values()
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item)
            stack += item
        else:
            total += 1
    return total


def check_value(value: Any, what: str) -> Any:
    """Refuses a value too large to hold; counts it against the render's budget."""
    if value is None or type(value) in (int, bool, float):
        return value
    if isinstance(value, str | bytes):
        size = len(value)
        if size > MAX_OUTPUT:
            raise SecurityError(f"{what} makes a text longer than {MAX_OUTPUT} characters")
        spend(size)
    elif isinstance(value, list | tuple | dict | set | frozenset):
        if len(value) > MAX_SEQUENCE:
            raise SecurityError(f"{what} makes more than {MAX_SEQUENCE} items")
        size = weight(value)
        if size > MAX_OUTPUT:
            raise SecurityError(f"{what} makes a value larger than {MAX_OUTPUT}")
        spend(size)
    return value


def _refuse_over(size: int, what: str, limit: int = MAX_OUTPUT) -> None:
    if size > limit:
        raise SecurityError(f"{what} would make more than {limit} characters")


def _width(value: Any, what: str) -> None:
    if isinstance(value, int) and value > MAX_SEQUENCE:
        raise SecurityError(f"{what}: a width or size above {MAX_SEQUENCE}")


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?")


def check_percent(text: Any, values: Any) -> None:
    """``text % values``: no ``*`` width, no width or precision above MAX_SEQUENCE."""
    if not isinstance(text, str | bytes):
        return
    source = text.decode("latin-1") if isinstance(text, bytes) else text
    for width, precision in _PERCENT.findall(source):
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_SEQUENCE):
                raise SecurityError(f"a % format width above {MAX_SEQUENCE} (or '*')")
    _refuse_over(len(source) + weight(values), "a % format")


def check_format(text: str, values: Iterable[Any]) -> None:
    """``text.format(...)``: no nested field in a spec, no number above MAX_SEQUENCE."""
    for _, _, spec, _ in string.Formatter().parse(text):
        if not spec:
            continue
        if "{" in spec:
            raise SecurityError("a format spec taken from an argument")
        if any(int(number) > MAX_SEQUENCE for number in re.findall(r"\d+", spec)):
            raise SecurityError(f"a format width or precision above {MAX_SEQUENCE}")
    _refuse_over(len(text) + sum(weight(v) for v in values), "a format")


def _replaced(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if not (isinstance(text, str | bytes) and isinstance(new, str | bytes)):
        return
    times = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    _refuse_over(len(text) + times * len(new), "replace")


def _text_method(owner: str | bytes, name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Checks a ``str``/``bytes`` method before it runs; returns its arguments (a
    ``join``'s iterable read into a list, so that it can be measured)."""
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _width(args[0], name)
    elif name == "expandtabs":
        tab = args[0] if args and isinstance(args[0], int) else 8
        tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
        _refuse_over(len(owner) + tabs * tab, name)
    elif name == "join" and args:
        items = list(args[0])
        _refuse_over(sum(map(weight, items)) + len(owner) * len(items), name)
        return (items, *args[1:])
    elif name == "replace" and len(args) >= 2:
        _replaced(owner, *args[:3])
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((weight(v) for v in args[0].values()), default=1)
        _refuse_over(len(owner) * max(longest, 1), name)
    return args


_MUTATORS = frozenset(["append", "extend", "insert", "update", "setdefault", "add"])


class BoundedNamespace(Namespace):
    """``namespace()``: what a template carries from one loop turn to the next, checked
    as it is stored."""

    def __setitem__(self, name: str, value: Any) -> None:
        check_value(value, f"namespace attribute {name}")
        super().__setitem__(name, value)


def _counted(value: Any) -> Any:
    """Every ``{{ … }}`` (Jinja2's ``finalize``): a text printed counts against the
    budget, in a captured block too, where the output is not streamed."""
    if type(value) is str:
        left = _spent.left - len(value)
        _spent.left = left
        if left < 0:
            spend(0)  # raises, with the message
        return value
    return check_value(value, "a printed value")


def _bounded_concat(parts: Iterable[str]) -> str:
    """What a template captures (a macro's or a block's output), at most MAX_OUTPUT;
    what was printed in it was counted by ``_counted``."""
    found = parts if type(parts) is list else list(parts)
    if sum(map(len, found)) > MAX_OUTPUT:
        raise SecurityError(f"a captured block longer than {MAX_OUTPUT} characters")
    return "".join(found)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n > MAX_LIPSUM or max > MAX_LIPSUM or min > MAX_LIPSUM:
        raise SecurityError(f"lipsum above {MAX_LIPSUM} paragraphs or words")
    return generate_lorem_ipsum(n, html, min, max)


# the checks made before a filter runs, for the filters whose result can be far larger
# than their input; arguments as the filter gets them (``join``, ``replace`` and
# ``tojson`` take the evaluation context first; ``wordwrap`` and ``sum`` the environment)


def _before_center(value: Any, width: Any = 80) -> None:
    _width(width, "center")


def _before_indent(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> None:
    lines = str(s).count("\n") + 1
    size = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    _width(size, "indent")
    _refuse_over(len(str(s)) + lines * size, "indent")


def _before_format(value: Any, *args: Any, **kwargs: Any) -> None:
    check_percent(str(value), kwargs or args)


def _before_join(_: Any, value: Any, d: Any = "", attribute: Any = None) -> None:
    _refuse_over(weight(value) + len(str(d)) * len(value), "join")


def _before_replace(_: Any, s: Any, old: Any, new: Any, count: Any = None) -> None:
    _replaced(str(s), str(old), str(new), -1 if count is None else count)


def _before_wordwrap(_: Any, s: Any, width: Any = 79, *args: Any, **kwargs: Any) -> None:
    wrap = kwargs.get("wrapstring", args[1] if len(args) > 1 else None) or "\n"
    lines = len(str(s)) // max(width if isinstance(width, int) else 1, 1) + 1
    _refuse_over(len(str(s)) + lines * len(str(wrap)), "wordwrap")


def _before_urlize(_: Any, value: Any, *args: Any, **kwargs: Any) -> None:
    extra = sum(len(str(v)) for v in (*args, *kwargs.values()) if isinstance(v, str))
    _refuse_over(3 * len(str(value)) + (len(str(value)) // 3 + 1) * (extra + 40), "urlize")


def _before_batch(value: Any, linecount: Any, fill_with: Any = None) -> None:
    _width(linecount, "batch")


def _before_slice(value: Any, slices: Any, fill_with: Any = None) -> None:
    _width(slices, "slice")


def _before_sum(_: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> None:
    if not isinstance(start, int | float):
        _refuse_over(weight(iterable) + weight(start), "sum")


def _before_string(value: Any) -> None:
    if not isinstance(value, str):
        _refuse_over(weight(value), "string")


def _before_pprint(value: Any) -> None:
    _refuse_over(weight(value) * 2, "pprint")


def _before_tojson(_: Any, value: Any, indent: Any = None) -> None:
    if isinstance(indent, int | str) and not isinstance(indent, bool):
        size = len(indent) if isinstance(indent, str) else indent
        if size > MAX_INDENT:
            raise SecurityError(f"tojson: an indent above {MAX_INDENT}")


_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": _before_center,
    "indent": _before_indent,
    "format": _before_format,
    "join": _before_join,
    "replace": _before_replace,
    "wordwrap": _before_wordwrap,
    "urlize": _before_urlize,
    "batch": _before_batch,
    "slice": _before_slice,
    "sum": _before_sum,
    "tojson": _before_tojson,
    "string": _before_string,
    "pprint": _before_pprint,
}


def _filter_check(name: str) -> Callable[..., None] | None:
    """The check made before a filter runs, if its result can be far larger than its input."""
    return _FILTER_CHECKS.get(name)


GUARDED_FILTERS = frozenset(
    [
        *("center", "indent", "format", "join", "replace", "wordwrap", "urlize"),
        *("batch", "slice", "sum", "tojson", "string", "pprint", "map"),
    ]
)


def _checked_items(items: Iterable[Any]) -> Iterator[Any]:
    for item in items:
        yield check_value(item, "filter map")


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    if name == "map":

        @wraps(func)
        def mapped(*args: Any, **kwargs: Any) -> Any:
            return _checked_items(func(*args, **kwargs))

        return mapped
    check = _filter_check(name)
    listed = name in ("join", "sum")  # their iterable is read twice: make it a list

    @wraps(func)  # keeps Jinja2's pass_context / pass_eval_ctx marks
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if check is not None:
            if listed:
                at = 1  # after the evaluation context or the environment
                if len(args) > at and not isinstance(args[at], str | list | tuple):
                    args = (*args[:at], list(args[at]), *args[at + 1 :])
            check(*args, **kwargs)
        return check_value(func(*args, **kwargs), f"filter {name}")

    return guarded


class LimitedSandbox(SandboxedEnvironment):
    """Jinja2's sandbox with ``*`` and ``**`` checked before they run, and ``t.no`` read
    from a snapshot's dict at once: the bundled templates run in it."""

    intercepted_binops = frozenset(["*", "**"])

    def getattr(self, obj: Any, attribute: str) -> Any:
        # A message is rendered from a snapshot of plain dicts: ``t.no`` is ``t["no"]``.
        # Jinja tries the attribute first and the key after an AttributeError (a third
        # of a letter's rendering); a key of a plain dict is data, safe to hand out.
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        # a loop's counters are data too (``loop.last`` between a wide digest's 17,000
        # escalated tasks went through every check of the sandbox)
        if type(obj) is LoopContext and attribute in _LOOP_COUNTERS:
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | bytes | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > MAX_SEQUENCE:
                    raise SecurityError(f"a repetition longer than {MAX_SEQUENCE}")
                if sized and times > 0 and weight(seq) * times > MAX_OUTPUT:
                    raise SecurityError(f"a repetition larger than {MAX_OUTPUT}")
            return check_value(operator.mul(left, right), "*")
        if op == "**":
            whole = isinstance(left, int) and isinstance(right, int) and right > 0
            if whole and max(left.bit_length(), 1) * right > MAX_POWER_BITS:
                raise SecurityError(f"a power larger than {MAX_POWER_BITS} bits")
            return operator.pow(left, right)
        if op == "%":
            check_percent(left, right)
            return check_value(operator.mod(left, right), "%")
        return super().call_binop(context, op, left, right)


class CountingSandbox(LimitedSandbox):
    """``LimitedSandbox`` with every check of this module's docstring: a deployment's
    own templates run in it (and the bundled ones they import)."""

    # ``+`` and ``~`` make at most the sum of what they are given: what they make is
    # checked where it is kept or printed
    intercepted_binops = frozenset(["*", "**", "%"])

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_counted, **options)
        self.concat = _bounded_concat  # type: ignore[method-assign]
        self.globals["lipsum"] = _lipsum
        self.globals["namespace"] = BoundedNamespace

    def guard_filters(self) -> None:
        """Wraps the filters that can make a value far larger than their input, and
        ``map``, whose items may be new values (the other filters make at most a few
        times what they are given, and what they make is checked where it is kept)."""
        for name, func in list(self.filters.items()):
            if name in GUARDED_FILTERS and not getattr(func, "reminder_guarded", False):
                guarded = _guard_filter(name, func)
                guarded.reminder_guarded = True  # type: ignore[attr-defined]
                self.filters[name] = guarded

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = value.__self__

        @wraps(wrapped)
        def checked(*args: Any, **kwargs: Any) -> str:
            values = [*args, *kwargs.values()]
            if value.__name__ == "format_map" and args and isinstance(args[0], dict):
                values = list(args[0].values())
            check_format(text, values)
            return check_value(wrapped(*args, **kwargs), "format")  # type: ignore[no-any-return]

        return checked

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if type(__obj) is Macro:  # safe, and its output was counted as it was captured
            return __context.call(__obj, *args, **kwargs)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes):
            args = _text_method(owner, __obj.__name__, args)
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(owner, list | dict | set) and __obj.__name__ in _MUTATORS:
            if len(owner) > MAX_SEQUENCE:
                raise SecurityError(f"{__obj.__name__} makes more than {MAX_SEQUENCE} items")
            spend(weight([args, kwargs]))
        return check_value(result, f"{getattr(__obj, '__name__', 'a call')}()")
