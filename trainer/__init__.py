"""torchcamp's reusable library — the Trainer, the callback protocol and callbacks, checkpoint
files, resumable data sampling, distributed helpers — and, in ``app``, the application built on
it (the ``train``, ``evaluate`` and ``predict`` commands).

Import from the submodules (``torchcamp.trainer.trainer.Trainer``); this package imports
nothing heavy so that ``train --help`` stays fast.
"""
