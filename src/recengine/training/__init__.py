"""Training: ``run.py`` owns a training run (every engine: fit, validation, test, artifact, one MLflow run);
``task.py`` is what an ML engine's training task provides; data modules, a Trainer from the settings, validation,
MLflow tracking and ``distributed.py`` (rank zero's duties under DDP) serve it.

Imported only when training: serving never needs Lightning or MLflow.
"""
