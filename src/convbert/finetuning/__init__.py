"""Fine-tuning: configs, task readers and splits, SQuAD, the training recipe, inference, seed aggregation, prediction
and the CLI."""
