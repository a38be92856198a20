"""hpcdl: deep-learning training and hyperparameter sweeps as batch jobs on HPC clusters."""

__version__ = "0.1.0"
