"""Training: the config, the assembly of a run, the loop and what it writes.

- :mod:`augkd.train.config`: :class:`TrainConfig` and its sections.
- :mod:`augkd.train.build`: :func:`build_components` (device, autocast, data, loaders, batch pipeline) for every
  command, the batch stages, the KD task builders.
- :mod:`augkd.train.loop`: :func:`setup_run`, :func:`train_one_epoch`, :func:`evaluate`, :func:`train`.
- :mod:`augkd.train.run`: :class:`Run`, the state the loop advances.
- :mod:`augkd.train.optim`, :mod:`augkd.train.schedule`: optimizers and learning-rate schedules by name.
- :mod:`augkd.train.metrics`: log sinks (``metrics.jsonl``, ``metrics.csv``), the summary, the epoch line.
- :mod:`augkd.train.teacher_cache`: ``augkd teacher-cache`` from a config.
- :mod:`augkd.train.distributed`, :mod:`augkd.train.guard`, :mod:`augkd.train.dryrun`, :mod:`augkd.train.plan`.
"""
