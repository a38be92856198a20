"""A framework-free training script that reports through hpcdl.session, as a user would write.

usage: session_script.py EPOCHS [SECONDS_PER_EPOCH]
Each epoch "trains" for SECONDS in small steps, checking session.should_stop() between them.
Its metrics depend on the epoch and on which start of the script wrote them ($SLURM_RESTART_COUNT,
else $ATTEMPT). Rank 0 saves the last finished epoch in checkpoints/state.json and a restart
continues after it. Fails if a framework or MPI module was imported.
"""

import json
import os
import sys
import time

from hpcdl import session

epochs = int(sys.argv[1])
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
attempt = int(os.environ.get("SLURM_RESTART_COUNT") or os.environ.get("ATTEMPT", "0"))
session.should_stop()  # listen for stop signals from the start
state = session.checkpoint_dir() / "state.json"
done = json.loads(state.read_text())["epoch"] if state.exists() else 0
print(f"rank {session.rank()} of {session.size()}: starting after epoch {done}", flush=True)


def save(epoch: int) -> None:
    if session.is_root():
        state.write_text(json.dumps({"epoch": epoch}))


def train_one_epoch() -> bool:
    """False when a stop request arrived before the epoch finished."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if session.should_stop():
            return False
        time.sleep(0.02)
    return True


for epoch in range(done + 1, epochs + 1):
    if not train_one_epoch():
        save(epoch - 1)
        session.requeue()
    session.log(
        epoch=epoch,
        loss=1.0 / epoch + attempt,
        accuracy=1.0 - 0.5 / epoch,
        val_loss=2.0 / epoch,
        val_accuracy=0.9 - 0.5 / epoch,
        attempt=attempt,
        writer_rank=session.rank(),
    )
    save(epoch)

imported = {"tensorflow", "keras", "tf_keras", "torch", "jax", "horovod", "mpi4py"} & set(
    sys.modules
)
assert not imported, f"session imported {imported}"
session.result(test_accuracy=0.875, epochs=epochs)
