"""The commands on top of the library: each composes the layers below it for one CLI command
(`alignkit demo`, `pairs`, `annotate`, `score`, `serve`, `label`). The training commands are the
trainers in :mod:`alignkit.train`, and `eval`/`sweep`/`report` live in :mod:`alignkit.evaluate` and
:mod:`alignkit.report`; :mod:`alignkit.cli` maps every command name to its config and function."""
