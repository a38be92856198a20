"""Train a config like `hpcdl train`, then save THIS rank's final weights to OUT/rank<r>.npz
(and the host it ran on to OUT/rank<r>.host).

Run under a launcher (horovodrun / mpirun / srun) by the tests, which compare ranks' weights: the
check that catches gradients that are silently not averaged.
usage: rank_weights.py CONFIG RUN_DIR OUT [KEY=VALUE ...]
"""

import socket
import sys
from pathlib import Path

import numpy as np

from hpcdl.config import parse_config, parse_overrides, read_yaml, set_path
from hpcdl.train import train

config_path, run_dir, out = sys.argv[1:4]
raw = read_yaml(config_path)
for key, value in parse_overrides(sys.argv[4:]).items():
    set_path(raw, key, value)
outcome = train(parse_config(raw, config_path), run_dir)
Path(out).mkdir(parents=True, exist_ok=True)
np.savez(Path(out) / f"rank{outcome.rank}.npz", *outcome.model.get_weights())
Path(out, f"rank{outcome.rank}.host").write_text(socket.gethostname())
