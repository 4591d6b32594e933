"""Fine-tuning: task readers, SQuAD, the training recipe, inference and prediction."""
