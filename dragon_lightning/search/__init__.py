"""Which config to train: k-fold cross-validation (``dragon-lightning cv``) and Optuna hyperparameter
search (``dragon-lightning sweep``), both over a config and every ``fit`` option."""
