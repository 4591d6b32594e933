"""Pretraining: text -> shards (data, inputs, shards), the ELECTRA/MLM objective, its settings and the training loop."""
