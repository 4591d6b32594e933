"""Pretraining: shards (data), the ELECTRA/MLM objective, and the training recipe."""
