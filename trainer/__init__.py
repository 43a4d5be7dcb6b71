"""torchcamp's generic Trainer, its callbacks, checkpoints and the ``train`` CLI.

Import from the submodules (``torchcamp.trainer.trainer.Trainer``); this package imports
nothing heavy so that ``train --help`` stays fast.
"""
