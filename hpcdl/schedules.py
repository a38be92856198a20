"""Learning-rate schedule: Horovod's scaling and warm-up, times a decay rule."""

from __future__ import annotations

import math
from typing import Any

from hpcdl.config import TrainSettings


def make_schedule(tf: Any, cfg: TrainSettings, size: int, steps_per_epoch: int) -> Any:
    """A Keras LearningRateSchedule for `cfg` on `size` ranks.

    target lr = lr x size when scale_lr (Goyal et al.), reached linearly from lr over
    warmup_epochs; then multiplied by the decay rule, counted in optimizer iterations:
    inverse_time lr / (1 + decay x step) (Keras 2's ``decay``), cosine to zero over the run,
    or step (x step_factor every step_epochs).
    """
    target = cfg.lr * (size if cfg.scale_lr else 1)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    total = max(1, cfg.epochs * steps_per_epoch)

    class Schedule(tf.keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            lr = tf.constant(target, tf.float32)
            if warmup:
                ramp = cfg.lr + (target - cfg.lr) * step / warmup
                lr = tf.where(step < warmup, ramp, lr)
            if cfg.schedule == "inverse_time":
                return lr / (1.0 + cfg.decay * step)
            if cfg.schedule == "cosine":
                return lr * 0.5 * (1.0 + tf.cos(math.pi * tf.minimum(step, total) / total))
            drops = tf.floor(step / (cfg.step_epochs * steps_per_epoch))
            return lr * tf.pow(tf.constant(cfg.step_factor, tf.float32), drops)

        def get_config(self):
            return {"target": target, "warmup": warmup, "schedule": cfg.schedule}

    return Schedule()


def make_optimizer(tf: Any, cfg: TrainSettings, schedule: Any) -> Any:
    """The configured Keras 2 optimizer driven by `schedule`."""
    opt = tf.keras.optimizers
    if cfg.optimizer == "sgd":
        return opt.SGD(schedule, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adam":
        return opt.Adam(schedule)
    if cfg.optimizer == "adamw":
        return opt.AdamW(schedule, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return opt.RMSprop(schedule, momentum=cfg.momentum)
    return opt.Adagrad(schedule)
