"""Training shared by the ML engines: data modules, a Trainer from the settings, MLflow tracking.

Imported only when training: serving never needs Lightning or MLflow.
"""
