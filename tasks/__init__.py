"""Tasks: plain modules with ``build_datasets``, ``build_model``, ``step`` (and optionally
``collate_fn`` and ``make_synthetic_data``). A task config names its module in ``task.module``.
"""
