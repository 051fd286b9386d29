"""Bad input refused as one message block, not a traceback: how the data stage's jobs end.

Snakemake prints a failed job's log (`show-failed-logs`); a refusal's log therefore ends in one
block that names the user's file, the record, the problem and the fix, with the Python traceback
kept below it in the same log for a bug report.
"""

from __future__ import annotations

import logging
import sys
import traceback
from contextlib import contextmanager

from billetjax.coco import CocoError

RULE = "=" * 78


def refusal_block(err: BaseException) -> str:
    """The message of a refusal laid out as one block: what was refused, then the fix."""
    text = str(err).strip()
    problem, _, fix = text.partition("; fix: ")
    lines = [RULE, "Your data was refused (nothing was imported):", "", f"  {problem}"]
    if fix:
        lines += ["", f"  Fix: {fix}"]
    return "\n".join(lines + [RULE])


@contextmanager
def refusals_as_messages(*kinds: type[BaseException]):
    """Run a job's work; a `CocoError` (or one of `kinds`) ends the job with its message block
    in the log and exit status 1, the traceback after it."""
    try:
        yield
    except (CocoError, *kinds) as err:
        stream = sys.stderr
        for handler in logging.getLogger().handlers:
            handler.flush()
        print(refusal_block(err), file=stream)
        print("\n(for a bug report, where it was refused:)", file=stream)
        print("".join(traceback.format_tb(err.__traceback__)).rstrip(), file=stream)
        stream.flush()
        sys.exit(1)
