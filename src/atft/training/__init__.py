"""Training: panel data module, day-batch sampler, loss, LightningModule, callbacks and ``train(cfg)``."""
