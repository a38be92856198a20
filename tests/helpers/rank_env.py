"""Start Horovod as `hpcdl train` does, then write THIS rank's view of the settings hpcdl gives
its ranks (distributed.RANK_DEFAULTS) to OUT/rank<r>.json.

usage: rank_env.py OUT
"""

import json
import os
import sys
from pathlib import Path

from hpcdl import distributed

ctx = distributed.init(threads=1)
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
seen = {key: os.environ.get(key) for key in distributed.RANK_DEFAULTS}
record = {"rank": ctx.rank, "size": ctx.size, "env": seen}
(out / f"rank{ctx.rank}.json").write_text(json.dumps(record))
