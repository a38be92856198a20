"""The parts of one training run (hpcdl.train.train puts them together in Horovod's order).

- runfiles: the run directory's reads and writes for a run (config check, restore, checkpoints,
  metrics, result), rank 0 only;
- epochs: the epoch loop and its steps (sharding, prefetching, the compiled train/predict steps,
  evaluation);
- agreement: what the ranks agree on (rank 0 decides, sums over ranks, the stop request);
- results: the epoch line and the test result (classification summary).
"""
