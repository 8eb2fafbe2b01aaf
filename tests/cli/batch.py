"""Run many `slimsearch` command lines in one Python process: `python -m tests.cli.batch < commands.json`.

Each command runs through `slimsearch.cli.main`, the console script's entry point, exactly as
`slimsearch ARGS...` would: its stdout and stderr are captured and its exit code is whatever
`main` exits with (1 with a traceback for an uncaught exception, as Python itself does). What a
batch saves is starting Python, torch and friends once per command line, which is most of the
cost of a command that is refused. Prints one JSON list of {"args", "code", "stdout", "stderr"}
after the line MARKER (native libraries may write to the real stdout before it).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback

MARKER = "@@ slimsearch cli batch results @@"


def run_one(args: list[str]) -> dict:
    from slimsearch.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv = sys.argv
    sys.argv = ["slimsearch", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except BaseException:  # what the interpreter would print for an uncaught exception
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
    return {"args": args, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main() -> None:
    commands = json.load(sys.stdin)
    results = [run_one(args) for args in commands]
    sys.stdout.write(f"\n{MARKER}\n{json.dumps(results)}")


if __name__ == "__main__":
    main()
