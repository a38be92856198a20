"""The parts of one training run; hpcdl.train.train puts them together in the order of
Horovod's tensorflow2_keras_mnist.py example.

- agreement: Ranks, what the ranks agree on (rank 0 decides and its errors reach every rank,
  broadcasts, the averaging gradient tape, sums over ranks, the stop request);
- runfiles: RunFiles, the run directory's reads and writes for one run (config check, restore,
  metrics lines, checkpoints, result), called on rank 0; Progress, what a checkpoint records;
- epochs: EpochLoop, the epoch loop and its steps (each rank's shard, prefetching, the compiled
  train and predict steps, validation and test, the mid-epoch checkpoint on a stop request);
- results: the loss, the log lines, result.json and its classification summary.
"""
