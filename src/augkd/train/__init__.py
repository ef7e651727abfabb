"""Training: configs, schedules, the loop, tasks and checkpoints.

- :mod:`augkd.train.config`: :class:`TrainConfig` and its sections.
- :mod:`augkd.train.loop`: :func:`train`, :func:`setup_run`, :func:`evaluate`.
- :mod:`augkd.distill.task`: how a batch becomes losses (plain classification, distillation).
- :mod:`augkd.train.schedule`: learning-rate multipliers as pure functions of the step.
- :mod:`augkd.checkpoint`: atomic, ``weights_only`` checkpoints.
"""
