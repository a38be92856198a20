"""Train a config like `hpcdl train`, but SIGKILL this process right after epoch K is logged.

Rank 0 logs an epoch only after its metrics line and checkpoint are on disk, so this is a hard
crash at a known point (no clean-up runs). usage: die_after_epoch.py CONFIG RUN_DIR K [KEY=VALUE...]
"""

import os
import signal
import sys

from hpcdl.config import parse_config, parse_overrides, read_yaml, set_path
from hpcdl.train import train

config_path, run_dir, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
raw = read_yaml(config_path)
for key, value in parse_overrides(sys.argv[4:]).items():
    set_path(raw, key, value)


def log(message: str) -> None:
    print(message, flush=True)
    if message.startswith(f"epoch {k}/"):
        os.kill(os.getpid(), signal.SIGKILL)


train(parse_config(raw, config_path), run_dir, log=log)
