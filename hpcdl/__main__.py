"""`python -m hpcdl ...` (what job scripts run, so the job uses the submitting interpreter)."""

import sys

if sys.argv[1:2] == ["train"]:
    # before the slow imports: a time-limit warning now is a stop request, not the job's end
    from hpcdl.preempt import catch_early

    catch_early()

from hpcdl.cli import main  # noqa: E402

sys.exit(main())
