"""The engine: models and optimizers, the step loop, checkpoints, evaluation, the protocol loop."""
